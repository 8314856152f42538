"""Device mesh for data-parallel training: one ``"data"`` axis over every device.

The batch is sharded along its leading axis over ``"data"``; parameters,
optimizer state and batch statistics are replicated. Under ``jit`` with a
sharded batch, every reduction over the batch axis (the loss mean, BatchNorm's
batch mean and variance) is a GLOBAL reduction: XLA inserts the all-reduce.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Environment variables that name a multi-process job (one is enough).
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")
_WORLD_SIZE_ENV = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE")
_TPU_HOSTS_ENV = "TPU_WORKER_HOSTNAMES"  # comma-separated on a multi-host TPU slice


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all hosts).

    The axis type is ``Auto`` on purpose: ``jax.make_mesh`` defaults to
    ``Explicit`` axes in this JAX, which make sharding part of every array's type
    and require sharding-aware code in models and losses. With ``Auto`` the
    models stay plain Flax and XLA propagates the batch sharding (and inserts
    the cross-device reductions) from the ``in_shardings`` of the jitted step.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must contain at least one device, got an empty sequence")
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (params, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def _is_multihost_env() -> bool:
    if any(os.environ.get(k) for k in _MULTIHOST_ENV):
        return True
    if "," in os.environ.get(_TPU_HOSTS_ENV, ""):
        return True
    for key in _WORLD_SIZE_ENV:
        try:
            if int(os.environ.get(key, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def initialize_distributed(force: bool | None = None) -> bool:
    """Call ``jax.distributed.initialize()`` for a multi-host job.

    ``force``: None (default) initializes iff the environment names a
    multi-host job (a coordinator address, a world size > 1 from SLURM / Open
    MPI / torchrun-style variables, or several TPU worker hostnames); True
    always (e.g. on a Cloud TPU pod slice whose VMs set none of these); False
    never. Must run before anything touches a JAX device. Returns whether it
    initialized. ``jax.distributed.initialize`` auto-detects the coordinator,
    process count and process id on SLURM, Open MPI, Kubernetes and Cloud TPU;
    for a hand-rolled cluster set ``JAX_COORDINATOR_ADDRESS`` (host:port of
    process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here and
    passed on, since JAX reads only the first).
    """
    if force is False or (force is None and not _is_multihost_env()):
        return False
    kwargs = {}
    for key, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if os.environ.get(key):
            try:
                kwargs[arg] = int(os.environ[key])
            except ValueError:
                raise ValueError(f"${key}={os.environ[key]!r} is not valid; expected an integer") from None
    jax.distributed.initialize(**kwargs)
    return True


def put_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local numpy batch -> global ``jax.Array`` sharded along the batch axis.

    In a multi-host job each process passes its own slice (B / process_count
    rows); the global batch is their concatenation in process order. The global
    batch size must be divisible by the number of devices in ``mesh``. Entries
    whose key starts with ``_`` are host-side metadata: passed through as they are.
    """
    sharding = batch_sharding(mesh)
    n_dev = mesh.devices.size
    local_dev = max(1, n_dev // jax.process_count())
    out = {}
    for key, value in batch.items():
        if key.startswith("_"):
            out[key] = value
            continue
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] % local_dev:
            raise ValueError(
                f"batch[{key!r}] has leading size {value.shape[:1]}, which must be a positive multiple "
                f"of the {local_dev} local devices of the mesh (choose batch_size divisible by {n_dev})"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


class MeshPrefetcher(Iterator[dict[str, jax.Array]]):
    """Iterate ``batches`` (host-local numpy dicts) as global sharded arrays
    (:func:`put_batch`), transferring up to ``size`` batches ahead in a
    background thread, so that host-to-device copies and host-side loading
    overlap the running step. The step never waits on the host when the host
    produces batches at least as fast as the device consumes them.

    Exceptions of the producer are re-raised at the ``next`` that would have
    returned the failed batch. ``close()`` (also called on exhaustion and by
    ``with``) stops the thread and closes ``batches`` when it has ``close``."""

    _DONE = object()

    def __init__(self, batches: Iterable[dict[str, Any]], mesh: Mesh, *, size: int = 2):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size={size!r} is not valid; expected an integer >= 1")
        self._source = batches
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(batches), mesh), daemon=True)
        self._thread.start()

    def _offer(self, item: Any) -> bool:
        """Queue ``item``, waiting for room unless stopped; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, it: Iterator[dict[str, Any]], mesh: Mesh) -> None:
        try:
            for batch in it:
                if not self._offer(put_batch(batch, mesh)):
                    return
            item = self._DONE
        except BaseException as err:  # handed to the consumer
            item = err
        self._offer(item)

    def __next__(self) -> dict[str, jax.Array]:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is self._DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> MeshPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch_to_mesh(batches: Iterable[dict[str, Any]], mesh: Mesh, *, size: int = 2) -> MeshPrefetcher:
    """``batches`` as global arrays on ``mesh``, ``size`` batches ahead (:class:`MeshPrefetcher`)."""
    return MeshPrefetcher(batches, mesh, size=size)
