"""Train one RunConfig from a YAML file; the entry point for multi-GPU jobs:

    torchrun --nproc_per_node=4 -m reidlib.engine run.yaml --runs-dir runs
    python -m reidlib.engine run.yaml               # one process

The YAML holds RunConfig keys (method, model, data, train, seed, tag), e.g. a run folder's config.yaml.
"""

from __future__ import annotations

import argparse
import os
import sys

from reidlib.config import RunConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reidlib.engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="RunConfig YAML file")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--retrain", action="store_true", help="train even if a finished run exists")
    parser.add_argument("--progress", default="auto", choices=["auto", "bars", "lines", "off"])
    args = parser.parse_args(argv)
    from reidlib.engine import train

    run = train(RunConfig.from_yaml(args.config), runs_dir=args.runs_dir, retrain=args.retrain,
                progress=args.progress, device=args.device)
    if os.environ.get("RANK", "0") == "0":
        print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
