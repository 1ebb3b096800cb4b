"""What the cross-paper comparison notebook (06_compare) adds to a paper's Workbook: which methods it
compares (every registered method, so the notebook grows with the registry), their leaderboard under one
protocol and their cost at the papers' own size.

    names = leaderboard_methods()                        # e.g. bot, pcb, ..., rganet (no training stages)
    board = leaderboard(wb, names, spread=names[:3])      # one row per method: ranks, mAP, mINP, spread
    calibration(wb, runs)                                # ROC AUC of part scores for "part visible"
    paper_size_cost("dpm")                               # params and FLOPs of the paper-size model
"""

from __future__ import annotations

import pandas as pd
import torch

from reidlib import methods
from reidlib.config import RunConfig
from reidlib.methods.base import Batch, DataInfo

LEADERBOARD_METRICS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP",
                       "mINP": "mINP"}
# The papers' main benchmark, Occluded-Duke: training identities and cameras size the paper-size heads.
PAPER_TRAIN_IDS, PAPER_CAMERAS = 702, 8


def leaderboard_methods() -> list[str]:
    """Every registered method that has its own config file (reidlib/configs/<name>.yaml: what the
    comparison trains) and is not only an earlier training stage of another (RGANet's prompt stage), in
    the registry's order. A method registered without a config (a test's toy) is not compared."""
    from importlib import resources

    configs = resources.files("reidlib") / "configs"
    return [name for name in methods.names()
            if not methods.get(name).is_stage and (configs / f"{name}.yaml").is_file()]


def leaderboard(wb, names: list[str], spread: list[str] = ()) -> pd.DataFrame:
    """One row per method: its run under the profile's own config (the run its paper notebook trains, so
    the main job reuses it from the cache), the ranking metrics in percent and, for the methods in
    `spread`, the max - min of mAP and Rank-1 over the notebook's seed and the next."""
    rows = {}
    for name in names:
        cfg = wb.config(name)
        run = wb.train(cfg)
        row = {label: 100 * run.metrics[key] for key, label in LEADERBOARD_METRICS.items()}
        if name in spread:
            gap = wb.seed_spread(cfg, seeds=(wb.seed + 1,))
            row.update({"mAP spread": 100 * gap["mAP"], "Rank-1 spread": 100 * gap["rank1"]})
        row.update(backbone=cfg.model.get("backbone", "-"), size=f"{cfg.data.height}x{cfg.data.width}",
                   trunk=cfg.init_from or "-")
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis("method")


def calibration(wb, runs: dict) -> pd.DataFrame:
    """ROC AUC of every scored method's per-part scores (QPM's quality, BPBreID / PAB-ReID / BPSEMA's
    visibility, RGANet's confidence) for "part at least half visible", per occluder kind, from SynthOcc's
    truth (reidlib.visibility): one row per (method, occluder). Methods whose `explain` gives no part
    scores on parts with a known layout (global models; DPM's mask, whose channels are no body parts)
    are left out."""
    from reidlib.visibility import score_auc

    rows = []
    for name, run in runs.items():
        model = run.load_model(wb.device)
        if model.part_layout() is None or "part_scores" not in wb.explain(run, wb.samples(run.config, n=2)):
            continue
        auc = score_auc(wb.score_vs_visibility(run))
        rows += [{"method": name, "occluder": kind, "ROC AUC": value, "parts": auc.loc[kind, "parts"]}
                 for kind, value in auc["ROC AUC"].items()]
    return pd.DataFrame(rows, columns=["method", "occluder", "ROC AUC", "parts"])


# A method's own map, most specific first: its attention mask, its part maps (where any part is), the
# heads' class-token attention (their mean), the map its descriptor is pooled from.
OWN_MAPS = ("attention", "part_maps", "head_attention", "activation")


def own_map(explained: dict) -> tuple[str, torch.Tensor]:
    """(key, [N, h, w]) of the most specific map among a method's `explain` outputs (OWN_MAPS)."""
    for key in OWN_MAPS:
        if key in explained:
            value = explained[key]
            return key, value.amax(1) if key == "part_maps" else value.mean(1) if value.dim() == 4 else value
    raise ValueError(f"explain() gives none of {OWN_MAPS} (it gives {sorted(explained)})")


def paper_size_cost(name: str) -> dict[str, float]:
    """Parameters and inference FLOPs per image of method `name` at its paper profile's settings (its
    image size and backbone, random weights: the cost does not depend on them), one forward pass on CPU."""
    from reidlib.cost import count_parameters, inference_flops
    from reidlib.data.masks import part_names

    cfg = RunConfig.from_profile(name, "paper", {"model": {"pretrained": None}})
    parts = tuple(part_names(cfg.data.mask_grouping)) if cfg.data.masks else ()
    size = (cfg.data.height, cfg.data.width)
    info = DataInfo(num_classes=PAPER_TRAIN_IDS, num_cameras=PAPER_CAMERAS, image_size=size, part_names=parts)
    model = methods.build(cfg.method, cfg.model, info).eval()
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    masks = torch.rand(1, len(parts) + 1, *size).softmax(1) if model.test_masks else None
    batch = Batch(images=images, camids=torch.zeros(1, dtype=torch.long), masks=masks)
    return {"params (M)": count_parameters(model) / 1e6,
            "GFLOPs / image": inference_flops(model, batch) / 1e9,
            "size": f"{size[0]}x{size[1]}", "backbone": cfg.model.get("backbone", "-")}


__all__ = ["LEADERBOARD_METRICS", "OWN_MAPS", "calibration", "leaderboard", "leaderboard_methods", "own_map",
           "paper_size_cost"]
