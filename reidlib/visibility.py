"""Do a method's per-part scores know what is occluded? SynthOcc knows the truth.

Every SynthOcc query has an occluder-free twin in the `holistic` protocol (the same shot drawn without
occluders) and a parsing label map for both. The visible fraction of a part is its body pixels in the
occluded map over those in the twin's. Parts follow the method's `PartLayout`: horizontal stripes of the
image (PCB, QPM) or parsing-label groups (BPBreID's five / eight parts, RGANet's regions).

    df = score_vs_visibility(model, dataset, data_cfg)  # per (query, part): score, visibility, occluder
    score_auc(df)                                       # ROC AUC of the score for "part visible"
    part_map_iou(model, dataset, data_cfg)              # part maps vs the labelled parts (IoU)
    vector_shift(occluded, holistic, meta)              # a per-image vector (DPM's mask) vs its twin's
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from reidlib.engine.inference import device_of
from reidlib.methods.base import Batch, PartLayout

VISIBLE_AT = 0.5  # a part counts as visible when at least half of its body pixels are unoccluded


def occluder_kind(occluder: str) -> str:
    """SynthOcc's occluder name as the two kinds the papers discuss: 'pedestrian', 'object' (or 'none')."""
    return occluder if occluder in ("pedestrian", "none") else "object"


def part_visibility(occluded: np.ndarray, holistic: np.ndarray, layout: PartLayout) -> np.ndarray:
    """[K] visible fraction of each part's body pixels (NaN where the twin shows no body in the part).

    occluded / holistic: [H, W] parsing label maps (0 = background) of a query and its twin."""
    if layout.kind == "stripes":
        # image rows in K bands, as the feature map's stripes see them (equal up to rounding)
        bands = np.array_split(np.arange(occluded.shape[0]), layout.count)
        seen = [(occluded[rows] > 0).sum() for rows in bands]
        body = [(holistic[rows] > 0).sum() for rows in bands]
    else:
        from reidlib.data.masks import get_grouping

        groups = get_grouping(layout.grouping, "parsing").parsing
        seen = [np.isin(occluded, labels).sum() for labels in groups]
        body = [np.isin(holistic, labels).sum() for labels in groups]
    return np.array([s / b if b else np.nan for s, b in zip(seen, body, strict=True)])


def query_metadata(dataset) -> pd.DataFrame:
    """SynthOcc's metadata of the data set's protocol, indexed by file name (occluder, occluded fraction)."""
    from reidlib.data import synthocc

    return synthocc.read_metadata(synthocc.protocol_root(dataset.root)).set_index("filename")


def _explained_queries(model, dataset, data_cfg, keys: tuple[str, ...], twin: str = "holistic"):
    """For each query of a SynthOcc protocol with occluders: its record, the model's `explain` outputs
    named in `keys` (CPU float tensors without the batch axis) and the parsing label maps [H, W] of the
    query and of its occluder-free twin."""
    from reidlib.data import synthocc
    from reidlib.data.loader import build_test_loader

    model.eval()
    device = device_of(model)
    outputs: dict[str, list] = {key: [] for key in keys}
    with torch.no_grad():
        loader = build_test_loader(dataset.query, data_cfg, root=dataset.root, with_masks=model.test_masks)
        for item in loader:
            out = model.explain(Batch.from_loader(item, data_cfg).to(device))
            for key in keys:
                if key not in out:
                    raise ValueError(f"{type(model).__name__}.explain() gives no {key}")
                outputs[key].append(out[key].float().cpu())
    outputs = {key: torch.cat(parts) for key, parts in outputs.items()}
    protocol_dir = Path(synthocc.protocol_root(dataset.root))
    set_root, protocol = protocol_dir.parent, protocol_dir.name
    for i, rec in enumerate(dataset.query):
        label = Path("masks") / "parsing" / "query" / f"{Path(rec.path).stem}.png"
        maps = [np.asarray(Image.open(set_root / p / label)) for p in (protocol, twin)]
        yield rec, {key: value[i] for key, value in outputs.items()}, maps


def _layout_of(model) -> PartLayout:
    layout = model.part_layout()
    if layout is None:
        raise ValueError(f"{type(model).__name__} has no per-part scores (part_layout() is None)")
    return layout


def score_vs_visibility(model, dataset, data_cfg, twin: str = "holistic") -> pd.DataFrame:
    """One row per (query image, part): the method's `part_scores`, the part's true visible fraction and
    the occluder kind. `dataset` must be a SynthOcc protocol with occluders (e.g. occluded_duke)."""
    layout = _layout_of(model)
    meta = query_metadata(dataset)
    names = layout_part_names(layout)
    rows = []
    for rec, out, maps in _explained_queries(model, dataset, data_cfg, ("part_scores",), twin):
        name = Path(rec.path).name
        vis = part_visibility(*maps, layout)
        kind = occluder_kind(meta.loc[name, "occluder"])
        rows += [{"image": name, "part": names[j], "score": float(out["part_scores"][j]),
                  "visibility": float(vis[j]), "occluder": kind}
                 for j in range(layout.count) if not np.isnan(vis[j])]
    return pd.DataFrame(rows)


