"""The training engine: models, datasets, a sharded data-parallel step, the
loop with hooks, optimizers/schedules from config, checkpoints and metric
writers. It knows nothing about any pruning method: pipelines hand it optax
transforms, a ``forward_params`` function and hooks. Typical use, with
``config`` from a file in ``jaxprune/configs`` (e.g. ``dense_digits.get_config()``):

    from jaxprune import train
    ds = train.load_dataset("digits")
    trainer = train.Trainer(train.get_model("mlp", ds.num_outputs), ds, config.train, workdir="runs/x")
    state = trainer.fit()
    trainer.evaluate(state, "test")
"""

from jaxprune.train.checkpoint import Checkpointer
from jaxprune.train.data import (
    DATASET_NAMES,
    Dataset,
    Split,
    augment_cifar,
    iterate_batches,
    load_dataset,
    load_streaming_dataset,
    num_batches,
)
from jaxprune.train.host_memory import tune_host_malloc
from jaxprune.train.loop import FunctionHook, Hook, Trainer, TrainingDiverged, evaluate
from jaxprune.train.mesh import (
    batch_sharding,
    initialize_distributed,
    make_mesh,
    prefetch_to_mesh,
    put_batch,
    replicated_sharding,
)
from jaxprune.train.metrics import MetricsWriter, progress_bar, read_metrics
from jaxprune.train.models import MODEL_NAMES, get_model, param_count
from jaxprune.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from jaxprune.train.state import TrainState, create_train_state, make_init_fn
from jaxprune.train.step import (
    TASKS,
    make_carried_train_step,
    make_eval_step,
    make_train_step,
    per_example_loss,
)

__all__ = [
    "DATASET_NAMES",
    "MODEL_NAMES",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
    "Checkpointer",
    "Dataset",
    "FunctionHook",
    "Hook",
    "MetricsWriter",
    "Split",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "augment_cifar",
    "batch_sharding",
    "create_train_state",
    "evaluate",
    "get_model",
    "initialize_distributed",
    "iterate_batches",
    "load_dataset",
    "load_streaming_dataset",
    "make_carried_train_step",
    "make_eval_step",
    "make_init_fn",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "num_batches",
    "param_count",
    "per_example_loss",
    "prefetch_to_mesh",
    "progress_bar",
    "put_batch",
    "read_metrics",
    "replicated_sharding",
    "tune_host_malloc",
]
