"""Test helpers for the engine: a tiny method implementing the ReIDMethod contract and a tiny image
data set written to disk (6 training identities, 2 cameras, 32 x 16 pixel images)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reidlib.config import ConfigError, DataConfig, RunConfig, TrainConfig
from reidlib.data.records import Record, ReidDataset
from reidlib.methods import METHODS, Batch, DataInfo, Embedding, ReIDMethod


@dataclass
class TinyConfig:
    width: int = 8
    dim: int = 16
    l2_weight: float = 1e-3
    poison_step: int = 0          # > 0: the `poison_term` loss is NaN from this training step on (1-based)
    poison_term: str = "l2"


class TinyMethod(ReIDMethod):
    """conv-BN-ReLU x 2 -> global average pool -> linear classifier; losses: cross-entropy + a small L2."""

    config_class = TinyConfig
    forward_calls = 0  # counts training forwards across instances (cache-reuse tests)

    def __init__(self, cfg: TinyConfig, info: DataInfo):
        super().__init__(cfg, info)
        self.features = nn.Sequential(
            nn.Conv2d(3, cfg.width, 3, stride=2, padding=1), nn.BatchNorm2d(cfg.width), nn.ReLU(),
            nn.Conv2d(cfg.width, cfg.dim, 3, stride=2, padding=1), nn.BatchNorm2d(cfg.dim), nn.ReLU(),
        )
        self.classifier = nn.Linear(cfg.dim, info.num_classes)
        self.steps = 0

    def _feat(self, images):
        return self.features(images).mean((2, 3))  # [N, D]

    def forward(self, batch: Batch):
        TinyMethod.forward_calls += 1
        self.steps += 1
        feat = self._feat(batch.images)
        return {"feat": feat, "logits": self.classifier(feat)}

    def loss(self, outputs, batch: Batch):
        terms = {"ce": F.cross_entropy(outputs["logits"], batch.pids),
                 "l2": self.cfg.l2_weight * outputs["feat"].pow(2).mean()}
        if self.cfg.poison_step and self.steps >= self.cfg.poison_step:
            terms[self.cfg.poison_term] = terms[self.cfg.poison_term] * float("nan")
        return terms

    @torch.no_grad()
    def embed(self, batch: Batch):
        return Embedding(global_feat=self._feat(batch.images))


class TwoStepMethod(TinyMethod):
    """Uses the `train_step` hook: two optimiser steps per batch (like DPM's two-step update)."""

    step_calls = 0

    def train_step(self, batch, optimizer, scaler, ctx):
        TwoStepMethod.step_calls += 1
        for _ in range(2):
            with ctx.autocast():
                terms = self.loss(ctx.forward(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(terms.values())).backward()
            ctx.clip_grad(optimizer, scaler)
            scaler.step(optimizer)
            scaler.update()
        return terms


class ContractMethod(TinyMethod):
    """Everything the coming papers need from the contract at once: parsing labels in the loss (BPBreID),
    labels in the forward pass (DPM's ArcFace branch), a pass over the training data before training
    (RGANet's memory bank, here a per-identity feature bank) and a two-step update (DPM: first the
    classifier frozen, then everything but the classifier)."""

    needs_masks = True
    seen: dict = {}  # what the hooks received, for the test to read

    def __init__(self, cfg: TinyConfig, info: DataInfo):
        super().__init__(cfg, info)
        self.part_logits = nn.Conv2d(cfg.dim, len(info.part_names) + 1, 1)   # pixel-to-part classifier
        self.register_buffer("bank", torch.zeros(info.num_classes, cfg.dim))
        self.register_buffer("bank_filled", torch.zeros(info.num_classes, dtype=torch.bool))

    def forward(self, batch: Batch):
        out = super().forward(batch)
        margin = F.one_hot(batch.pids, self.info.num_classes) * 0.5           # labels inside forward
        out["logits"] = out["logits"] - margin
        out["part_logits"] = self.part_logits(self.features(batch.images))   # [N, K+1, h, w]
        return out

    def loss(self, outputs, batch: Batch):
        terms = super().loss(outputs, batch)
        target = F.adaptive_avg_pool2d(batch.masks, outputs["part_logits"].shape[-2:]).argmax(1)
        terms["pixel"] = F.cross_entropy(outputs["part_logits"], target)     # parsing labels in the loss
        return terms

    def on_train_start(self, batches):
        count = 0
        for batch in batches:
            self.bank.index_copy_(0, batch.pids, self._feat(batch.images))
            self.bank_filled[batch.pids] = True
            count += len(batch)
        ContractMethod.seen["start_images"] = count
        ContractMethod.seen["start_grad"] = torch.is_grad_enabled()

    def train_step(self, batch, optimizer, scaler, ctx):
        ContractMethod.seen.setdefault("masks_shape", tuple(batch.masks.shape))
        for frozen in (("classifier.",), ("features.", "part_logits.")):
            for name, p in self.named_parameters():
                p.requires_grad_(not name.startswith(frozen))
            with ctx.autocast():
                terms = self.loss(ctx.forward(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(terms.values())).backward()
            scaler.step(optimizer)
            scaler.update()
        for p in self.parameters():
            p.requires_grad_(True)
        return terms


class CameraTableMethod(TinyMethod):
    """A per-camera vector added to the test descriptor, indexed without a fallback: a test camera the
    training split lacks makes `embed` fail (as TransReID's SIE lookup does)."""

    def __init__(self, cfg: TinyConfig, info: DataInfo):
        super().__init__(cfg, info)
        self.cameras = nn.Embedding(info.num_cameras, cfg.dim)

    @torch.no_grad()
    def embed(self, batch: Batch):
        return Embedding(global_feat=self._feat(batch.images) + self.cameras(batch.camids))


class RefusingMethod(TinyMethod):
    """A config that passes the config checks and is rejected when the method is built (as a backbone
    whose pretrained file is missing is)."""

    def __init__(self, cfg: TinyConfig, info: DataInfo):
        raise ConfigError(f"model.width={cfg.width} is refused by the method's constructor")


for _name, _cls in (("tiny", TinyMethod), ("tiny_two_step", TwoStepMethod),
                    ("tiny_contract", ContractMethod), ("tiny_camera_table", CameraTableMethod),
                    ("tiny_refusing", RefusingMethod)):
    if _name not in METHODS:
        METHODS.register(_name)(_cls)


def write_tiny_dataset(root: str | Path, train_ids: int = 6, test_ids: int = 4, seed: int = 0) -> ReidDataset:
    """Identity-coloured noisy images: train ids x 2 cameras x 2 images; query 1 image per test id
    (camera 0), gallery 2 per test id (camera 1)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 255, size=(train_ids + test_ids, 2, 3))

    def image(pid: int, name: str) -> str:
        top, bottom = colours[pid]
        pixels = np.concatenate([np.broadcast_to(top, (16, 16, 3)), np.broadcast_to(bottom, (16, 16, 3))])
        pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        return str(path)

    train = [Record(image(pid, f"train/{pid}_{cam}_{i}.png"), pid, cam)
             for pid in range(train_ids) for cam in range(2) for i in range(2)]
    test_pids = range(train_ids, train_ids + test_ids)
    query = [Record(image(pid, f"query/{pid}.png"), pid, 0) for pid in test_pids]
    gallery = [Record(image(pid, f"gallery/{pid}_{i}.png"), pid, 1) for pid in test_pids for i in range(2)]
    return ReidDataset("tiny", str(root), train, query, gallery)


def kill_mid_write(target: str | Path) -> None:
    """What `kill -9` during a checkpoint write leaves behind: a process SIGKILLed inside the atomic writer,
    half-way through writing `target` (run with this process's import path, so on this checkout)."""
    code = ("import os, signal, sys\n"
            "from reidlib import runs\n"
            "def die(fh):\n"
            "    fh.write(b'half a checkpoint')\n"
            "    fh.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "runs._atomic_write(sys.argv[1], die)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert done.returncode == -signal.SIGKILL, done


def tiny_config(method: str = "tiny", epochs: int = 3, model: dict | None = None, **train) -> RunConfig:
    data = DataConfig(dataset="tiny", height=32, width=16, batch_p=3, batch_k=2, test_batch_size=8,
                      pad=2, erasing_p=0.5)
    schedule = {"optimizer": "sgd", "lr": 0.05, "epochs": epochs, "warmup_epochs": 1, "milestones": [2],
                "log_every": 2, **train}
    return RunConfig(method=method, model=model or {}, data=data, train=TrainConfig(**schedule), seed=3)


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def ddp_worker(rank: int, world_size: int, port: int, runs_dir: str, dataset: ReidDataset,
               out_dir: str) -> None:
    """One process of a gloo DDP job (torch.multiprocessing.spawn target): trains the tiny config and
    saves its final in-memory weights and the files it wrote to `out_dir/rank<r>.pt`."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # two processes share the machine's cores
    from reidlib import runs
    from reidlib.engine import distributed, train

    writes: list[str] = []
    write = runs._atomic_write

    def logged_write(path, writer):
        writes.append(Path(path).name)
        return write(path, writer)

    runs._atomic_write = logged_write
    final: dict = {}
    sync = distributed.sync_buffers

    def capture_after_sync(model, ctx):  # the engine's last collective before rank 0 saves
        sync(model, ctx)
        final.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    distributed.sync_buffers = capture_after_sync
    run = train(tiny_config(epochs=2), runs_dir, dataset=dataset, progress="off", device="cpu")
    torch.save({"state": final, "writes": writes, "key": run.key, "metrics": run.metrics},
               Path(out_dir) / f"rank{rank}.pt")
