"""The spread behind the threshold of tests/test_qpm.py::test_fidelity_quality_scores_drop_on_occluded_parts:
QPM trained for 40 steps on striped people with the bottom parts occluded in half of the images, for seeds
0-9; prints AUC (visible part outscores an occluded one) and the mean score gap per seed (~1 minute).

    python experiments/qpm_fidelity_seeds.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_qpm import fidelity_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [fidelity_run(seed) for seed in range(args.seeds)]
    for seed, (auc, gap) in enumerate(results):
        print(f"seed {seed}: AUC {auc:.3f}  gap {gap:.3f}", flush=True)
    aucs, gaps = zip(*results, strict=True)
    print(f"AUC min {min(aucs):.3f} median {statistics.median(aucs):.3f} max {max(aucs):.3f}; "
          f"gap min {min(gaps):.3f} median {statistics.median(gaps):.3f} max {max(gaps):.3f}")


if __name__ == "__main__":
    main()
