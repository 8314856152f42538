"""Sparsity schedules: step (or round) -> target sparsity.

All returned callables are jittable and return a float32 jnp scalar; they
accept a Python int or a traced integer step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune._validate import check_number

Schedule = Callable[[Any], jax.Array]


def _check_step(name: str, value: Any) -> None:
    check_number(name, value, low=0.0)
    if not isinstance(value, int):
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
    in ``[0, 1]`` and ``power > 0``."""
    check_number("final_sparsity", final_sparsity, low=0.0, high=1.0)
    check_number("init_sparsity", init_sparsity, low=0.0, high=1.0)
    check_number("power", power, low=0.0, low_open=True)
    _check_step("begin_step", begin_step)
    _check_step("end_step", end_step)
    if end_step <= begin_step:
        raise ValueError(f"end_step={end_step!r} must be greater than begin_step={begin_step!r}")
    s_f, s_i = float(final_sparsity), float(init_sparsity)

    def schedule(step: Any) -> jax.Array:
        t = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((t - begin_step) / (end_step - begin_step), 0.0, 1.0)
        return jnp.float32(s_f + (s_i - s_f) * (1.0 - progress) ** power)

    return schedule


def constant_schedule(sparsity: float) -> Schedule:
    """The same sparsity at every step (``sparsity`` in ``[0, 1]``)."""
    check_number("sparsity", sparsity, low=0.0, high=1.0)
    value = float(sparsity)
    return lambda step: jnp.full((), value, jnp.float32)


def geometric_density(alpha: float, round: Any) -> Any:
    """Density ``alpha ** round`` after ``round`` rounds of iterative pruning
    (One Shot / SiPP pipelines: ``alpha`` in ``(0, 1]``, ``round >= 0``).

    Python float for Python inputs, float32 jnp scalar for traced ``round``."""
    check_number("alpha", alpha, low=0.0, high=1.0, low_open=True)
    check_number("round", round, low=0.0)
    if isinstance(round, jax.core.Tracer):
        return jnp.float32(alpha) ** jnp.asarray(round, jnp.float32)
    return float(alpha) ** float(round)


def geometric_schedule(alpha: float) -> Schedule:
    """Per-round sparsity ``1 - alpha ** t`` (round ``t`` -> float32 scalar)."""
    check_number("alpha", alpha, low=0.0, high=1.0, low_open=True)
    a = float(alpha)
    return lambda t: 1.0 - jnp.float32(a) ** jnp.asarray(t, jnp.float32)
