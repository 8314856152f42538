"""The AP2/AP3 study (Mozafarinia & Yasaei Sekeh; METHODS.md section 3).

For each trial ``t`` (seed ``config.seed + t``):

1. the ORIGINAL model: train ``config.model`` on ``config.data`` for
   ``config.train.epochs`` epochs, or load a trained classifier from
   ``config.method.pretrained_checkpoint`` (an ``.npz`` written by
   :func:`save_variables`; with ``method.train_from_checkpoint=True`` it is only
   the initialization, e.g. ImageNet-pretrained weights, and the model is then
   trained as in 1.). "Original last layer" = the dense, trained final kernel
   BEFORE pruning (``w`` below); PD compares against this original model;
2. for every method (``lowest`` / ``highest`` / ``random`` magnitude) and
   sparsity: prune ONLY the final dense kernel (the last ``nn.Dense`` called in
   the forward pass, or ``method.layer``) to that sparsity and fine-tune for
   ``method.finetune_train.epochs`` epochs from a fresh optimizer state with the
   mask fixed (``jp.optax.masked_update`` last in the chain: pruned weights stay
   exactly 0). ``method.finetune`` says what trains (:func:`finetune_trainer`):
   ``"pruned_layer"`` (the paper's official code; the study configs' default):
   only the pruned layer's kernel and bias, every other layer frozen, its
   BatchNorm statistics included; ``"all"``: every parameter (METHODS.md
   section 3: "weights of other layers keep training");
3. at epoch 0 (right after pruning) and after every fine-tuning epoch, record
   between ``w`` and the current last layer ``w~``: AP2 ``||w - w~||^2``;
   AP3 Gaussian with isotropic ``S = sigma2 I`` (``= AP2 / (2 sigma2)``); AP3
   Gaussian with the paper's non-diagonal ``S = beta V diag(lambda) V^T`` (one
   seeded matrix per run, the same for both sides, every method, sparsity and
   trial); AP3 Student-t (df 4, ~100 group-mean dimensions, seeded Monte Carlo:
   ``method.t_samples_epoch`` draws per epoch, ``method.t_samples`` at the final
   epoch, the same key everywhere = common random numbers); and PD =
   ``|loss(original) - loss(current)|`` and ``|acc(original) - acc(current)|``
   on the test and train splits.

The non-diagonal AP3 is computed as ``KL(N(L^-1 w, I) || N(L^-1 w~, I))`` with
``L`` the Cholesky factor of ``S`` (KL is invariant under the invertible map
``x -> L^-1 x``): one factorization per run, one triangular solve per epoch.
"""

from __future__ import annotations

import functools
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.linalg import solve_triangular

from jaxprune import masks, measures
from jaxprune._validate import check_choice, check_number
from jaxprune.capture import capture_layers
from jaxprune.pipelines import progress, register, run_summary, setup, write_results
from jaxprune.train import FunctionHook, Trainer, replicated_sharding
from jaxprune.transforms import masked_update, set_mask
from jaxprune.tree import PyTree, apply_mask, fresh_copy, is_none, path_str

METHODS = ("lowest", "highest", "random")
FINETUNE = ("pruned_layer", "all")
RECORD_KEYS = (
    "model", "dataset", "method", "sparsity", "trial", "epoch",
    "ap2", "ap3_gauss", "ap3_gauss_nondiag", "ap3_t",
    "pd_loss_test", "pd_acc_test", "pd_loss_train", "pd_acc_train",
)  # fmt: skip


# ----------------------------------------------------------------------------- the last layer


def head_path(model: nn.Module, variables: Mapping[str, PyTree], input_shape: tuple[int, ...]) -> str:
    """Path (``"Dense_2/kernel"``, :func:`jaxprune.tree.path_str` form, inside
    ``params``) of the final dense kernel: the last ``nn.Dense`` the forward
    pass calls, found by running ``model`` on one zero example."""
    extra = {k: v for k, v in variables.items() if k != "params"}

    def apply_fn(p: PyTree, x: jax.Array) -> jax.Array:
        return model.apply({"params": p, **extra}, x, train=False)

    x = jnp.zeros((1, *input_shape), jnp.float32)
    layers = capture_layers(apply_fn, variables["params"], x, kinds=(nn.Dense,))
    if not layers:
        raise ValueError(
            f"model {type(model).__name__} calls no nn.Dense layer: no last dense layer to prune"
        )
    return list(layers)[-1]


