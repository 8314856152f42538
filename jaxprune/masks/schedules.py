"""Sparsity schedules: step (or round) -> target sparsity.

All returned callables are jittable and return a float32 jnp scalar; they
accept a Python int or a traced integer step.

The constructors also accept traced hyperparameters (e.g. built inside
``optax.inject_hyperparams`` under ``jit``, where the factory runs on traced
values): concrete arguments are validated at construction, traced ones cannot
be and are used as they are (``jp.optax.dpf`` checks every value it uses at run
time). A schedule built from concrete, validated arguments stays in ``[0, 1]``
at every step by construction; it carries ``in_unit_interval = True``, which
lets ``dpf`` skip its run-time range check (a host callback that costs ~25% of
a small MLP step on CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxprune._validate import check_number

Schedule = Callable[[Any], jax.Array]


def _traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _as_float(value: Any) -> Any:
    """A Python float, or a float32 scalar for a traced value."""
    return jnp.asarray(value, jnp.float32) if _traced(value) else float(value)


def _mark(schedule: Schedule, *args: Any) -> Schedule:
    """Set ``schedule.in_unit_interval`` when no argument is traced (all validated)."""
    schedule.in_unit_interval = not any(_traced(a) for a in args)
    return schedule


def _check_step(name: str, value: Any) -> None:
    if _traced(value):
        if jnp.ndim(value) != 0 or not jnp.issubdtype(value.dtype, jnp.integer):
            raise TypeError(
                f"{name} must be an integer scalar, got a traced {value.dtype}{list(value.shape)}"
            )
        return
    check_number(name, value, low=0.0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a Python int, got {value!r}")


def polynomial_schedule(
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    init_sparsity: float = 0.0,
    power: float = 3,
) -> Schedule:
    """Zhu & Gupta (2017) gradual pruning, as used by DPF:

        s_t = s_f + (s_i - s_f) * (1 - progress)^power,
        progress = clip((t - begin_step) / (end_step - begin_step), 0, 1),

    so ``s_t = init_sparsity`` for ``t <= begin_step`` and ``final_sparsity``
    for ``t >= end_step``. Requires ``end_step > begin_step >= 0``, sparsities
    in ``[0, 1]`` and ``power > 0`` (``ValueError`` naming the argument
    otherwise; optax itself would silently hold a constant).

    A validated front end to ``optax.polynomial_schedule`` (``init_value =
    init_sparsity``, ``end_value = final_sparsity``, ``transition_begin =
    begin_step``, ``transition_steps = end_step - begin_step``), returning
    float32. With traced step arguments (built under ``jit``, e.g. by
    ``optax.inject_hyperparams``), where optax's Python check of
    ``transition_steps`` cannot run, optax's schedule is evaluated on the
    progress fraction instead (``transition_steps = 1``): the same values.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> schedule = jp.masks.polynomial_schedule(0.9, 0, 100)
    >>> [round(float(schedule(t)), 4) for t in (0, 50, 100, 200)]    # 0.9 (1 - (1 - t/100)^3)
    [0.0, 0.7875, 0.9, 0.9]
    """
    check_number("final_sparsity", final_sparsity, low=0.0, high=1.0)
    check_number("init_sparsity", init_sparsity, low=0.0, high=1.0)
    check_number("power", power, low=0.0, low_open=True)
    _check_step("begin_step", begin_step)
    _check_step("end_step", end_step)
    if not (_traced(begin_step) or _traced(end_step)) and end_step <= begin_step:
        raise ValueError(f"end_step={end_step!r} must be greater than begin_step={begin_step!r}")
    s_f, s_i = _as_float(final_sparsity), _as_float(init_sparsity)
    if _traced(begin_step) or _traced(end_step):
        t0, t1 = (jnp.asarray(x, jnp.float32) for x in (begin_step, end_step))
        base = optax.polynomial_schedule(s_i, s_f, power, transition_steps=1)
        count = lambda step: (jnp.asarray(step, jnp.float32) - t0) / (t1 - t0)
    else:
        base = optax.polynomial_schedule(
            s_i, s_f, power, transition_steps=end_step - begin_step, transition_begin=begin_step
        )
        count = lambda step: jnp.asarray(step)

    def schedule(step: Any) -> jax.Array:
        return jnp.asarray(base(count(step)), jnp.float32)

    return _mark(schedule, final_sparsity, init_sparsity, power, begin_step, end_step)


def constant_schedule(sparsity: float) -> Schedule:
    """The same sparsity at every step (``sparsity`` in ``[0, 1]``).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(float(jp.masks.constant_schedule(0.8)(1000)), 4)
    0.8
    """
    check_number("sparsity", sparsity, low=0.0, high=1.0)
    value = _as_float(sparsity)

    def schedule(step: Any) -> jax.Array:
        return jnp.full((), value, jnp.float32)

    return _mark(schedule, sparsity)


def geometric_density(alpha: float, round: Any) -> Any:
    """Density ``alpha ** round`` after ``round`` rounds of iterative pruning
    (One Shot / SiPP pipelines: ``alpha`` in ``(0, 1]``, ``round >= 0``).

    Python float for Python inputs, float32 jnp scalar for traced ``round``.

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> round(jp.masks.geometric_density(0.8, 2), 4)    # 0.8^2 of the weights left after 2 rounds
    0.64
    """
    check_number("alpha", alpha, low=0.0, high=1.0, low_open=True)
    check_number("round", round, low=0.0)
    if isinstance(round, jax.core.Tracer):
        return jnp.float32(alpha) ** jnp.asarray(round, jnp.float32)
    return float(alpha) ** float(round)


def geometric_schedule(alpha: float) -> Schedule:
    """Per-round sparsity ``1 - alpha ** t`` (round ``t`` -> float32 scalar).

    >>> import jax.numpy as jnp
    >>> import jaxprune as jp
    >>> [round(float(jp.masks.geometric_schedule(0.8)(t)), 4) for t in (0, 1, 2)]   # 1 - 0.8^t
    [0.0, 0.2, 0.36]
    """
    check_number("alpha", alpha, low=0.0, high=1.0, low_open=True)
    a = _as_float(alpha)

    def schedule(t: Any) -> jax.Array:
        return 1.0 - jnp.asarray(a, jnp.float32) ** jnp.asarray(t, jnp.float32)

    return _mark(schedule, alpha)
