"""DistributedDataParallel on CPU: two gloo processes run the same `train` code as a torchrun job."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from tiny_method import ddp_worker, state_dicts_equal, write_tiny_dataset

from reidlib import runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_train_identical_weights_and_rank0_writes_the_run(tmp_path):
    dataset = write_tiny_dataset(tmp_path / "data")  # 6 identities: one P=3 share per rank and step
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    mp.spawn(ddp_worker, args=(2, free_port(), str(runs_dir), dataset, str(out)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    assert state_dicts_equal(rank0["state"], rank1["state"])  # parameters and BatchNorm buffers
    path = runs.run_dir(runs_dir, "tiny", rank0["key"])
    saved = torch.load(path / "model.pt", weights_only=True)["state_dict"]
    assert state_dicts_equal(saved, rank0["state"])

    assert rank1["writes"] == []  # the run folder is written by rank 0 only
    assert {"config.yaml", "manifest.json", "last.pt", "history.jsonl", "model.pt", "metrics.json"} <= set(
        rank0["writes"])
    assert rank0["key"] == rank1["key"] and rank0["metrics"] == rank1["metrics"]  # rank 0's, broadcast
    assert rank0["metrics"]["finished"] and runs.read_json(path / "manifest.json")["world_size"] == 2
    # Sharded sampler: 12 chunks of K=2 per epoch, 2 ranks x P=3 per step -> 2 steps per epoch.
    assert rank0["metrics"]["iterations"] == 4
    epochs = [r for r in runs.read_jsonl(path / "history.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
