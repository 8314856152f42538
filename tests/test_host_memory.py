"""jaxprune.train.host_memory: glibc malloc tuning for XLA:CPU's per-step scratch."""

import ctypes.util
import subprocess
import sys

import pytest

from jaxprune.train.host_memory import MAX_MMAP_THRESHOLD, tune_host_malloc


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": 0}, {"mmap_threshold": MAX_MMAP_THRESHOLD + 1},
                                    {"trim_threshold": 2**31}, {"trim_threshold": 1.5},
                                    {"mmap_threshold": True}])
def test_bad_thresholds_name_the_argument(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        tune_host_malloc(**kwargs)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and ctypes.util.find_library("c")),
                    reason="glibc mallopt")
def test_tuned_process_keeps_the_scratch_mapped():
    """In a fresh process, a step-like cycle (three 2 MB blocks allocated,
    written, freed together) page-faults at every cycle with glibc's defaults
    (the freed top of the heap exceeds the adaptive trim threshold and is
    returned to the system) and not at all once tuned."""
    script = r"""
import ctypes, resource, sys
from jaxprune.train.host_memory import tune_host_malloc
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert tune_host_malloc()
libc.malloc.argtypes = [ctypes.c_size_t]
size = 2 << 20
def cycle():
    blocks = [libc.malloc(size) for _ in range(3)]
    for p in blocks:
        ctypes.memset(p, 1, size)
    for p in blocks:
        libc.free(p)
for _ in range(3):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {mode: int(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("tuned", "default")}
    assert faults["tuned"] < 100 and faults["default"] > 20 * 512, faults  # 20 cycles x 2 MB of 4 KB pages
