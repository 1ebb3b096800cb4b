from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from reidlib.data.sampler import RandomIdentitySampler

# 6 identities, pid p with p + 1 images (pids 0-2 have fewer than K=4), in shuffled order.
PIDS = [p for p in range(6) for _ in range(p + 1)]
PIDS = [PIDS[i] for i in torch.randperm(len(PIDS), generator=torch.Generator().manual_seed(0)).tolist()]


def check_composition(batch: list[int], pids: list[int], p: int, k: int) -> list[int]:
    """Every batch: P runs of K indices, each run one identity, P different identities."""
    assert len(batch) == p * k
    runs = [batch[i:i + k] for i in range(0, len(batch), k)]
    run_pids = []
    for run in runs:
        assert len({pids[i] for i in run}) == 1, f"run {run} mixes identities"
        run_pids.append(pids[run[0]])
    assert len(set(run_pids)) == p, f"identities repeat within a batch: {run_pids}"
    return run_pids


def test_batches_are_p_identities_times_k_images():
    sampler = RandomIdentitySampler(PIDS, batch_p=3, batch_k=4, seed=0)
    batches = sampler.batches()
    assert batches and len(sampler) == len(batches) * 12
    used = Counter()
    for batch in batches:
        check_composition(batch, PIDS, 3, 4)
        used.update(batch)
    # identities with at least K images are drawn without replacement: no image twice in an epoch
    for index, count in used.items():
        if PIDS.count(PIDS[index]) >= 4:
            assert count == 1


def test_identity_with_fewer_than_k_images_is_sampled_with_replacement():
    pids = [0, 1, 1, 1, 1, 2, 2, 2, 2]  # pid 0 has a single image
    sampler = RandomIdentitySampler(pids, batch_p=3, batch_k=4, seed=5)
    (batch,) = sampler.batches()
    assert batch.count(0) == 4  # the only image of pid 0, four times
    assert sorted(batch) == sorted([0] * 4 + list(range(1, 9)))


def test_exact_composition_when_every_identity_fills_whole_chunks():
    # 4 identities x 2K images and P = 4: two batches, each holding every identity once; together every image
    pids = [p for p in range(4) for _ in range(6)]
    sampler = RandomIdentitySampler(pids, batch_p=4, batch_k=3, seed=1)
    batches = sampler.batches()
    assert len(batches) == 2
    for batch in batches:
        assert sorted(check_composition(batch, pids, 4, 3)) == [0, 1, 2, 3]
    assert sorted(batches[0] + batches[1]) == list(range(24))


def test_deterministic_per_seed_and_epoch():
    a = RandomIdentitySampler(PIDS, 2, 2, seed=7)
    b = RandomIdentitySampler(PIDS, 2, 2, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    assert list(a) == first
    assert list(RandomIdentitySampler(PIDS, 2, 2, seed=8)) != first


def test_ranks_get_disjoint_identities_and_the_same_number_of_batches():
    pids = [p for p in range(10) for _ in range(p % 3 + 2)]
    ranks = [RandomIdentitySampler(pids, batch_p=2, batch_k=2, seed=3, num_replicas=2, rank=r)
             for r in (0, 1)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        b0, b1 = ranks[0].batches(), ranks[1].batches()
        assert len(b0) == len(b1) > 0 and len(ranks[0]) == len(ranks[1])
        steps = ranks[0].global_batches(epoch)
        for step, x0, x1 in zip(steps, b0, b1, strict=True):
            ids0 = check_composition(x0, pids, 2, 2)
            ids1 = check_composition(x1, pids, 2, 2)
            assert not set(ids0) & set(ids1)
            assert x0 + x1 == [i for chunk in step for i in chunk]  # the two shards make up the step


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match=r"4 identities x 2 rank\(s\) = 8 .* has 6; lower data\.batch_p"):
        RandomIdentitySampler(PIDS, batch_p=4, batch_k=2, num_replicas=2)
    with pytest.raises(ValueError, match="rank=2"):
        RandomIdentitySampler(PIDS, batch_p=1, batch_k=2, num_replicas=2, rank=2)


def test_dataloader_batches_follow_the_sampler():
    sampler = RandomIdentitySampler(PIDS, batch_p=2, batch_k=3, seed=0)
    loader = DataLoader(list(range(len(PIDS))), batch_size=6, sampler=sampler, drop_last=True)
    assert [b.tolist() for b in loader] == sampler.batches()
    assert len(loader) == len(sampler.batches())
