"""One process of a simulated multi-host DPF run (used by
``tests/test_multiprocess.py``; not a test itself).

    python tests/multiprocess_driver.py --process_id 0 --num_processes 2 --devices 4 \\
        --port 12345 --data DIR --workdir DIR --out DIR [--resume] [--kill_at_step K]

Each process gets ``--devices`` simulated CPU devices, joins the job through
``jax.distributed.initialize`` (gloo collectives on CPU) and trains a small MLP
with DPF from the streaming pipeline over the image folder ``--data``. It
records which examples it read (``<out>/read_<process>.json``: per epoch, the
indices of the rows with weight > 0) and process 0 saves the final params
(``<out>/params.npz``). ``--kill_at_step K`` SIGKILLs the process after step K.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--process_id", type=int, required=True)
    p.add_argument("--num_processes", type=int, required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill_at_step", type=int, default=0)
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    import numpy as np

    from jaxprune.configs.dpf_base import study_config
    from jaxprune.pipelines.dpf import train_method
    from jaxprune.train import FunctionHook, load_streaming_dataset

    config = study_config("dpf", 0.5)
    config.model.name, config.model.kwargs.hidden = "mlp", (32, 16)
    config.data.name, config.data.streaming, config.data.val_fraction = "toy", True, 0.0
    t = config.train
    t.epochs, t.batch_size, t.eval_batch_size, t.lr = 3, 16, 16, 0.05
    t.log_every, t.checkpoint_every, t.keep_checkpoints = 2, 2, 3
    config.method.update_every = 2
    config.resume = args.resume
    dataset = load_streaming_dataset(
        "toy", data_dir=args.data, image_size=16, cache_dir=pathlib.Path(args.out) / f"cache{args.process_id}"
    )
    read: dict[int, list[int]] = {}

    class Recording:
        """The train split, recording the examples this process reads."""

        def __init__(self, split):
            self.split = split

        def __len__(self) -> int:
            return len(self.split)

        def batches(self, batch_size, **kw):
            for batch in self.split.batches(batch_size, **kw):
                read.setdefault(kw["epoch"], []).extend(batch["_index"][batch["weight"] > 0].tolist())
                yield batch

    dataset = dataclasses.replace(dataset, train=Recording(dataset.train))

    def kill(trainer, state, metrics):
        if args.kill_at_step and int(state.step) == args.kill_at_step:
            time.sleep(1.0)  # let the asynchronous checkpoint of the previous step finish
            os.kill(os.getpid(), signal.SIGKILL)

    outcome = train_method(config, args.workdir, "dpf", hooks=[FunctionHook(after=kill)], dataset=dataset)
    out = pathlib.Path(args.out)
    (out / f"read_{args.process_id}.json").write_text(json.dumps(read))
    if jax.process_index() == 0:
        flat = jax.tree_util.tree_flatten_with_path(outcome.state.params)[0]
        arrays = {jax.tree_util.keystr(k): np.asarray(v.addressable_data(0)) for k, v in flat}
        np.savez(out / "params.npz", **arrays)
        (out / "record.json").write_text(json.dumps({k: outcome.record[k] for k in ("test_acc", "steps")}))


if __name__ == "__main__":
    main()
