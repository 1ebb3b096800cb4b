"""notebooks/03_qpm.ipynb: QPM's runs (IDE stage, then every table row), tables and figures.

Every row of Tables V-VII is `reidlib.methods.qpm.ablation_config(row)` on top of configs/qpm.yaml. With
`model.init_from: ide` (every profile) every QPM run is initialised from one IDE run of the same data
(Sec. IV-A), as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image

from reidlib import reported, tables
from reidlib.config import deep_merge
from reidlib.methods.qpm import IDE_PLACEHOLDER, TABLE_V, TABLE_VI, TABLE_VII, ablation_config

if TYPE_CHECKING:
    from reidlib.engine import Run

PAPER = "qpm"
# SynthOcc protocols standing in for the paper's benchmarks (transfer: trained on the holistic protocol).
TRANSFER_PROTOCOLS = {"partial_reid": "Partial-REID", "occluded_reid": "Occluded-REID"}
OBJECT_OCCLUDERS = ("car", "pole", "board", "tree", "luggage")
VISIBLE_AT = 0.5  # a stripe counts as visible when at least half of its body pixels are unoccluded


class QPMRuns:
    """Trains (or reuses) the runs QPM's tables need, all from one IDE initialisation per data set."""

    def __init__(self, wb, data: dict | None = None):
        self.wb, self.data = wb, data or {}
        self._ide: dict[bool, Run] = {}

    def ide(self, ablation: bool = False) -> Run:
        """The IDE run the QPM runs start from (trained once, then cached)."""
        if ablation not in self._ide:
            cfg = self.wb.config("qpm_ide", {"data": self.data}, tag="IDE", ablation=ablation)
            self._ide[ablation] = self.wb.train(cfg)
        return self._ide[ablation]

    def ide_runs(self) -> dict[str, Run]:
        """The IDE runs trained so far, by name ({} when the profile does not chain IDE)."""
        return {"IDE (ablation schedule)" if ablation else "IDE": run for ablation, run in self._ide.items()}

    def config(self, row: str = "QPM", model: dict | None = None, ablation: bool = False):
        """The row's config; `init_from: ide` (Sec. IV-A) becomes the IDE run's model file."""
        overrides = {"data": self.data, "model": deep_merge(ablation_config(row), model or {})}
        cfg = self.wb.config("qpm", overrides, tag=row, ablation=ablation)
        if cfg.model.get("init_from") == IDE_PLACEHOLDER:
            overrides["model"]["init_from"] = str(self.ide(ablation).path / "model.pt")
            cfg = self.wb.config("qpm", overrides, tag=row, ablation=ablation)
        return cfg

    def train(self, row: str = "QPM", model: dict | None = None, ablation: bool = False):
        return self.wb.train(self.config(row, model, ablation))

    def rows(self, names: Iterable[str], ablation: bool = True) -> dict:
        return {name: self.train(name, ablation=ablation) for name in names}


def ablation_runs(runner: QPMRuns) -> dict:
    """Every distinct row of Tables V-VII ("+ISA" is "AGFE global(+ISA)"; the cache shares equal configs)."""
    names = dict.fromkeys([*TABLE_V, *TABLE_VI, *TABLE_VII])
    return runner.rows(names)


def reproduced_vs_reported(table_id: str, metrics: dict[str, dict], dataset: str) -> pd.DataFrame:
    """Our rows (metrics fractions, on `dataset`) beside the paper's table `table_id`."""
    reported_table = reported.table(PAPER, table_id)
    ours = tables.metrics_table(metrics, dataset, _metric_names(reported_table))
    return tables.compare(ours, reported_table)


def _metric_names(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df.columns.get_level_values("metric")))


def gamma_sweep(run, gammas: Sequence[float], wb) -> dict[str, dict]:
    """Table XI without retraining: Eq. (15) re-scored with each gamma on the same embeddings."""
    from reidlib.engine import extract_test
    from reidlib.evaluation import evaluate

    model = run.load_model()
    (q, qp, qc), (g, gp, gc) = extract_test(model, wb.data(run.config), run.config.data,
                                            run.config.train.flip_test)
    out = {}
    for gamma in gammas:
        model.cfg.gamma = float(gamma)
        out[f"gamma={gamma:.1f}"] = evaluate(model.distance(q, g).numpy(), qp, gp, qc, gc).as_dict()
    return out


