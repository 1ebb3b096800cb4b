"""How the PAB-ReID notebook's demo schedule was chosen: re-measures the numbers quoted in the demo sections
of reidlib/configs/{bpbreid,pab}.yaml and in notebooks/01_pab_reid.ipynb (SynthOcc demo, one run each, seed
0 unless the line says otherwise; runs cached under --out-dir, default /tmp/pab_demo, so a second call
only prints).

    python experiments/pab_demo.py [--sections cells rows tables trunk ...] [--out-dir DIR]

Each line: the variant, SynthOcc (occluded) mAP / Rank-1 in percent, the mean IoU of the part maps with the
labelled parts at the maps' resolution (and a fixed template's; reidlib.visibility.part_map_iou), the ROC
AUC / accuracy of the visibility scores against the truth, and the run's wall time (training and its final
evaluation). MobileNetV2 with ImageNet weights throughout; "the trunk" is notebook 00's BoT demo run.
"""

from __future__ import annotations

import torch
from demo_backbones import (  # the same override builders (this folder)
    MOBILENET,
    merge,
    run_sections,
    schedule,
)

from reidlib.methods.pab import ABLATIONS
from reidlib.visibility import score_auc
from reidlib.workbook import Workbook

WIDE = {"bpbreid": {"dim_reduce": 256}, "pab": {"dim_reduce": 256, "fuser_channels": 256}}  # first tried


def report(wb: Workbook, label: str, run) -> None:
    m = run.metrics
    line = f"{label:<58} | mAP {100 * m['mAP']:5.1f} | Rank-1 {100 * m['rank1']:5.1f}"
    layout = run.load_model().part_layout()
    if layout is not None and layout.kind == "grouping":
        iou = wb.part_map_iou(run)
        auc = score_auc(wb.score_vs_visibility(run)).loc["all occluded images"]
        line += (f" | IoU {iou['iou'].mean():.2f} (template {iou['template iou'].mean():.2f})"
                 f" | visibility AUC {auc['ROC AUC']:.2f} acc {auc['accuracy (score >= 0.5)']:.2f}")
    print(f"{line} | {m['wall_time_s']:4.0f} s", flush=True)


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
        from_imagenet = {"model": WIDE[method], "init_from": None}
        full_epochs = schedule(4, 1e-3, [3], max_iters_per_epoch=None)
        run = wb.train(wb.config(method, merge(MOBILENET, full_epochs, from_imagenet), tag="4 ep"))
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


DEMO_MODEL = {"bpbreid": {"dim_reduce": 256},
              "pab": {"dim_reduce": 256, "predictor_channels": 128, "fuser_channels": 128}}


def rows_section(wb: Workbook) -> None:
    """The demo's row protocol (the yaml's demo sections): 30 steps from the trunk, K_1 128 wide; and
    PAB-ReID with K_1 256 wide for its cost."""
    trunk = wb.train(wb.config("bot", tag="trunk"))
    report(wb, "trunk: BoT demo (4 ep)", trunk)
    for method in ("bpbreid", "pab"):
        report(wb, f"{method}, demo rows (30 steps from the trunk)",
               row(wb, method, None, trunk, 30, 3.5e-4, model=DEMO_MODEL[method]))
    report(wb, "pab, 30 steps from the trunk, K_1 256 wide",
           row(wb, "pab", None, trunk, 30, 3.5e-4, model={**DEMO_MODEL["pab"], "fuser_channels": 256}))


def pixel_section(wb: Workbook) -> None:
    """The part attention loss alone (no ReID loss), 60 steps at 3.5e-3 from ImageNet: how fast each
    pixel predictor learns the parsing labels (final training loss, part-map IoU)."""
    off = {name: 0.0 for name in ("global", "foreground", "concat", "parts")}
    alone = {"id_weights": off, "triplet_weights": off, "pixel_weight": 1.0}
    for label, method, model in (("BPBreID's 1x1 classifier", "bpbreid", {}),
                                 ("PAB-ReID's predictor (Eq. 2, final ReLU)", "pab", {}),
                                 ("PAB-ReID's predictor without the final ReLU", "pab",
                                  {"predictor_final_relu": False}),
                                 ("PAB-ReID, BPBreID's 1x1 classifier", "pab", {"predictor": "one_conv"})):
        run = row(wb, method, None, None, 60, 3.5e-3, model={**DEMO_MODEL[method], **alone, **model})
        loss = run.history_frame("epoch")["loss"].iloc[-1]
        report(wb, f"pixel loss alone, {label}: loss {loss:.2f}", run)


def tables_section(wb: Workbook) -> None:
    """The notebook's ablation tables as the demo profile trains them (Table III, Fig. 5 with the seed
    spread of "ALL", mAP / Rank-1 %), and the part-map IoU and visibility AUC of its two main models."""
    import pandas as pd

    from reidlib import tables

    nb = Workbook("pab_reid", profile="demo", out_dir=wb.out_dir)
    for table_id, extra in (("Table III", ()), ("Fig. 5", ("ID loss", "ID + triplet loss"))):
        df = nb.ablation_table("pab", table_id, spread_row="ALL" if table_id == "Table III" else
                               "Part triplet loss", extra=extra)
        ours = df.xs("reproduced", level="source")["SynthOcc"]
        print(f"{table_id}:\n{ours.round(1).to_string()}\n{tables.separation(df).to_string()}", flush=True)
    runs = {"BPBreID": nb.train(nb.config("bpbreid")), "PAB-ReID": nb.train_row("pab", "ALL")}
    iou = pd.concat({n: nb.part_map_iou(r) for n, r in runs.items()}, names=["method"]).reset_index(0)
    print(iou.groupby(["part", "method"])[["iou", "template iou"]].mean().unstack("method").round(2))
    for name, run in runs.items():
        report(nb, f"{name} (the notebook's run)", run)


def cells_section(wb: Workbook) -> None:
    """What a 6x3 map can see of SynthOcc's parts: the median person width in the labels, and for each
    part the share of test images in which it wins at least one cell once the labels are averaged over
    the cells of the demo's map (what the part attention loss supervises)."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    from reidlib.data.masks import group_label_map, part_names

    cfg = wb.config("pab")
    dataset = wb.data(cfg)
    cells = (cfg.data.height // 16, cfg.data.width // 16)                 # MobileNetV2, stride 16
    labels = [np.asarray(Image.open(r.mask_path)) for r in [*dataset.query, *dataset.gallery]]
    widths = [np.ptp(np.flatnonzero((m > 0).any(0))) + 1 for m in labels if (m > 0).any()]
    print(f"person width in the labels: median {np.median(widths):.0f} of {labels[0].shape[1]} pixels; "
          f"map {cells[0]}x{cells[1]} cells", flush=True)
    for grouping in ("five", "six"):
        won = np.zeros(len(part_names(grouping)))
        for m in labels:
            one_hot = torch.from_numpy(group_label_map(m, grouping))[None]        # [1, K+1, H, W]
            owner = F.interpolate(one_hot, size=cells, mode="area")[0].argmax(0)   # [h, w]
            won += [bool((owner == k).any()) for k in range(1, len(won) + 1)]
        names = part_names(grouping)
        shares = ", ".join(f"{n} {w / len(labels):.0%}" for n, w in zip(names, won, strict=True))
        print(f"{grouping}: images where the part wins a cell: {shares}", flush=True)


SECTIONS = {"cells": cells_section, "rows": rows_section, "tables": tables_section, "trunk": trunk_section,
            "heads": heads_section, "scratch": scratch_section, "pixel": pixel_section}


if __name__ == "__main__":
    run_sections(__doc__, SECTIONS, "pab_demo")