def part_map_iou(model, dataset, data_cfg) -> pd.DataFrame:
    """How well a parsing-supervised method's part maps find the parts, at the maps' own resolution (what
    the pixel loss supervises): one row per (query image, part) that the query's labels show or the maps
    claim, with the IoU of the part's cells in the maps (where it beats the other parts and the background,
    1 - sum of the part maps) with its cells in the labels (each part's visible labelled pixels averaged
    over the cell, then the arg-max), and the IoU a fixed template reaches (each cell given the part most
    often labelled there over all queries: what a model ignoring the image could do). SynthOcc only; the
    layout must be parsing-label groups."""
    from reidlib.data.masks import group_label_map

    layout = _layout_of(model)
    if layout.kind != "grouping":
        raise ValueError(f"{type(model).__name__}'s parts are {layout.kind}, not parsing-label groups: "
                         "its maps have no labelled parts to overlap")
    meta = query_metadata(dataset)
    predicted, truth, kinds, images = [], [], [], []
    for rec, out, (occluded, _) in _explained_queries(model, dataset, data_cfg, ("part_maps",)):
        maps = out["part_maps"]                                                     # [K, h, w]
        background = (1.0 - maps.sum(0, keepdim=True)).clamp(min=0.0)
        predicted.append(torch.cat([background, maps]).argmax(0))                   # [h, w], 0 = background
        one_hot = torch.from_numpy(group_label_map(occluded, layout.grouping))            # [K+1, H, W]
        cells = torch.nn.functional.interpolate(one_hot[None], size=maps.shape[1:], mode="area")[0]
        truth.append(cells.argmax(0))                                               # [h, w]
        kinds.append(occluder_kind(meta.loc[Path(rec.path).name, "occluder"]))
        images.append(Path(rec.path).name)
    truth_stack = torch.stack(truth)                                                # [Q, h, w]
    template = torch.stack([(truth_stack == k).sum(0) for k in range(layout.count + 1)]).argmax(0)
    names = layout_part_names(layout)
    rows = []
    for image, kind, pred, target in zip(images, kinds, predicted, truth, strict=True):
        for k in range(1, layout.count + 1):
            true_k, pred_k, tmpl_k = target == k, pred == k, template == k
            if not (true_k.any() or pred_k.any()):
                continue
            rows.append({"image": image, "part": names[k - 1], "occluder": kind,
                         "iou": _iou(true_k, pred_k), "template iou": _iou(true_k, tmpl_k)})
    return pd.DataFrame(rows)


def _iou(a: Tensor, b: Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else float("nan")


def layout_part_names(layout: PartLayout) -> list[str]:
    """Names of the parts of a layout: "stripe k" for stripes, the grouping's part names otherwise."""
    if layout.kind == "stripes":
        return [f"stripe {k + 1}" for k in range(layout.count)]
    from reidlib.data.masks import part_names

    return part_names(layout.grouping)


def score_auc(df: pd.DataFrame, visible_at: float = VISIBLE_AT) -> pd.DataFrame:
    """ROC AUC of the part score for "part visible" (visibility >= visible_at), per occluder kind and over
    all occluded images (0.5 is chance), and the accuracy of "score >= 0.5" as that decision (for binary
    visibility scores, e.g. BPBreID's, the share of parts called right)."""
    from sklearn.metrics import roc_auc_score

    occluded = df[df.occluder != "none"]
    out = {}
    for name, part in [*occluded.groupby("occluder"), ("all occluded images", occluded)]:
        visible = part.visibility >= visible_at
        auc = roc_auc_score(visible, part.score) if visible.nunique() == 2 else np.nan
        out[name] = {"parts": len(part), "occluded parts": int((~visible).sum()), "ROC AUC": auc,
                     "accuracy (score >= 0.5)": ((part.score >= 0.5) == visible).mean(),
                     "mean score (visible)": part.score[visible].mean(),
                     "mean score (occluded)": part.score[~visible].mean()}
    return pd.DataFrame(out).T


def vector_shift(occluded: dict[str, Tensor], holistic: dict[str, Tensor],
                 meta: pd.DataFrame) -> pd.DataFrame:
    """How a per-image vector (DPM's prototype mask) moves once occluders are drawn: one row per query
    image (the keys: file names, present in both dicts and in SynthOcc's `meta`) with its occluded
    fraction and occluder kind, the cosine between the vector and its occluder-free twin's, their mean
    absolute difference, and the mean of each."""
    rows = []
    for name, vec in occluded.items():
        twin = holistic[name].float()
        vec = vec.float()
        rows.append({"image": name, "occluded fraction": float(meta.loc[name, "occluded_fraction"]),
                     "occluder": occluder_kind(meta.loc[name, "occluder"]),
                     "cosine to twin": float(torch.nn.functional.cosine_similarity(vec, twin, dim=0)),
                     "mean abs change": float((vec - twin).abs().mean()),
                     "mean": float(vec.mean()), "mean (twin)": float(twin.mean())})
    return pd.DataFrame(rows)


def example_queries(dataset, per_kind: int = 3) -> tuple[list, list[str]]:
    """The first `per_kind` queries occluded by objects and by pedestrians, with captions
    "<occluder> (<occluded fraction>)"."""
    meta = query_metadata(dataset)
    picks, captions = [], []
    for kind in ("object", "pedestrian"):
        chosen = [r for r in dataset.query if occluder_kind(meta.loc[Path(r.path).name, "occluder"]) == kind]
        for rec in chosen[:per_kind]:
            row = meta.loc[Path(rec.path).name]
            picks.append(rec)
            captions.append(f"{row['occluder']} ({row['occluded_fraction']:.0%})")
    return picks, captions


__all__ = ["VISIBLE_AT", "example_queries", "occluder_kind", "part_map_iou", "part_visibility",
           "query_metadata", "score_auc", "score_vs_visibility", "vector_shift"]