# ------------------------------------------------------------------------------------ quality scores
def _stripe_visibility(occluded: np.ndarray, holistic: np.ndarray, k: int) -> np.ndarray:
    """[K] visible fraction of each horizontal stripe's body pixels (NaN where the stripe has no body)."""
    bands = np.array_split(np.arange(occluded.shape[0]), k)
    vis = []
    for rows in bands:
        body = (holistic[rows] > 0).sum()
        vis.append((occluded[rows] > 0).sum() / body if body else np.nan)
    return np.array(vis)


def quality_vs_visibility(run, wb, protocol: str = "occluded_duke", twin: str = "holistic") -> pd.DataFrame:
    """One row per (query image, stripe): predicted q_k, the stripe's true visibility (the image's parsing
    map against its occluder-free twin's), and the occluder type, for SynthOcc queries."""
    from reidlib.data import synthocc
    from reidlib.data.loader import build_test_loader

    cfg = run.config
    ds = wb.data(cfg)
    model = run.load_model()
    k = model.cfg.num_parts
    scores = []
    for batch in build_test_loader(ds.query, cfg.data, root=ds.root):
        scores.append(model.explain(batch["image"], batch["camid"])["quality"])
    quality = torch.cat(scores).numpy()                                    # [Q, K]
    set_root = Path(synthocc.protocol_root(ds.root, protocol)).parent
    meta = synthocc.read_metadata(set_root, protocol).set_index("filename")
    rows = []
    for rec, q in zip(ds.query, quality, strict=True):
        name = Path(rec.path).name
        stem = Path(name).stem
        maps = [np.asarray(Image.open(set_root / p / "masks" / "parsing" / "query" / f"{stem}.png"))
                for p in (protocol, twin)]
        vis = _stripe_visibility(*maps, k)
        occluder = meta.loc[name, "occluder"]
        kind = "pedestrian" if occluder == "pedestrian" else ("object" if occluder != "none" else "none")
        rows += [{"image": name, "stripe": j + 1, "quality": float(q[j]), "visibility": float(vis[j]),
                  "occluder": kind} for j in range(k) if not np.isnan(vis[j])]
    return pd.DataFrame(rows)


def quality_auc(df: pd.DataFrame, visible_at: float = VISIBLE_AT) -> pd.DataFrame:
    """ROC AUC of q_k for "stripe visible" (visibility >= visible_at), per occluder type and overall.
    0.5 is chance; the paper claims q_k works for objects and fails for pedestrians."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for name, part in [*df[df.occluder != "none"].groupby("occluder"), ("all occluded images",
                                                                         df[df.occluder != "none"])]:
        visible = part.visibility >= visible_at
        auc = roc_auc_score(visible, part.quality) if visible.nunique() == 2 else np.nan
        out[name] = {"stripes": len(part), "occluded stripes": int((~visible).sum()), "ROC AUC": auc,
                     "mean q (visible)": part.quality[visible].mean(),
                     "mean q (occluded)": part.quality[~visible].mean()}
    return pd.DataFrame(out).T


def example_queries(run, wb, per_kind: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Query images occluded by objects and by pedestrians (Fig. 4), test-transformed, with captions."""
    from reidlib.data import synthocc
    from reidlib.data.loader import build_test_loader

    cfg = run.config
    ds = wb.data(cfg)
    meta = synthocc.read_metadata(Path(synthocc.protocol_root(ds.root)).parent).set_index("filename")
    picks, captions = [], []
    for kinds in (OBJECT_OCCLUDERS, ("pedestrian",)):
        chosen = [r for r in ds.query if meta.loc[Path(r.path).name, "occluder"] in kinds][:per_kind]
        picks += chosen
        captions += [f"{meta.loc[Path(r.path).name, 'occluder']} "
                     f"({meta.loc[Path(r.path).name, 'occluded_fraction']:.0%})" for r in chosen]
    batch = next(iter(build_test_loader(picks, cfg.data, root=ds.root)))
    return batch["image"], batch["camid"], captions