def get_leaf(params: PyTree, path: str) -> jax.Array:
    """The leaf of ``params`` at ``path`` (``/``-joined); ``ValueError`` listing
    the valid 2-D paths if there is none."""
    for p, leaf in jax.tree.leaves_with_path(params, is_leaf=is_none):
        if path_str(p) == path:
            return leaf
    kernels = [path_str(p) for p, x in jax.tree.leaves_with_path(params) if jnp.ndim(x) == 2]
    raise ValueError(f"layer={path!r} is not a leaf of the params; 2-D leaves: {kernels}")


def last_layer_mask(
    params: PyTree, path: str, method: str, sparsity: float, key: jax.Array | None = None
) -> PyTree:
    """A mask with ``params``' structure: ``None`` on every leaf except the one
    at ``path``, where ``round((1 - sparsity) * n)`` entries are kept: the
    largest magnitudes (``"lowest"`` pruned), the smallest (``"highest"``
    pruned) or uniformly random ones (``"random"``, needs ``key``)."""
    check_choice("method", method, METHODS)
    check_number("sparsity", sparsity, low=0.0, high=1.0)
    w = get_leaf(params, path)
    if method == "random":
        if key is None:
            raise ValueError('method="random" needs a key')
        scores = masks.random(key, {"w": w})
    else:
        scores = masks.magnitude({"w": w})
    keep = masks.topk(scores, sparsity, largest=method != "highest")["w"]
    return jax.tree.map_with_path(lambda p, x: keep if path_str(p) == path else None, params, is_leaf=is_none)




# ----------------------------------------------------------------------------- checkpoints


def save_variables(path: str | pathlib.Path, variables: Mapping[str, PyTree]) -> pathlib.Path:
    """Write the model variables (``{"params": ..., "batch_stats": ...}``) to an
    uncompressed ``.npz`` with one array per leaf, keyed ``<collection>/<path>``
    (e.g. ``params/Dense_0/kernel``). This is the ``pretrained_checkpoint``
    format: convert outside weights (e.g. ImageNet-pretrained ResNet50) to it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        f"{name}/{path_str(p)}": np.asarray(x)
        for name, tree in variables.items()
        for p, x in jax.tree.leaves_with_path(tree)
    }
    np.savez(path, **arrays)
    return path


def load_variables(
    path: str | pathlib.Path, template: Mapping[str, PyTree], *, skip_mismatch: bool = False
) -> tuple[dict[str, PyTree], list[str]]:
    """``(variables, skipped)``: ``template``'s collections filled from the
    ``.npz`` at ``path`` (:func:`save_variables` keys). A missing key raises
    ``ValueError``; so does a shape mismatch unless ``skip_mismatch``, which keeps
    the template's leaf (e.g. a fresh head for a new number of classes) and lists
    its key in ``skipped``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained_checkpoint={str(path)!r} is not a file (expected a .npz of variables)")
    skipped: list[str] = []
    with np.load(path, allow_pickle=False) as data:

        def fill(prefix: str, p: tuple, x: jax.Array) -> jax.Array:
            key = f"{prefix}/{path_str(p)}"
            if key not in data:
                raise ValueError(f"pretrained_checkpoint {path} has no array {key!r}")
            value = data[key]
            if value.shape != x.shape:
                if not skip_mismatch:
                    raise ValueError(
                        f"pretrained_checkpoint {path}: {key} has shape {value.shape}, the model needs "
                        f"{x.shape} (set method.skip_mismatch=True to keep the fresh init there)"
                    )
                skipped.append(key)
                return x
            return jnp.asarray(value, x.dtype)

        out = {
            name: jax.tree.map_with_path(functools.partial(fill, name), tree)
            for name, tree in template.items()
        }
    return out, skipped


# ----------------------------------------------------------------------------- measures


