"""Argument checks shared by the library: each raises ``ValueError`` naming the
argument, the bad value and the valid range. They run at trace time on Python
values; arrays are only inspected when they are concrete (not under ``jit``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
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
    if isinstance(value, str | bytes):  # float("0.5") would pass: a string is never a number here
        raise ValueError(f"{name} must be a number, got the string {value!r}")
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


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    return f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"


def check_finite_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """:func:`check_number`, and the value must also be finite (``check_number``
    admits ``inf`` on an unbounded side). Traced values are not checked."""
    check_number(name, value, low=low, high=high, low_open=low_open, high_open=high_open)
    if not isinstance(value, jax.core.Tracer) and math.isinf(float(value)):
        rng = _range_text(low, high, low_open, high_open or high is None)
        raise ValueError(f"{name}={value!r} must be finite (valid range {rng})")


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> None:
    """A Python/NumPy integer (``bool`` excluded) within ``[low, high]``."""
    rng = _range_text(low, high, False, high is None)
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}={value!r} must be an integer in {rng}, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} is outside the valid range {rng}")


def check_mask_values(name: str, m: Any) -> None:
    """A mask leaf: a bool array, or an integer/float array holding only 0 and 1.

    Other dtypes raise ``TypeError``; a concrete numeric leaf with another value
    (NaN, 0.5, -1, ...) raises ``ValueError`` naming ``name`` (a cast to bool
    would silently keep NaN entries). Traced leaves are not inspected."""
    dtype = np.dtype(m.dtype if hasattr(m, "dtype") else np.asarray(m).dtype)
    if dtype == np.bool_:
        return
    if dtype.kind not in "iuf" and dtype.name != "bfloat16":
        raise TypeError(f"{name} must be a bool (or 0/1 numeric) array, got dtype {dtype}")
    if isinstance(m, jax.core.Tracer):
        return
    a = np.asarray(m).astype(np.float64)
    bad = ~((a == 0) | (a == 1))
    if bad.any():
        raise ValueError(f"{name} has the value {a[bad].flat[0]!r}; mask entries must be bool or 0/1")


def is_concrete(x: Any) -> bool:
    """True unless ``x`` is a tracer (inside ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def check_real_dtype(name: str, x: Any) -> None:
    """``x`` must have a bool, integer or floating dtype (no complex, no objects)."""
    dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
    if dtype.kind not in "biuf" and dtype.name != "bfloat16":
        raise TypeError(f"{name} must be a real (bool, integer or float) array, got dtype {dtype}")


def check_array_range(
    name: str,
    tree: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Every concrete array leaf of ``tree`` is free of NaN/inf and within
    ``[low, high]`` (open ends if asked; no bound: finiteness only). The
    reductions run where the arrays live (one host transfer of a flag per
    leaf, not of the arrays); the message names the leaf and one bad value.
    Traced leaves are skipped (see :func:`check_finite`)."""
    rng = _range_text(low, high, low_open, high_open)

    def ok_flag(x: Any) -> Any:
        on_host = isinstance(x, np.ndarray | np.generic) and x.dtype.kind in "biuf"
        xp = np if on_host or isinstance(x, float | int) else jnp
        x = xp.asarray(x)
        if x.size == 0:
            return True
        ok = xp.all(xp.isfinite(x)) if xp.issubdtype(x.dtype, xp.inexact) else xp.bool_(True)
        if low is not None:
            ok = ok & xp.all(x > low if low_open else x >= low)
        if high is not None:
            ok = ok & xp.all(x < high if high_open else x <= high)
        return ok

    leaves = [
        (path, leaf)
        for path, leaf in jax.tree.leaves_with_path(tree)
        if leaf is not None and not isinstance(leaf, jax.core.Tracer)
    ]
    flags = jax.device_get([ok_flag(leaf) for _, leaf in leaves])
    for (path, leaf), ok in zip(leaves, flags, strict=True):
        if bool(ok):
            continue
        where = jax.tree_util.keystr(path) or "<root>"
        arr = np.asarray(leaf)
        arr = arr.astype(np.float64) if arr.dtype.kind in "biu" or arr.dtype.name == "bfloat16" else arr
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values at {where}")
        bad = np.zeros(arr.shape, bool)
        if low is not None:
            bad |= (arr <= low) if low_open else (arr < low)
        if high is not None:
            bad |= (arr >= high) if high_open else (arr > high)
        value = arr[bad].flat[0].item()
        raise ValueError(f"{name} at {where} has the value {value!r} outside the valid range {rng}")
