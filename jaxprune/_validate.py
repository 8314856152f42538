"""Argument checks shared by the library: each raises ``ValueError`` naming the
argument, the bad value and the valid range. They run at trace time on Python
values; arrays are only inspected when they are concrete (not under ``jit``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {list(choices)}")


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite Python/NumPy scalar within [low, high] (open ends if asked).

    Traced values (inside ``jit``) are not checked: they cannot be inspected."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    bad = math.isnan(v)
    bad |= low is not None and (v < low or (low_open and v == low))
    bad |= high is not None and (v > high or (high_open and v == high))
    if bad:
        raise ValueError(f"{name}={value!r} is outside the valid range {rng}")


def check_p_q(p: Any, q: Any) -> None:
    """PQ-Index exponents: 0 < p < q."""
    check_number("p", p, low=0.0, low_open=True)
    check_number("q", q, low=0.0, low_open=True)
    if not isinstance(p, jax.core.Tracer) and not isinstance(q, jax.core.Tracer):
        if float(p) >= float(q):
            raise ValueError(f"p={p!r} must be smaller than q={q!r} (valid: 0 < p < q)")


def check_finite(name: str, tree: Any) -> None:
    """Every concrete array leaf of ``tree`` must be free of NaN/inf.

    Skipped for traced leaves (under ``jit``), where a data-dependent error is
    impossible without a host round trip."""
    for path, leaf in jax.tree.leaves_with_path(tree):
        if leaf is None or isinstance(leaf, jax.core.Tracer):
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "<root>"
            raise ValueError(f"{name} contains NaN or infinite values at {where}")
