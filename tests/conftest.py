"""Test-session set-up: 8 simulated CPU devices (for the sharding tests) and
the offline datasets in ../shared/data. Both must happen before JAX starts."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The partitionable threefry makes XLA:CPU compile random inits ~4x slower; tests
# need reproducible draws, not any particular stream.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
_SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("JAXPRUNE_DATA_DIR", str(_SHARED_DATA))

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("ci", max_examples=30, deadline=None, print_blob=True)
hypothesis.settings.load_profile("ci")
