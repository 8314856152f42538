"""Test-session set-up: 8 simulated CPU devices (for the sharding tests), the
offline datasets in ../shared/data and one XLA compilation cache for the run.
All must happen before JAX starts."""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The partitionable threefry makes XLA:CPU compile random inits ~4x slower; tests
# need reproducible draws, not any particular stream.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
_SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("JAXPRUNE_DATA_DIR", str(_SHARED_DATA))

# One XLA compilation cache per test run, shared by the pytest-xdist workers (they
# inherit the variable from the controller, which imports this file first): tests
# that compile the same program (a model's train step in several tests, subprocess
# runs) compile it once. ~12% of the suite's time; removed when the run ends.
_OWN_CACHE = "JAXPRUNE_TEST_XLA_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["JAXPRUNE_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxprune-tests-xla-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["JAXPRUNE_TEST_XLA_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("ci", max_examples=30, deadline=None, print_blob=True)
hypothesis.settings.load_profile("ci")


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAXPRUNE_TEST_XLA_CACHE"], ignore_errors=True)
