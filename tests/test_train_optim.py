"""Optimizers and lr schedules from config, against closed forms and a NumPy
re-implementation of PyTorch's SGD (coupled weight decay, Nesterov)."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxprune.train import make_optimizer, make_schedule


def cfg(**kw):
    c = ml_collections.ConfigDict(
        dict(
            optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, b1=0.9, b2=0.999, eps=1e-8,
            weight_decay=0.0, clip_norm=0.0, schedule="constant", warmup_epochs=0.0,
            milestones=(0.5, 0.75), lr_decay_factor=0.1, epochs=10,
        )
    )
    c.update(kw)
    return c


def test_cosine_with_warmup_closed_form():
    sched = make_schedule(cfg(schedule="cosine", warmup_epochs=2, epochs=10), steps_per_epoch=5)
    warm, total = 10, 50
    for t in range(total):
        if t < warm:
            want = 0.1 * t / warm
        else:
            want = 0.1 * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        assert float(sched(t)) == pytest.approx(want, rel=1e-5, abs=1e-7), t


def test_multistep_milestones_are_fractions_of_training():
    sched = make_schedule(cfg(schedule="multistep", milestones=(0.5, 0.75), lr_decay_factor=0.2), 10)
    # 100 steps: lr 0.1 before step 50, 0.02 in [50, 75), 0.004 after.
    lrs = np.array([float(sched(t)) for t in range(100)])
    np.testing.assert_allclose(lrs[:50], 0.1, rtol=1e-6)
    np.testing.assert_allclose(lrs[50:75], 0.02, rtol=1e-6)
    np.testing.assert_allclose(lrs[75:], 0.004, rtol=1e-5)
    warm = make_schedule(cfg(schedule="multistep", warmup_epochs=1), 10)
    assert float(warm(5)) == pytest.approx(0.05)
    assert float(warm(49)) == pytest.approx(0.1) and float(warm(50)) == pytest.approx(0.01)


def test_goyal_warmup_from_initial_lr():
    """DPF Table 3 / Goyal et al.: 0.1 -> 0.4 linearly over 5 epochs, then / 10 at epochs 30, 60, 80 of 90."""
    c = cfg(schedule="multistep", lr=0.4, warmup_epochs=5, warmup_init_lr=0.1, epochs=90,
            milestones=(30 / 90, 60 / 90, 80 / 90))
    sched = make_schedule(c, steps_per_epoch=10)
    for t in range(50):
        assert float(sched(t)) == pytest.approx(0.1 + 0.3 * t / 50), t
    want = {50: 0.4, 299: 0.4, 300: 0.04, 599: 0.04, 600: 0.004, 800: 0.0004, 899: 0.0004}
    for t, lr in want.items():
        assert float(sched(t)) == pytest.approx(lr, rel=1e-5), t


def test_constant():
    sched = make_schedule(cfg(lr=0.3), 7)
    assert float(sched(0)) == pytest.approx(0.3) and float(sched(69)) == pytest.approx(0.3)


def _torch_sgd(w, grads, lr, mu, wd, nesterov):
    """PyTorch SGD semantics in NumPy (dampening 0)."""
    buf = None
    for g in grads:
        d = g + wd * w
        buf = d if buf is None else mu * buf + d
        w = w - lr * (d + mu * buf if nesterov else buf)
    return w


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_coupled_weight_decay_matches_pytorch(nesterov):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(4)]
    tx = make_optimizer(cfg(weight_decay=0.01, nesterov=nesterov, momentum=0.9), 1)
    params = jnp.asarray(w)
    state = tx.init(params)
    for g in grads:
        upd, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, upd)
    want = _torch_sgd(w.astype(np.float64), grads, 0.1, 0.9, 0.01, nesterov)
    np.testing.assert_allclose(params, want, rtol=1e-5)


def test_adamw_is_decoupled_and_adam_coupled():
    w = np.array([1.0, -2.0, 0.5], np.float32)
    g = np.array([0.3, 0.1, -0.2], np.float32)
    lr, wd = 0.01, 0.1
    for name in ("adam", "adamw"):
        tx = make_optimizer(cfg(optimizer=name, lr=lr, weight_decay=wd), 1)
        upd, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(w)), jnp.asarray(w))
        # First Adam step: m_hat = d, v_hat = d^2 -> update = -lr * d / (|d| + eps).
        if name == "adam":
            d = g + wd * w
            want = -lr * d / (np.abs(d) + 1e-8)
        else:
            want = -lr * (g / (np.abs(g) + 1e-8) + wd * w)
        np.testing.assert_allclose(upd, want, rtol=1e-5)


def test_global_norm_clipping_and_chain_order():
    g = np.array([3.0, 4.0], np.float32)  # norm 5
    zero_first = optax.GradientTransformation(lambda p: (), lambda u, s, p=None: (u * 0 + 1.0, s))
    tx = make_optimizer(cfg(optimizer="sgd", momentum=0.0, lr=1.0, clip_norm=1.0), 1)
    upd, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros(2)), jnp.zeros(2))
    np.testing.assert_allclose(upd, -g / 5.0, rtol=1e-6)
    # prepend runs before the optimizer (sees raw grads), append after (sees updates).
    tx = make_optimizer(cfg(momentum=0.0, lr=0.5), 1, prepend=[zero_first])
    upd, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros(2)), jnp.zeros(2))
    np.testing.assert_allclose(upd, [-0.5, -0.5])
    tx = make_optimizer(cfg(momentum=0.0, lr=0.5), 1, append=[zero_first])
    upd, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros(2)), jnp.zeros(2))
    np.testing.assert_allclose(upd, [1.0, 1.0])


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"optimizer": "rmsprop"}, r"train\.optimizer='rmsprop'.*'sgd', 'adam', 'adamw'"),
        ({"schedule": "step"}, r"train\.schedule='step'.*'constant', 'cosine', 'multistep'"),
        ({"schedule": "multistep", "milestones": (0.7, 0.2)}, "increasing"),
        ({"schedule": "multistep", "milestones": (1.5,)}, r"milestones.*\(0\.0, 1\.0\)"),
        ({"warmup_epochs": 20}, r"warmup_epochs=20\.0 is outside"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_config_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make_optimizer(cfg(**kw), 10)
