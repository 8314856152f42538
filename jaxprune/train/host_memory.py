"""Keep XLA:CPU's per-step scratch memory mapped between steps (glibc malloc).

XLA:CPU allocates each execution's temporary buffers (activations, gradients,
and the scratch of every ``lax.cond`` branch, taken or not) as one block with
``malloc`` and frees it when the step ends. With glibc's adaptive defaults a
block of a few MB is often handed back to the operating system (unmapped, or
trimmed from the top of the heap) and the next step page-faults it back in, so
a step whose scratch is larger pays for it at every execution even where the
extra scratch is never touched: measured on the RigL/SET benchmark (MLP
784-300-100-10, batch 256, one program with the mask update under
``lax.cond``), 11 (RigL) and 82 (SET) page faults per step against 4 for
dense, 0-1 once tuned, and SET's step overhead over dense 1.14-1.20x against
1.11-1.14x tuned (see BENCHMARKS.md, "RigL / SET step overhead"). The engine
does not need it (its sparse-training steps run without the untaken branch)
and does not call it: it is a process-wide setting, for the user's own loop.

:func:`tune_host_malloc` fixes glibc's thresholds (``mallopt``) so freed blocks
up to ``mmap_threshold`` stay in the heap and are reused by the next step. It
is the runtime form of ``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment. The cost is memory: up
to ``trim_threshold`` bytes of freed heap are kept by the process instead of
returned to the system. It changes nothing on GPU/TPU, whose device memory has
its own pooling allocator, and does nothing where the C library has no
``mallopt`` (macOS, musl).
"""

from __future__ import annotations

import ctypes

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest accepted M_MMAP_THRESHOLD on 64-bit systems (32 MiB).
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024


def tune_host_malloc(mmap_threshold: int = MAX_MMAP_THRESHOLD, trim_threshold: int = 1 << 30) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` (bytes; blocks at least this large are
    mmapped and unmapped on free, at most :data:`MAX_MMAP_THRESHOLD`) and
    ``M_TRIM_THRESHOLD`` (bytes of free memory at the top of the heap kept
    before trimming, at most ``2**31 - 1``) for the whole process. Call it
    once, early (before the first compiled step runs). Returns ``True`` if
    both were set, ``False`` where the C library has no ``mallopt``.

    >>> from jaxprune.train.host_memory import tune_host_malloc
    >>> tune_host_malloc(mmap_threshold=0)
    Traceback (most recent call last):
    ...
    ValueError: mmap_threshold must be an int in [1, 33554432] (bytes), got 0
    """
    for name, value, high in (("mmap_threshold", mmap_threshold, MAX_MMAP_THRESHOLD),
                              ("trim_threshold", trim_threshold, 2**31 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ValueError(f"{name} must be an int in [1, {high}] (bytes), got {value!r}")
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_set = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    return mmap_set and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
