"""A real multi-process run, simulated on this machine: 2 processes x 4 CPU
devices (``jax.distributed`` with gloo collectives) train DPF from the
streaming pipeline, are SIGKILLed mid-run, resume, and must end with the
params of a 1-process x 8-device run on the same global batches."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.image_folder import make_image_folder

DRIVER = pathlib.Path(__file__).with_name("multiprocess_driver.py")
ROOT = DRIVER.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(n: int, devices: int, data, workdir, out, *extra) -> list[subprocess.Popen]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = str(ROOT)
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(DRIVER),
                f"--process_id={i}",
                f"--num_processes={n}",
                f"--devices={devices}",
                f"--port={port}",
                f"--data={data}",
                f"--workdir={workdir}",
                f"--out={out}",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(n)
    ]


def _wait(procs, timeout=400) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.communicate()[0].decode()[-4000:]) for p in procs]


@pytest.mark.slow
def test_two_processes_equal_one_process_and_resume_after_sigkill(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=3, train=16, val=4)
    single, multi = tmp_path / "single", tmp_path / "multi"
    for d in (single, multi):
        d.mkdir()
    # The reference (1 x 8) and the 2 x 4 run that is killed after step 5 (checkpoint at step 4).
    ref = _launch(1, 8, data, single / "work", single)
    victims = _launch(2, 4, data, multi / "work", multi, "--kill_at_step=5")
    killed = _wait(victims)
    assert all(code == -9 for code, _ in killed), killed
    assert not (multi / "params.npz").exists()
    resumed = _wait(_launch(2, 4, data, multi / "work", multi, "--resume"))
    assert all(code == 0 for code, _ in resumed), resumed
    ((code, log),) = _wait(ref)
    assert code == 0, log

    # Disjoint data: per epoch, the two processes read disjoint examples that together
    # are the whole training set (48 images, 3 steps of 16). Epochs 0 and 1 were (partly)
    # read before the kill; the resumed processes read epoch 1 from its 3rd batch (step 5 ->
    # checkpoint 4 = epoch 1, batch 1) and epoch 2 whole.
    reads = [json.loads((multi / f"read_{i}.json").read_text()) for i in range(2)]
    a, b = set(reads[0]["2"]), set(reads[1]["2"])
    assert not a & b and a | b == set(range(48)) and len(reads[0]["2"]) == 24
    assert set(reads[0]) == set(reads[1]) == {"1", "2"}
    assert len(reads[0]["1"]) == len(reads[1]["1"]) == 8 * 2  # batches 1 and 2 of epoch 1 after the resume

    # Same global batches -> the same params (to float tolerance: the all-reduce differs).
    want, got = np.load(single / "params.npz"), np.load(multi / "params.npz")
    assert sorted(want.files) == sorted(got.files)
    for key in want.files:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6, err_msg=key)
    assert json.loads((multi / "record.json").read_text())["steps"] == 9
    # Only process 0 wrote the metric log: one epoch row per epoch, no duplicates.
    rows = [
        json.loads(line) for line in (multi / "work" / "train" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if r["split"] == "epoch"] == [3, 6, 9]
