"""Optimizers and learning-rate schedules built from a ``config.train`` section.

Keys read (defaults in ``jaxprune/configs/common.py``): ``optimizer`` (sgd | adam |
adamw), ``lr``, ``momentum``, ``nesterov``, ``b1``, ``b2``, ``eps``,
``weight_decay``, ``clip_norm``, ``schedule`` (constant | cosine | multistep),
``warmup_epochs``, ``warmup_init_lr`` (optional, default 0), ``milestones``
(fractions of training), ``lr_decay_factor``, ``epochs``. Any mapping with
attribute or item access works (ConfigDict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optax

from jaxprune._validate import check_choice, check_number

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "multistep")


def _get(cfg: Any, key: str) -> Any:
    return cfg[key] if isinstance(cfg, Mapping) else getattr(cfg, key)


def _has(cfg: Any, key: str) -> bool:
    return key in cfg if isinstance(cfg, Mapping) else hasattr(cfg, key)


def make_schedule(cfg: Any, steps_per_epoch: int) -> optax.Schedule:
    """Step -> learning rate over ``epochs * steps_per_epoch`` steps.

    A linear warm-up from ``warmup_init_lr`` (0 when the key is absent) to
    ``lr`` over ``warmup_epochs`` epochs (fractional allowed) precedes the
    main schedule: ``constant``; ``cosine`` (from ``lr`` to 0 over the
    remaining steps); ``multistep`` (``lr`` times
    ``lr_decay_factor`` at every milestone, milestones given as fractions of
    ALL training steps, e.g. ``(0.5, 0.75)``)."""
    check_number("steps_per_epoch", steps_per_epoch, low=1)
    name = _get(cfg, "schedule")
    check_choice("train.schedule", name, SCHEDULES)
    lr, epochs = float(_get(cfg, "lr")), _get(cfg, "epochs")
    check_number("train.lr", lr, low=0.0)
    check_number("train.epochs", epochs, low=1)
    warmup_epochs = float(_get(cfg, "warmup_epochs"))
    check_number("train.warmup_epochs", warmup_epochs, low=0.0, high=float(epochs))
    total = int(epochs) * int(steps_per_epoch)
    warmup = round(warmup_epochs * steps_per_epoch)

    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=max(total - warmup, 1))
    else:
        milestones: Sequence[float] = tuple(_get(cfg, "milestones"))
        factor = float(_get(cfg, "lr_decay_factor"))
        check_number("train.lr_decay_factor", factor, low=0.0, high=1.0, low_open=True)
        for m in milestones:
            check_number("train.milestones[i]", m, low=0.0, high=1.0, low_open=True, high_open=True)
        if list(milestones) != sorted(milestones):
            raise ValueError(f"train.milestones={list(milestones)} must be increasing fractions in (0, 1)")
        # Boundaries count from the end of warm-up (join_schedules restarts the step).
        boundaries: dict[int, float] = {}
        for m in milestones:
            b = max(round(m * total) - warmup, 1)
            boundaries[b] = boundaries.get(b, 1.0) * factor
        main = optax.piecewise_constant_schedule(lr, boundaries)
    if warmup == 0:
        return main
    init = float(_get(cfg, "warmup_init_lr")) if _has(cfg, "warmup_init_lr") else 0.0
    check_number("train.warmup_init_lr", init, low=0.0)
    return optax.join_schedules([optax.linear_schedule(init, lr, warmup), main], [warmup])


def make_optimizer(
    cfg: Any,
    steps_per_epoch: int,
    *,
    prepend: Sequence[optax.GradientTransformation] = (),
    append: Sequence[optax.GradientTransformation] = (),
) -> optax.GradientTransformation:
    """The chain ``prepend -> clip_by_global_norm -> weight decay -> optimizer -> append``.

    ``prepend`` sees the raw gradients (e.g. DPF's mask bookkeeping); ``append``
    sees the final updates (e.g. ``masked_update``, which then zeroes pruned
    coordinates AFTER momentum and decay, so they stay exactly 0). Clipping is by
    global norm when ``clip_norm > 0``. Weight decay is coupled (L2 added to
    the gradient before the optimizer, as PyTorch ``SGD``/``Adam``) for sgd and
    adam, decoupled for adamw (``optax.adamw``)."""
    name = _get(cfg, "optimizer")
    check_choice("train.optimizer", name, OPTIMIZERS)
    wd, clip = float(_get(cfg, "weight_decay")), float(_get(cfg, "clip_norm"))
    check_number("train.weight_decay", wd, low=0.0)
    check_number("train.clip_norm", clip, low=0.0)
    lr = make_schedule(cfg, steps_per_epoch)

    parts = list(prepend)
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    if name == "sgd":
        momentum = float(_get(cfg, "momentum"))
        check_number("train.momentum", momentum, low=0.0, high=1.0, high_open=True)
        if wd > 0:
            parts.append(optax.add_decayed_weights(wd))
        parts.append(optax.sgd(lr, momentum=momentum or None, nesterov=bool(_get(cfg, "nesterov"))))
    else:
        b1, b2, eps = float(_get(cfg, "b1")), float(_get(cfg, "b2")), float(_get(cfg, "eps"))
        if name == "adam":
            if wd > 0:
                parts.append(optax.add_decayed_weights(wd))
            parts.append(optax.adam(lr, b1=b1, b2=b2, eps=eps))
        else:
            parts.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd))
    parts.extend(append)
    return optax.chain(*parts)
