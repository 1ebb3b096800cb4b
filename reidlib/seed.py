"""Deterministic seeding and capture/restore of every random stream a training run draws from.

Same seed + same thread count + same device => the same numbers on CPU. On CUDA, bit-exactness also
needs `deterministic=True` (slower cuDNN kernels); the engine leaves that off by default.

RNG states are stored as plain lists/tensors so checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

# NumPy's legacy seed must fit in 32 bits.
_NUMPY_SEED_MOD = 2**32


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch (CPU and every CUDA device).

    deterministic: also ask cuDNN/torch for deterministic kernels (no effect on CPU results, which are
    deterministic already for a fixed thread count).
    """
    random.seed(seed)
    np.random.seed(seed % _NUMPY_SEED_MOD)
    torch.manual_seed(seed)  # also seeds all CUDA devices
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: torch already gives each worker `base_seed + worker_id`; derive
    Python's and NumPy's seeds from it so augmentations using either are reproducible too."""
    worker_seed = torch.initial_seed() % _NUMPY_SEED_MOD
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for a DataLoader (`generator=`): it draws the workers' base seeds, so worker
    randomness does not depend on how much of the global stream the model consumed."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def get_rng_state() -> dict[str, Any]:
    """Every global random stream, as weights_only-loadable values."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` captured (CUDA states only when CUDA is present)."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. a mid-training evaluation) without moving any global random stream, so
    whether and how often a run evaluates cannot change its training trajectory."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


__all__ = ["seed_everything", "seed_worker", "make_generator", "get_rng_state", "set_rng_state",
           "preserved_rng"]
