"""P x K identity sampling for triplet-style training, deterministic per (seed, epoch), shardable for DDP.

Each batch holds P identities with K images each (torchreid's `RandomIdentitySampler`): an identity's
images are shuffled and cut into chunks of K (a tail shorter than K is dropped; an identity with fewer
than K images is drawn with replacement up to K), then batches repeatedly take P random identities
that still have a chunk, until fewer than P remain.

With `num_replicas` R > 1 every rank builds the same global sequence of batches of P*R identities and
keeps its own P of them: the ranks see disjoint identities within a step and the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    """Yields dataset indices, batch after batch; each batch is P runs of K indices sharing one pid.

    Use with `DataLoader(batch_size=batch_p * batch_k, drop_last=True)` and call `set_epoch(e)` at the
    start of every epoch (as with DistributedSampler): the order depends only on (seed, epoch).
    """

    def __init__(self, pids: Sequence[int], batch_p: int, batch_k: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if batch_p < 1 or batch_k < 1:
            raise ValueError(f"batch_p={batch_p} and batch_k={batch_k} must be at least 1")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must lie in [0, num_replicas={num_replicas})")
        by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            by_pid.setdefault(int(pid), []).append(index)
        needed = batch_p * num_replicas
        if len(by_pid) < needed:
            raise ValueError(
                f"a batch needs {batch_p} identities x {num_replicas} rank(s) = {needed} identities but the "
                f"training split has {len(by_pid)}; lower data.batch_p (or use more identities)")
        self.index_by_pid = {pid: np.asarray(by_pid[pid]) for pid in sorted(by_pid)}
        self.batch_p, self.batch_k, self.seed = batch_p, batch_k, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[np.ndarray]]:
        """Every rank's batches for `epoch`: per step, P*R chunks of K indices (one identity each)."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.batch_k
        chunks: dict[int, list[np.ndarray]] = {}
        for pid, indices in self.index_by_pid.items():
            if len(indices) < k:
                indices = rng.choice(indices, size=k, replace=True)
            else:
                indices = rng.permutation(indices)
            chunks[pid] = [indices[i:i + k] for i in range(0, len(indices) - k + 1, k)]
        available = list(chunks)
        per_step = self.batch_p * self.num_replicas
        steps = []
        while len(available) >= per_step:
            chosen = rng.choice(len(available), size=per_step, replace=False)
            pids = [available[i] for i in chosen]
            steps.append([chunks[pid].pop() for pid in pids])
            available = [pid for pid in available if chunks[pid]]
        return steps

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, each P*K indices (K consecutive per identity)."""
        if self._cache is None or self._cache[0] != self.epoch:
            lo, hi = self.rank * self.batch_p, (self.rank + 1) * self.batch_p
            mine = [np.concatenate(step[lo:hi]).tolist() for step in self.global_batches(self.epoch)]
            self._cache = (self.epoch, mine)
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.batches()) * self.batch_p * self.batch_k


__all__ = ["RandomIdentitySampler"]