@functools.partial(jax.jit, static_argnames=("sigma2", "df", "groups", "num_samples"))
def _latent(w, z, chol, w_cur, key, *, sigma2: float, df: float, groups: int, num_samples: int) -> dict:
    """All AP values of ``w_cur`` against ``w`` in one compiled computation
    (``chol``/``z`` ``None``: no non-diagonal AP3)."""
    out = {
        "ap2": measures.ap2(w, w_cur),
        "ap3_gauss": measures.ap3_gaussian(w, w_cur, cov=sigma2),
        "ap3_t": measures.ap3_student_t(w, w_cur, key=key, df=df, groups=groups, num_samples=num_samples),
    }
    if chol is not None:
        z_cur = solve_triangular(chol, w_cur.reshape(-1).astype(jnp.float32), lower=True)
        out["ap3_gauss_nondiag"] = measures.ap3_gaussian(z, z_cur)
    return out


class LatentMeasures:
    """AP2 / AP3 between a fixed original last layer ``w`` and later versions.

    ``nondiag_cov``: the ``(k, k)`` non-diagonal covariance (``k = w.size``) or
    ``None`` (then ``ap3_gauss_nondiag`` is ``None``). ``sigma2``: the isotropic
    variance; ``t_key``, ``df``, ``groups``: the Student-t estimate's key,
    degrees of freedom and group count. Calling the object on ``w~`` (``w``'s
    shape) returns host floats ``ap2, ap3_gauss, ap3_gauss_nondiag, ap3_t``."""

    def __init__(
        self,
        w: jax.Array,
        *,
        sigma2: float,
        nondiag_cov: jax.Array | None,
        t_key: jax.Array,
        df: float = 4.0,
        groups: int = 100,
    ):
        check_number("sigma2", sigma2, low=0.0, low_open=True)
        self.w = jnp.asarray(w, jnp.float32)
        self.chol = self.z = None
        if nondiag_cov is not None:
            k = self.w.size
            if jnp.shape(nondiag_cov) != (k, k):
                raise ValueError(f"nondiag_cov has shape {jnp.shape(nondiag_cov)}, expected ({k}, {k})")
            self.chol = jnp.linalg.cholesky(jnp.asarray(nondiag_cov, jnp.float32))
            if not bool(jnp.all(jnp.isfinite(self.chol))):
                raise ValueError("nondiag_cov is not symmetric positive definite (Cholesky failed)")
            self.z = solve_triangular(self.chol, self.w.reshape(-1), lower=True)
        self.static = {"sigma2": float(sigma2), "df": float(df), "groups": int(groups)}
        self.t_key = t_key

    def __call__(self, w_cur: jax.Array, *, num_samples: int) -> dict[str, float | None]:
        """AP values of ``w_cur``; ``num_samples``: Monte Carlo draws of AP3 Student-t."""
        if jnp.shape(w_cur) != self.w.shape:
            raise ValueError(f"w_cur has shape {jnp.shape(w_cur)}, expected {self.w.shape}")
        out = _latent(
            self.w, self.z, self.chol, w_cur, self.t_key, num_samples=int(num_samples), **self.static
        )
        out = {k: float(v) for k, v in jax.device_get(out).items()}
        out.setdefault("ap3_gauss_nondiag", None)
        return out


# ----------------------------------------------------------------------------- fine-tuning


def layer_labels(params: PyTree, layer: str) -> PyTree:
    """``"train"`` on the leaves of the module holding ``layer`` (its kernel
    and bias), ``"frozen"`` elsewhere: the ``param_labels`` of
    ``optax.multi_transform`` for ``finetune="pruned_layer"``.

    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
    ...           "Dense_1": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros(1)}}
    >>> layer_labels(params, "Dense_1/kernel")
    {'Dense_0': {'bias': 'frozen', 'kernel': 'frozen'}, 'Dense_1': {'bias': 'train', 'kernel': 'train'}}
    """
    get_leaf(params, layer)  # ValueError listing the 2-D leaves if there is none
    module = layer.rpartition("/")[0]
    owner = lambda p: path_str(p).rpartition("/")[0]
    return jax.tree.map_with_path(lambda p, _: "train" if owner(p) == module else "frozen", params)


