"""reidlib.evaluation: hand-computed CMC/mAP/mINP, the stable tie rule, agreement with a literal per-query
reference (always) and with torchreid's eval_market1501 (when torchreid is installed), input handling."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from reidlib.evaluation import evaluate, rank_list

# ---------------------------------------------------------------------------------------------------------
# References


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """A literal loop with torchreid's eval_market1501 semantics, except that the sort is stable (equal
    distances keep gallery index order) and a gallery list shorter than the curve counts as matched past
    its end. Returns (cmc, mAP, mINP)."""
    cmc_len = min(max_rank, distmat.shape[1])
    curves, aps, inps = [], [], []
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        junk = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        hits = (g_pids[order] == q_pids[q])[~junk]  # true-match flags down the ranking
        if not hits.any():
            continue
        found = np.minimum(np.cumsum(hits), 1)
        curve = np.ones(cmc_len)
        curve[:min(cmc_len, len(found))] = found[:cmc_len]
        curves.append(curve)
        at = np.flatnonzero(hits)  # 0-based ranks of the matches
        aps.append(np.mean(np.arange(1, len(at) + 1) / (at + 1)))
        inps.append(len(at) / (at[-1] + 1))
    return np.mean(curves, 0), float(np.mean(aps)), float(np.mean(inps))


def torchreid_eval_market1501():
    """torchreid 0.2.5's pure-Python eval_market1501, loaded from its file so torchreid's package __init__
    (and its optional dependencies) is not imported; skips the test when torchreid is not installed."""
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchreid not installed (pip install --no-deps torchreid==0.2.5)")
    path = Path(spec.submodule_search_locations[0]) / "reid" / "metrics" / "rank.py"
    if not path.is_file():
        pytest.skip(f"unexpected torchreid layout: no {path}")
    # rank.py first tries its Cython extension, which would import the whole package: block that import.
    with mock.patch.dict(sys.modules, {"torchreid.reid.metrics.rank_cylib.rank_cy": None}), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_spec = importlib.util.spec_from_file_location("_torchreid_rank", path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    return module.eval_market1501


def random_problem(seed, num_q=25, num_g=60, num_ids=8, num_cams=3, levels=None):
    """Random labels (so some queries have only same-camera matches or none) and distances; `levels`
    quantises distances to that many values, which makes ties of every kind frequent."""
    rng = np.random.default_rng(seed)
    d = rng.random((num_q, num_g))
    if levels:
        d = np.floor(d * levels) / levels
    return (d, rng.integers(0, num_ids + 2, num_q), rng.integers(0, num_ids, num_g),
            rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g))


def assert_matches_reference(args, max_rank=50, **kw):
    got = evaluate(*args, max_rank=max_rank, **kw)
    cmc, mAP, mINP = reference_eval(*args, max_rank=max_rank)
    np.testing.assert_allclose(got.cmc, cmc, atol=1e-12)
    assert got.mAP == pytest.approx(mAP, abs=1e-12)
    assert got.mINP == pytest.approx(mINP, abs=1e-12)
    return got


# ---------------------------------------------------------------------------------------------------------
# Hand-computed values

# Gallery: index 0..4 with (pid, camera).
G_PIDS = np.array([1, 2, 1, 1, 3])
G_CAMS = np.array([1, 1, 0, 2, 1])
# Query 0: pid 1, cam 0. Gallery 2 (pid 1, cam 0) is junk. Distances rank it:
#   g2 (junk, removed), g1 0.1 (no), g4 0.2 (no), g0 0.3 (MATCH, rank 3), g3 0.5 (MATCH, rank 4)
#   AP = (1/3 + 2/4) / 2 = 5/12; INP = 2 matches / rank 4 of the hardest = 1/2; first match at rank 3.
# Query 1: pid 2, cam 0: g2 0.1 (no), g1 0.2 (MATCH, rank 2), ... -> AP = 1/2, INP = 1/2, first at rank 2.
# Query 2: pid 3, cam 1: its only gallery image g4 is in its own camera -> junk -> skipped.
# Query 3: pid 9: not in the gallery -> skipped.
Q_PIDS = np.array([1, 2, 3, 9])
Q_CAMS = np.array([0, 0, 1, 0])
DIST = np.array([
    [0.3, 0.1, 0.05, 0.5, 0.2],
    [0.4, 0.2, 0.1, 0.3, 0.6],
    [0.1, 0.2, 0.3, 0.4, 0.5],
    [0.1, 0.2, 0.3, 0.4, 0.5],
])


def test_hand_computed_cmc_map_minp():
    r = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    np.testing.assert_allclose(r.cmc, [0.0, 0.5, 1.0, 1.0, 1.0])  # truncated to the 5 gallery items
    assert r.mAP == pytest.approx((5 / 12 + 1 / 2) / 2)  # = 11/24
    assert r.mINP == pytest.approx(0.5)
    assert r.first_match_rank.tolist() == [2, 1, -1, -1]
    assert r.valid_queries.tolist() == [True, True, False, False]
    assert r.num_valid_queries == 2
    np.testing.assert_allclose(r.average_precision, [5 / 12, 1 / 2, np.nan, np.nan])
    assert r.as_dict() == pytest.approx({"mAP": 11 / 24, "rank1": 0.0, "rank3": 1.0, "rank5": 1.0,
                                         "rank10": 1.0, "mINP": 0.5})
    r3 = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=3)
    np.testing.assert_allclose(r3.cmc, [0.0, 0.5, 1.0])
    assert r3.mAP == r.mAP  # max_rank only cuts the curve


def test_ties_keep_gallery_order():
    # Query pid 1, cam 0. Gallery: g0 no 0.2, g1 MATCH 0.2, g2 no 0.2, g3 MATCH 0.1.
    # Stable order: g3 (rank 1), then the tie at 0.2 in index order g0, g1 (rank 3), g2.
    # AP = (1/1 + 2/3) / 2 = 5/6; INP = 2/3; rank-1 hit.
    d, g_pids, g_cams = np.array([[0.2, 0.2, 0.2, 0.1]]), np.array([5, 1, 6, 1]), np.array([1, 1, 1, 2])
    r = evaluate(d, np.array([1]), g_pids, np.array([0]), g_cams)
    assert r.mAP == pytest.approx(5 / 6)
    assert r.mINP == pytest.approx(2 / 3)
    np.testing.assert_allclose(r.cmc, [1, 1, 1, 1])
    # Swapping g0 and g1 puts the tied match before both non-matches: ranks 1 and 2, AP = INP = 1.
    swap = [1, 0, 2, 3]
    r_swap = evaluate(d[:, swap], np.array([1]), g_pids[swap], np.array([0]), g_cams[swap])
    assert r_swap.mAP == pytest.approx(1.0)
    assert r_swap.mINP == pytest.approx(1.0)


def test_junk_tied_with_a_match_does_not_count():
    # g0 is junk (same pid and camera) tied with the match g1 and placed before it: removed, so g1 is rank 1.
    r = evaluate(np.array([[0.5, 0.5, 0.5]]), np.array([1]), np.array([1, 1, 2]), np.array([0]),
                 np.array([0, 1, 1]))
    assert r.first_match_rank.tolist() == [0]
    assert r.mAP == 1.0


# ---------------------------------------------------------------------------------------------------------
# Agreement with the literal reference (always runs)


@pytest.mark.parametrize("seed", range(6))
def test_random_problems_match_reference(seed):
    args = random_problem(seed)
    got = assert_matches_reference(args)
    # chunks of one query and K split into single thresholds give the identical result
    tiny = evaluate(*args, chunk_bytes=1)
    np.testing.assert_array_equal(tiny.first_match_rank, got.first_match_rank)
    np.testing.assert_array_equal(tiny.average_precision, got.average_precision)


@pytest.mark.parametrize("seed", range(6))
def test_heavy_ties_match_stable_reference(seed):
    assert_matches_reference(random_problem(seed, levels=4), chunk_bytes=64 if seed % 2 else 2**20)


@pytest.mark.parametrize("max_rank", [1, 7, 50])
def test_short_gallery_and_infinite_distances(max_rank):
    d, q_pids, g_pids, q_cams, g_cams = random_problem(11, num_q=12, num_g=9, num_ids=3)
    d[:, ::3] = np.inf  # impossible pairs rank last, tied with each other
    got = assert_matches_reference((d, q_pids, g_pids, q_cams, g_cams), max_rank=max_rank)
    assert len(got.cmc) == min(max_rank, 9)


def test_distractors_and_float32():
    d, q_pids, g_pids, q_cams, g_cams = random_problem(3, num_q=20, num_g=80, num_ids=5)
    g_pids[::4] = -1  # distractor / background images: never anyone's match
    assert_matches_reference((d.astype(np.float32), q_pids, g_pids, q_cams, g_cams))


# ---------------------------------------------------------------------------------------------------------
# Agreement with torchreid (skipped when it is not installed)


def order_independent_ties(seed, num_q=20, num_g=70):
    """Ties that every sort order resolves alike: matches take odd values, everything else even values,
    so a tie never joins a match with a non-match (junk may tie with anything: it is removed)."""
    d, q_pids, g_pids, q_cams, g_cams = random_problem(seed, num_q, num_g, num_ids=6)
    levels = np.random.default_rng(seed).integers(0, 5, d.shape)
    same_pid = g_pids[None, :] == q_pids[:, None]
    return 2.0 * levels + same_pid, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("case", ["random", "ties", "float32_distractors", "short_gallery"])
def test_agrees_with_torchreid(case, capsys):
    eval_market1501 = torchreid_eval_market1501()
    if case == "random":
        args = random_problem(21, num_q=40, num_g=120)
    elif case == "ties":
        args = order_independent_ties(22)
    elif case == "float32_distractors":
        d, q_pids, g_pids, q_cams, g_cams = random_problem(23, num_q=30, num_g=90)
        g_pids[::5] = -1
        args = (d.astype(np.float32), q_pids, g_pids, q_cams, g_cams)
    else:  # 12 gallery items < max_rank; no junk, so torchreid's per-query lists are equally long
        d, q_pids, g_pids, q_cams, g_cams = random_problem(24, num_q=15, num_g=12, num_ids=4)
        q_cams, g_cams = np.zeros_like(q_cams), np.ones_like(g_cams)
        args = (d, q_pids, g_pids, q_cams, g_cams)
    cmc_ref, map_ref = eval_market1501(*args, 50)
    got = evaluate(*args, max_rank=50)
    assert got.cmc.shape == cmc_ref.shape
    np.testing.assert_allclose(got.cmc, cmc_ref, atol=1e-6)
    assert got.mAP == pytest.approx(float(map_ref), abs=1e-6)


def test_torchreid_skips_same_camera_only_queries_like_us():
    eval_market1501 = torchreid_eval_market1501()
    # max_rank 4: query 0 keeps 4 gallery items, query 1 keeps 5; with a longer curve torchreid's
    # per-query curves are ragged and it fails (see evaluate's docstring).
    cmc_ref, map_ref = eval_market1501(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, 4)
    r = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=4)
    np.testing.assert_allclose(r.cmc, cmc_ref, atol=1e-6)
    assert r.mAP == pytest.approx(float(map_ref), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Inputs, errors, helpers


def test_torch_tensors_and_lists_give_the_same_result():
    args = random_problem(5)
    expected = evaluate(*args)
    as_torch = evaluate(*(torch.from_numpy(a) for a in args))
    as_lists = evaluate(args[0].tolist(), *(a.tolist() for a in args[1:]))
    for got in (as_torch, as_lists):
        np.testing.assert_array_equal(got.cmc, expected.cmc)
        assert (got.mAP, got.mINP) == (expected.mAP, expected.mINP)


def test_integer_distances():
    d, *labels = random_problem(8, levels=6)
    assert_matches_reference(((d * 6).astype(np.int64), *labels))


def test_rank_k_beyond_max_rank_uses_per_query_ranks():
    args = random_problem(9, num_g=60)
    r = evaluate(*args, max_rank=3)
    full = evaluate(*args, max_rank=60)
    assert r.rank(10) == pytest.approx(full.cmc[9])
    assert r.rank(1) == pytest.approx(r.cmc[0])


@pytest.mark.parametrize("bad, message", [
    (dict(distmat=np.full((4, 5), np.nan)), "NaN .*query 0, gallery 0"),
    (dict(distmat=DIST[0]), "2-D"),
    (dict(g_pids=G_PIDS[:4]), "g_pids must be a 1-D array with one entry per distmat column \\(5\\)"),
    (dict(q_camids=np.zeros((4, 1))), "q_camids must be a 1-D array"),
    (dict(q_pids=np.array([7, 7, 7, 7])), "no query has a true match"),
    (dict(max_rank=0), "max_rank must be a positive integer"),
])
def test_bad_input_is_explained(bad, message):
    kwargs = dict(distmat=DIST, q_pids=Q_PIDS, g_pids=G_PIDS, q_camids=Q_CAMS, g_camids=G_CAMS) | bad
    with pytest.raises(ValueError, match=message):
        evaluate(**kwargs)


def test_rank_list_follows_evaluate_order():
    lst = rank_list(DIST, 0, top=3, q_pids=Q_PIDS, g_pids=G_PIDS, q_camids=Q_CAMS, g_camids=G_CAMS)
    assert lst.gallery_indices.tolist() == [1, 4, 0]  # junk g2 (the nearest) is left out
    assert lst.matches.tolist() == [False, False, True]
    np.testing.assert_allclose(lst.distances, [0.1, 0.2, 0.3])
    no_cams = rank_list(torch.from_numpy(DIST), 0, top=2, q_pids=Q_PIDS, g_pids=G_PIDS)
    assert no_cams.gallery_indices.tolist() == [2, 1] and no_cams.matches.tolist() == [True, False]

    args = random_problem(4, levels=3)
    r = evaluate(*args)
    for q in np.flatnonzero(r.valid_queries):
        lst = rank_list(args[0], q, top=args[0].shape[1], q_pids=args[1], g_pids=args[2],
                        q_camids=args[3], g_camids=args[4])
        assert np.argmax(lst.matches) == r.first_match_rank[q]
