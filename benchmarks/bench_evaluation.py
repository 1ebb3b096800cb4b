"""Time reidlib.evaluation.evaluate against a plain numpy argsort and torchreid's evaluation.

An Occluded-Duke-sized problem (2,210 queries x 17,661 gallery images, 8 cameras, about 10 true matches per
query) is built from seeded synthetic features. Timed, in the same run:
  * np.argsort(distmat, axis=1): the floor any evaluation that sorts the gallery cannot beat;
  * reidlib's evaluate (no sort: counts comparisons against the true matches' distances);
  * torchreid 0.2.5's pure-Python eval_market1501 (loaded from its rank.py file);
  * torchreid's Cython evaluate_cy if it is built (the PyPI sdist of 0.2.5 ships no rank_cy.pyx, so normally
    it is not; build torchreid from a source checkout to include it).
argsort and ours alternate for `--repeats` rounds (the machine is shared, so interleaving keeps them
comparable); the medians and their ratios to the argsort are printed, and our result is checked against
torchreid's (CMC and mAP within 1e-6).

Run:  python benchmarks/bench_evaluation.py [--repeats 5] [--torchreid-repeats 1]
Needs torchreid for the comparison: pip install --no-deps torchreid==0.2.5
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

from reidlib.evaluation import evaluate

CYTHON_MODULE = "torchreid.reid.metrics.rank_cylib.rank_cy"


def occluded_duke_like(seed: int = 0, num_query: int = 2210, num_gallery: int = 17661, query_ids: int = 519,
                       gallery_ids: int = 1110, images_per_query_id: int = 12, num_cams: int = 8,
                       dim: int = 64, noise: float = 1.2):
    """Seeded synthetic problem with Occluded-Duke's sizes; returns float32 distmat and the label arrays.
    Query ids get `images_per_query_id` gallery images on random cameras (about 10.5 in another camera than
    the query's), the other gallery images belong to distractor identities."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, query_ids, num_query)
    n_matchable = query_ids * images_per_query_id
    g_pids = np.concatenate([np.repeat(np.arange(query_ids), images_per_query_id),
                             rng.integers(query_ids, gallery_ids, num_gallery - n_matchable)])
    q_camids, g_camids = rng.integers(0, num_cams, num_query), rng.integers(0, num_cams, num_gallery)
    centres = rng.standard_normal((gallery_ids, dim)).astype(np.float32)

    def features(pids):
        return centres[pids] + noise * rng.standard_normal((len(pids), dim)).astype(np.float32)

    q, g = features(q_pids), features(g_pids)
    distmat = (q * q).sum(1)[:, None] + (g * g).sum(1)[None] - 2.0 * q @ g.T  # squared Euclidean [Q, G]
    return distmat.astype(np.float32), q_pids, g_pids, q_camids, g_camids


def load_torchreid_rank():
    """torchreid's rank.py as a module, without importing the torchreid package (its __init__ pulls in
    optional dependencies such as gdown). Returns (module or None, message)."""
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        return None, "torchreid not installed (pip install --no-deps torchreid==0.2.5)"
    path = Path(spec.submodule_search_locations[0]) / "reid" / "metrics" / "rank.py"
    # rank.py first tries the Cython extension, which would import the whole package: block that import.
    with mock.patch.dict(sys.modules, {CYTHON_MODULE: None}), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_spec = importlib.util.spec_from_file_location("_torchreid_rank", path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    return module, f"loaded {path}"


def load_torchreid_cython():
    """torchreid's compiled evaluate_cy, or (None, why not)."""
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        return None, "torchreid not installed"
    cylib = Path(spec.submodule_search_locations[0]) / "reid" / "metrics" / "rank_cylib"
    if not any(cylib.glob("rank_cy*.so")) and not any(cylib.glob("rank_cy*.pyd")):
        return None, (f"not built: no compiled rank_cy in {cylib} (installing torchreid 0.2.5 from PyPI does "
                      "not build it; build torchreid from a source checkout to time it)")
    try:
        return importlib.import_module(CYTHON_MODULE).evaluate_cy, "built"
    except Exception as exc:  # ImportError, or the package's own import-time failures (e.g. missing gdown)
        return None, f"built but not importable ({type(exc).__name__}: {exc})"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of argsort + ours (median reported)")
    parser.add_argument("--torchreid-repeats", type=int, default=1,
                        help="runs of torchreid's Python eval (about 2 minutes each; 0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    distmat, q_pids, g_pids, q_camids, g_camids = occluded_duke_like(args.seed)
    n_pos = ((g_pids[None] == q_pids[:, None]) & (g_camids[None] != q_camids[:, None])).sum(1)
    print(f"problem: {distmat.shape[0]} x {distmat.shape[1]} {distmat.dtype}, true matches per query "
          f"mean {n_pos.mean():.1f} (min {n_pos.min()}, max {n_pos.max()}); numpy {np.__version__}")

    times: dict[str, list[float]] = {"np.argsort": [], "reidlib evaluate": []}
    ours = None
    for _ in range(args.repeats):
        times["np.argsort"].append(timed(lambda: np.argsort(distmat, axis=1))[0])
        elapsed, ours = timed(lambda: evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50))
        times["reidlib evaluate"].append(elapsed)

    rank_module, rank_msg = load_torchreid_rank()
    print(f"torchreid Python eval_market1501: {rank_msg}")
    reference = None
    if rank_module is not None and args.torchreid_repeats > 0:
        key = "torchreid eval_market1501 (Python)"
        times[key] = []
        for _ in range(args.torchreid_repeats):
            elapsed, reference = timed(lambda: rank_module.eval_market1501(
                distmat, q_pids, g_pids, q_camids, g_camids, 50))
            times[key].append(elapsed)
    cython_eval, cython_msg = load_torchreid_cython()
    print(f"torchreid Cython evaluate_cy: {cython_msg}")
    if cython_eval is not None:
        key = "torchreid evaluate_cy (Cython)"
        times[key] = [timed(lambda: cython_eval(distmat, q_pids, g_pids, q_camids, g_camids, 50))[0]
                      for _ in range(args.repeats)]

    floor = statistics.median(times["np.argsort"])
    print(f"\n{'method':<38}{'median s':>10}{'min s':>9}{'x argsort':>11}   runs   (ratio of medians)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<38}{med:>10.3f}{min(ts):>9.3f}{med / floor:>11.2f}   {len(ts)}")
    print(f"\nours: mAP {ours.mAP:.4f}  rank-1 {ours.cmc[0]:.4f}  mINP {ours.mINP:.4f}")
    if reference is not None:
        cmc_ref, map_ref = reference
        cmc_err = float(np.abs(ours.cmc - cmc_ref).max())
        map_err = abs(ours.mAP - float(map_ref))
        verdict = "OK" if max(cmc_err, map_err) <= 1e-6 else "MISMATCH"
        print(f"vs torchreid: max |CMC diff| {cmc_err:.1e}, |mAP diff| {map_err:.1e} -> {verdict}")
        if verdict != "OK":
            sys.exit(1)


if __name__ == "__main__":
    main()