class InferenceMode(nn.Module):
    """``inner`` run in inference mode whatever ``train`` says, with ``inner``'s
    own variable paths (``nn.share_scope``): BatchNorm normalizes with, and
    never updates, its running statistics; dropout is off. For fine-tuning one
    layer of a frozen network: the trained layer then sees exactly the features
    it is evaluated on, and a train step leaves ``batch_stats`` bitwise unchanged.

    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x, train=False):
    ...         return nn.BatchNorm(use_running_average=not train)(x)
    >>> model = InferenceMode(Net())
    >>> v = model.init(jax.random.PRNGKey(0), jnp.ones((4, 2)))
    >>> y, upd = model.apply(v, jnp.full((4, 2), 3.0), train=True, mutable=["batch_stats"])
    >>> jax.tree.all(jax.tree.map(jnp.array_equal, upd["batch_stats"], v["batch_stats"]))
    True
    >>> float(y[0, 0])  # running mean 0, variance 1: y = 3 / sqrt(1 + 1e-5)
    3.0
    """

    inner: nn.Module

    def setup(self) -> None:
        nn.share_scope(self, self.inner)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.inner(x, train=False)


def finetune_trainer(
    model: nn.Module,
    dataset: Any,
    cfg: Any,
    params: PyTree,
    layer: str,
    mask: PyTree,
    *,
    mode: str,
    seed: int = 0,
) -> Trainer:
    """The fine-tuning :class:`~jaxprune.train.Trainer`; its chain ends in
    ``masked_update(mask)`` (set the trial's mask with ``set_mask``).

    ``mode="all"``: every parameter trains (the model in training mode, BN
    statistics updated). ``mode="pruned_layer"`` (the official AP2/AP3 code):
    ``optax.multi_transform`` gives the kernel and bias of ``layer``'s module
    the optimizer of ``cfg`` and every other leaf ``optax.set_to_zero()`` (no
    optimizer state; their gradients are never used, so XLA drops that part of
    the backward pass), and the network runs in :class:`InferenceMode`: the
    frozen layers' BatchNorm statistics are used, not updated (bitwise
    unchanged), and dropout is off. ``params``: a params template (structure
    only). ``ValueError`` for another ``mode``."""
    check_choice("config.method.finetune", mode, FINETUNE)
    base = Trainer(model, dataset, cfg, seed=seed, append=[masked_update(mask)])
    if mode == "all":
        return base
    tx = optax.multi_transform({"train": base.tx, "frozen": optax.set_to_zero()}, layer_labels(params, layer))
    return Trainer(InferenceMode(model), dataset, cfg, seed=seed, tx=tx)


# ----------------------------------------------------------------------------- the pipeline


def _check_method(m: Mapping[str, Any], train_keys: Any) -> None:
    methods = tuple(m["methods"])
    if not methods:
        raise ValueError("config.method.methods is empty; expected a subset of " + str(list(METHODS)))
    for name in methods:
        check_choice("config.method.methods[i]", name, METHODS)
    if not tuple(m["sparsities"]):
        raise ValueError("config.method.sparsities is empty; expected fractions in [0, 1]")
    for s in m["sparsities"]:
        check_number("config.method.sparsities[i]", s, low=0.0, high=1.0)
    check_number("config.method.trials", m["trials"], low=1)
    check_number("config.method.trial_offset", m["trial_offset"], low=0)
    check_number("config.method.sigma2", m["sigma2"], low=0.0, low_open=True)
    check_number("config.method.nondiag_beta", m["nondiag_beta"], low=0.0, low_open=True)
    check_number("config.method.nondiag_max_dim", m["nondiag_max_dim"], low=0)
    check_number("config.method.t_df", m["t_df"], low=0.0, low_open=True)
    check_number("config.method.t_groups", m["t_groups"], low=1)
    check_number("config.method.t_samples", m["t_samples"], low=1)
    check_number("config.method.t_samples_epoch", m["t_samples_epoch"], low=1)
    if not isinstance(m["finetune"], str):
        raise ValueError(
            f"config.method.finetune is a {type(m['finetune']).__name__}; expected one of {list(FINETUNE)} "
            "(the config.train overrides of the fine-tuning phase are config.method.finetune_train)"
        )
    check_choice("config.method.finetune", m["finetune"], FINETUNE)
    for key in m["finetune_train"]:
        if key not in train_keys:
            raise ValueError(
                f"config.method.finetune_train.{key} is not a config.train key; valid: {sorted(train_keys)}"
            )
    check_number("config.method.finetune_train.epochs", m["finetune_train"]["epochs"], low=1)
    if m["train_from_checkpoint"] and not m["pretrained_checkpoint"]:
        raise ValueError("config.method.train_from_checkpoint=True needs config.method.pretrained_checkpoint")


