"""How QPM's demo schedule was chosen: re-measures the numbers quoted in reidlib/configs/qpm.yaml,
reidlib/configs/qpm_ide.yaml and notebook 03's reproduction notes (SynthOcc demo; about 8 minutes on
2 CPU cores, runs cached under --out-dir so a second call only prints).

    python experiments/qpm_demo_schedule.py [--out-dir /tmp/qpm_schedule] [--threads 2]

Each line: the IDE trunk the row starts from (its epochs, or "none" for random init), the row's own
fine-tuning schedule, seed, row, and SynthOcc (occluded) mAP / Rank-1 in percent.
"""

from __future__ import annotations

import argparse

import torch

from reidlib.config import deep_merge
from reidlib.methods.qpm import ABLATIONS
from reidlib.workbook import Workbook

FIVE_EPOCHS = {"train": {"epochs": 5, "warmup_epochs": 1, "milestones": [4]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/tmp/qpm_schedule")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wb = Workbook("qpm_schedule", profile="demo", out_dir=args.out_dir)

    def ide(epochs: int) -> str:
        milestones = [epochs - 2] if epochs > 2 else []
        cfg = wb.config("qpm_ide", {"train": {"epochs": epochs, "milestones": milestones}}, tag="IDE")
        run = wb.train(cfg)
        return f"{run.config.method}/{run.key}"

    def row(name: str, trunk: int | None, overrides: dict | None = None, seed: int = 0, label: str = ""):
        base = {"model": ABLATIONS[name].model, "seed": seed, "init_from": ide(trunk) if trunk else None}
        cfg = wb.config("qpm", deep_merge(base, overrides or {}), tag=name)
        run = wb.train(cfg)
        epochs = cfg.train.epochs
        print(f"IDE {trunk or 'none':>4} | {epochs} ep | seed {seed} | {label or name:<32} | "
              f"mAP {100 * run.metrics['mAP']:5.1f} | Rank-1 {100 * run.metrics['rank1']:5.1f}", flush=True)
        return run

    print("-- the demo profile as committed: a 10-epoch IDE trunk, 2-epoch rows, two seeds")
    for seed in (0, 1):
        for name in ("Baseline", "Part branch (trained alone)", "QPM"):
            row(name, 10, seed=seed)
    print("-- a shorter trunk, and none")
    for name in ("Baseline", "QPM"):
        row(name, 5)
        row(name, None)
    print("-- random erasing from random init (5 epochs, no trunk)")
    for p in (0.5, 0.0):
        row("QPM", None, deep_merge(FIVE_EPOCHS, {"data": {"erasing_p": p}}), label=f"QPM, erasing_p {p}")
    print("-- 5-epoch rows from the 10-epoch trunk: does QPM overtake Part branch with longer training?")
    row("Part branch (trained alone)", 10, FIVE_EPOCHS)
    qpm = row("QPM", 10, FIVE_EPOCHS)
    row("QPM", 10, deep_merge(FIVE_EPOCHS, {"model": {"detach_quality": True}}), label="QPM, detach_quality")
    for gamma in (0.0, 0.6, 1.0):
        metrics = wb.evaluate(qpm, model_overrides={"gamma": gamma})
        print(f"   QPM (5 ep) re-scored with gamma={gamma:.1f}: mAP {100 * metrics['mAP']:5.1f} | "
              f"Rank-1 {100 * metrics['rank1']:5.1f}")
    print("-- is the global branch alone sound? GAP global beside BoT, 5 epochs from random init")
    row("GAP global", None, FIVE_EPOCHS)
    bot = wb.train(wb.config("bot", FIVE_EPOCHS, tag="BoT"))
    print(f"BoT (configs/bot.yaml demo)  | 5 ep | seed 0 | mAP {100 * bot.metrics['mAP']:5.1f} | "
          f"Rank-1 {100 * bot.metrics['rank1']:5.1f}")


if __name__ == "__main__":
    main()
