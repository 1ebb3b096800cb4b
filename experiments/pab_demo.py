"""How the PAB-ReID notebook's demo schedule was chosen: re-measures the numbers quoted in the demo sections
of reidlib/configs/{bpbreid,pab}.yaml and in notebooks/01_pab_reid.ipynb (SynthOcc demo, one run each, seed
0 unless the line says otherwise; runs cached under --out-dir, so a second call only prints).

    python experiments/pab_demo.py [--sections scratch trunk] [--out-dir /tmp/pab_demo]

Each line: the variant, SynthOcc (occluded) mAP / Rank-1 in percent, the mean IoU of the part maps with the
labelled parts (and a fixed template's), the ROC AUC / accuracy of the visibility scores against the truth,
and the run's wall time (training and its final evaluation). MobileNetV2 with ImageNet weights throughout.
"""

from __future__ import annotations

import argparse
from functools import reduce

import torch

from reidlib.config import deep_merge
from reidlib.methods.pab import ABLATIONS
from reidlib.visibility import score_auc
from reidlib.workbook import Workbook

MOBILENET = {"model": {"backbone": "mobilenetv2", "pretrained": "default"}}
WIDE = {"bpbreid": {"dim_reduce": 256}, "pab": {"dim_reduce": 256, "fuser_channels": 256}}  # first tried


def merge(*parts: dict) -> dict:
    return reduce(deep_merge, parts, {})


def schedule(epochs: int, lr: float, milestones: list[int], warmup: int = 1, **train) -> dict:
    return {"train": {"epochs": epochs, "lr": lr, "milestones": milestones, "warmup_epochs": warmup, **train}}


def report(wb: Workbook, label: str, run) -> None:
    m = run.metrics
    line = f"{label:<58} | mAP {100 * m['mAP']:5.1f} | Rank-1 {100 * m['rank1']:5.1f}"
    layout = run.load_model().part_layout()
    if layout is not None and layout.kind == "grouping":
        iou = wb.part_map_iou(run)
        auc = score_auc(wb.score_vs_visibility(run)).loc["all occluded images"]
        line += (f" | IoU {iou['iou'].mean():.2f} (template {iou['template iou'].mean():.2f})"
                 f" | visibility AUC {auc['ROC AUC']:.2f} acc {auc['accuracy (score >= 0.5)']:.2f}")
    print(f"{line} | {m['wall_time_s'] + m['eval_time_s']:4.0f} s", flush=True)


def row(wb: Workbook, method: str, name: str | None, trunk, steps: int | None, lr: float, seed: int = 0,
        model: dict | None = None):
    """`method`'s ablation row `name` (None: the config as is) fine-tuned for `steps` steps (None: one
    epoch) at a constant `lr` from the run `trunk` (None: from ImageNet), with `model` overrides."""
    init = None if trunk is None else f"{trunk.config.method}/{trunk.key}"
    switches = ABLATIONS[name].model if name else {}
    overrides = merge(MOBILENET, schedule(1, lr, [], warmup=0, max_iters_per_epoch=steps),
                      {"model": {**(model or {}), **switches}, "seed": seed, "init_from": init})
    return wb.train(wb.config(method, overrides, tag=name or method))


def scratch_section(wb: Workbook) -> None:
    """BPBreID and PAB-ReID trained from ImageNet with BoT's demo schedule (4 epochs, lr 1e-3)."""
    for method in ("bpbreid", "pab"):
        run = wb.train(wb.config(method, merge(MOBILENET, schedule(4, 1e-3, [3]), {"model": WIDE[method]}),
                                 tag="4 ep"))
        report(wb, f"{method}, 4 ep from ImageNet, lr 1e-3", run)


def trunk_section(wb: Workbook) -> None:
    """BoT's demo run (notebook 00, bot.yaml demo) as a shared trunk, then each row for a few steps."""
    trunk = wb.train(wb.config("bot", tag="trunk"))
    report(wb, "trunk: BoT demo (4 ep)", trunk)
    for steps, lr in ((20, 3.5e-4), (20, 1e-3), (40, 3.5e-4)):
        for method in ("bpbreid", "pab"):
            report(wb, f"{method}, {steps} steps at {lr:g} from the trunk",
                   row(wb, method, None, trunk, steps, lr, model=WIDE[method]))
    for method in ("bpbreid", "pab"):
        report(wb, f"{method}, 40 steps at 3.5e-4 from ImageNet", row(wb, method, None, None, 40, 3.5e-4,
                                                                      model=WIDE[method]))


def heads_section(wb: Workbook) -> None:
    """From the trunk, the new layers (attention, fuser, reductions, heads) at 10x the backbone's rate."""
    trunk = wb.train(wb.config("bot", tag="trunk"))
    for steps in (20, 40):
        for method in ("bpbreid", "pab"):
            fast_heads = {**WIDE[method], "backbone_lr_factor": 0.1}
            report(wb, f"{method}, {steps} steps at 3.5e-3, backbone x0.1, from the trunk",
                   row(wb, method, None, trunk, steps, 3.5e-3, model=fast_heads))


def rows_section(wb: Workbook) -> None:
    """The demo's row protocol (the yaml's demo sections): 30 steps from the trunk, K_1 128 wide."""
    trunk = wb.train(wb.config("bot", tag="trunk"))
    for method in ("bpbreid", "pab"):
        report(wb, f"{method}, demo rows (30 steps from the trunk)", row(wb, method, None, trunk, 30, 3.5e-4,
                                                                         model={"fuser_channels": 128}
                                                                         if method == "pab" else {}))


SECTIONS = {"scratch": scratch_section, "trunk": trunk_section, "heads": heads_section, "rows": rows_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--out-dir", default="/tmp/pab_demo")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wb = Workbook("pab_demo", profile="demo", out_dir=args.out_dir)
    for section in args.sections:
        SECTIONS[section](wb)


if __name__ == "__main__":
    main()