def _finetune_cfg(config: Any) -> Any:
    cfg = config.train.copy_and_resolve_references()
    cfg.unlock()
    for key, value in config.method.finetune_train.items():
        cfg[key] = value
    return cfg


def _metrics(trainer: Trainer, state: Any) -> dict[str, float]:
    test, train = trainer.evaluate(state, "test"), trainer.evaluate(state, "train")
    return {"loss_test": test["loss"], "acc_test": test["accuracy"],
            "loss_train": train["loss"], "acc_train": train["accuracy"]}  # fmt: skip


def _finetune(
    ft: Trainer,
    original: Any,
    mask: PyTree,
    layer: str,
    lm: LatentMeasures,
    orig: dict[str, float],
    label: dict[str, Any],
    t_samples: tuple[int, int],
) -> tuple[list[dict], Any]:
    """Prune ``original`` with ``mask`` and fine-tune it with ``ft``; returns one
    record per epoch (0 = right after pruning) and the final state.
    ``t_samples``: Monte Carlo draws of AP3 Student-t at intermediate epochs and
    at the final epoch."""
    params = apply_mask(original.params, mask)
    opt_state = set_mask(ft.tx.init(params), mask)
    state0 = fresh_copy(original.replace(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state))
    records: list[dict] = []

    def record(state: Any, epoch: int) -> None:
        n = t_samples[1] if epoch == ft.epochs else t_samples[0]
        cur = _metrics(ft, state)
        rec = {**label, "epoch": epoch, **lm(get_leaf(state.params, layer), num_samples=n)}
        for split in ("test", "train"):
            rec[f"pd_loss_{split}"] = abs(orig[f"loss_{split}"] - cur[f"loss_{split}"])
            rec[f"pd_acc_{split}"] = abs(orig[f"acc_{split}"] - cur[f"acc_{split}"])
        rec.update(cur, ap3_t_samples=n)
        records.append(rec)

    record(state0, 0)
    ft.hooks = [FunctionHook(epoch_end=lambda trainer, state, epoch, logs: record(state, epoch + 1))]
    ft.seed = int(label["seed"])
    final = ft.fit(state0, progress=False)
    return records, final


def _original(config: Any, trainer: Trainer, seed: int) -> tuple[Any, list[str]]:
    """The trial's trained dense model (see the module docstring) and the
    checkpoint keys kept at their fresh init."""
    m = config.method
    trainer.seed = seed
    state = trainer.init_state(jax.random.PRNGKey(seed))
    skipped: list[str] = []
    if m["pretrained_checkpoint"]:
        template = {
            "params": state.params,
            **({"batch_stats": state.batch_stats} if state.batch_stats else {}),
        }
        loaded, skipped = load_variables(
            m["pretrained_checkpoint"], template, skip_mismatch=m["skip_mismatch"]
        )
        state = state.replace(params=loaded["params"], batch_stats=loaded.get("batch_stats", {}))
        state = jax.device_put(fresh_copy(state), replicated_sharding(trainer.mesh))
    if not m["pretrained_checkpoint"] or m["train_from_checkpoint"]:
        state = trainer.fit(state, progress=progress(config))
    return fresh_copy(state), skipped


@register("ap_study")
def run(config: Any, workdir: str | pathlib.Path) -> dict:
    """Run the study; returns ``{"records": [...], "trials": [...], "layer", "config"}``
    (one record per (trial, method, sparsity, epoch) with :data:`RECORD_KEYS` plus
    the raw metrics and ``ap3_t_samples``) and writes it to ``<workdir>/results.json``.
    Each trial's original model is saved as ``<workdir>/trial_<t>/original.npz``
    (a valid ``pretrained_checkpoint``)."""
    m = config.method
    _check_method(m, config.train.keys())
    root = pathlib.Path(workdir).absolute()
    dataset, model = setup(config)
    if dataset.task != "classification":
        raise ValueError(f"config.data.name={config.data.name!r} is a {dataset.task} task; need a classifier")
    trainer = Trainer(model, dataset, config.train, seed=config.seed)
    template = trainer.init_state()
    variables = {"params": template.params, "batch_stats": template.batch_stats}
    layer = m["layer"] or head_path(model, variables, dataset.input_shape)
    w_shape = tuple(get_leaf(template.params, layer).shape)
    k = int(np.prod(w_shape))
    cov = None
    if k <= int(m["nondiag_max_dim"]):
        key = jax.random.PRNGKey(int(m["nondiag_seed"]))
        cov = measures.nondiagonal_covariance(k, key=key, beta=float(m["nondiag_beta"]))
    # One fine-tuning Trainer: the mask lives in the optimizer state, so the step compiles once.
    tmpl_mask = last_layer_mask(template.params, layer, "lowest", 0.0)
    ft = finetune_trainer(model, dataset, _finetune_cfg(config), template.params, layer, tmpl_mask,
                          mode=m["finetune"], seed=int(config.seed))
    t_samples = (int(m["t_samples_epoch"]), int(m["t_samples"]))
    t_key = jax.random.PRNGKey(int(m["t_seed"]))

    records: list[dict] = []
    trials: list[dict] = []
    first = int(m["trial_offset"])
    for t in range(first, first + int(m["trials"])):
        tic = time.perf_counter()
        seed = int(config.seed) + t
        original, skipped = _original(config, trainer, seed)
        save_variables(
            root / f"trial_{t}" / "original.npz",
            {"params": original.params, "batch_stats": original.batch_stats},
        )
        orig = _metrics(ft, original)
        w0 = get_leaf(original.params, layer)
        lm = LatentMeasures(
            w0,
            sigma2=float(m["sigma2"]),
            nondiag_cov=cov,
            t_key=t_key,
            df=float(m["t_df"]),
            groups=int(m["t_groups"]),
        )
        trials.append({"trial": t, "seed": seed, "original": orig, "skipped_from_checkpoint": skipped})
        print(
            f"[ap_study {config.model.name}/{config.data.name}] trial {t}: original test acc "
            f"{orig['acc_test']:.4f} ({time.perf_counter() - tic:.1f}s)",
            flush=True,
        )
        for mi, method in enumerate(m["methods"]):
            for sparsity in m["sparsities"]:
                tic = time.perf_counter()
                mask_key = jax.random.fold_in(jax.random.PRNGKey(seed), mi)
                mask = last_layer_mask(original.params, layer, method, float(sparsity), mask_key)
                label = {"model": config.model.name, "dataset": config.data.name, "method": method,
                         "sparsity": float(sparsity), "trial": t, "seed": seed,
                         "finetune": m["finetune"]}  # fmt: skip
                recs, _ = _finetune(ft, original, mask, layer, lm, orig, label, t_samples)
                records.extend(recs)
                last = recs[-1]
                print(
                    f"  {method:7s} s={float(sparsity):.2f}: ap2 {last['ap2']:.4g} ap3_t {last['ap3_t']:.4g} "
                    f"pd_loss_test {last['pd_loss_test']:.4g} pd_acc_test {last['pd_acc_test']:.4f} "
                    f"({time.perf_counter() - tic:.1f}s)",
                    flush=True,
                )
    results = {
        "pipeline": "ap_study",
        "layer": layer,
        "layer_shape": list(w_shape),
        "finetune": m["finetune"],
        "original_means": "the dense trained last layer (and model) before pruning, per trial",
        "records": records,
        "trials": trials,
        "config": config.to_dict(),
    }
    results["summary"] = run_summary("ap_study", method=f"AP2/AP3 study of {layer}", finetune=m["finetune"],
                                     records=len(records))
    write_results(root, results)
    return results
