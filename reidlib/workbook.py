"""The notebook-facing layer: one `Workbook` per paper notebook turns its parameters into configs, runs,
tables, figures and the metrics sidecar, so that notebook cells stay short and logic stays here.

    wb = Workbook("qpm", profile=profile, dataset=dataset, data_root=data_root, out_dir=out_dir, ...)
    run = wb.train(wb.config("qpm"))
    wb.table(df, "table1_occluded_duke")      # runs/results/<profile>/qpm/table1_occluded_duke.{csv,md,tex}
    wb.figure(fig, "fig4_quality_scores")     # figures/qpm/fig4_quality_scores.{png,pdf}
    wb.headline(mAP=..., rank1=...)           # runs/results/<profile>/qpm/metrics.json (reidlib summary)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from reidlib.config import RunConfig, check_profile, deep_merge, from_dict, profile_config, replace
from reidlib.paths import project_root, results_dir
from reidlib.runs import atomic_write_json, read_json

# What the "scaling" table shows: the settings that change between the paper and the ci/demo twins.
SCALING_FIELDS = {
    "backbone": ("model", "backbone"),
    "height": ("data", "height"),
    "width": ("data", "width"),
    "P (ids/batch)": ("data", "batch_p"),
    "K (imgs/id)": ("data", "batch_k"),
    "epochs": ("train", "epochs"),
    "iters/epoch cap": ("train", "max_iters_per_epoch"),
    "optimizer": ("train", "optimizer"),
    "lr": ("train", "lr"),
    "data set": ("data", "dataset"),
}
SPREAD_METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")


class Workbook:
    """Parameters of a paper notebook, resolved once (see docs/design.md, "Notebook anatomy")."""

    def __init__(self, paper: str, profile: str = "demo", dataset: str | None = None,
                 data_root: str | None = None, device: str = "auto", seed: int = 0, out_dir: str = "runs",
                 retrain: bool = False, run_ablations: bool = True, run_sweeps: bool | None = None,
                 interactive: bool = False):
        self.paper = paper
        self.profile = check_profile(profile)
        self.dataset, self.data_root = dataset, data_root
        if profile == "paper" and data_root is None:
            raise ValueError("profile 'paper' trains on real data: set data_root to the folder holding "
                             "the data set (see README, 'Paper profile: data and weights')")
        self.device, self.seed, self.retrain = device, seed, retrain
        self.run_ablations = run_ablations
        self.run_sweeps = (profile == "paper") if run_sweeps is None else run_sweeps  # DESIGN: off in demo
        self.interactive = interactive
        out = Path(out_dir)
        self.out_dir = out if out.is_absolute() else project_root() / out
        self.results = results_dir(self.out_dir, profile, paper)
        self.results.mkdir(parents=True, exist_ok=True)
        # ci is the test profile: its figures stay under out_dir instead of replacing the demo's in figures/
        self.figures_root = self.out_dir if profile == "ci" else project_root()

    # ------------------------------------------------------------------------------ configs and runs
    def config(self, method: str, overrides: dict | None = None, tag: str = "",
               ablation: bool = False) -> RunConfig:
        """configs/<method>.yaml for this profile, with the notebook's data set, root and seed applied.

        ablation: also apply the profile's `ablation:` block (see `reidlib.config.profile_config`)."""
        merged = profile_config(method, self.profile, ablation=ablation)
        data = {k: v for k, v in (("dataset", self.dataset), ("root", self.data_root)) if v is not None}
        notebook = {"seed": self.seed, "tag": tag or method, **({"data": data} if data else {})}
        merged = deep_merge(deep_merge(merged, notebook), overrides or {})
        merged.setdefault("method", method)
        return from_dict(RunConfig, merged)

    def train(self, cfg: RunConfig):
        from reidlib.engine import train

        return train(cfg, runs_dir=self.out_dir, retrain=self.retrain, device=self.device)

    def seed_spread(self, cfg: RunConfig, seeds=(1,)) -> dict[str, float]:
        """max - min of each ranking metric over `cfg` trained with its own seed and with each of `seeds`:
        how far two runs of one table row differ by chance alone, the yardstick for the table's
        differences (a row that beats another by less than this has not shown anything)."""
        runs = [self.train(cfg)] + [self.train(replace(cfg, seed=s)) for s in seeds]
        keys = [k for k in SPREAD_METRICS if all(k in r.metrics for r in runs)]
        return {k: max(r.metrics[k] for r in runs) - min(r.metrics[k] for r in runs) for k in keys}

    def evaluate(self, run, data_overrides: dict | None = None, flip: bool | None = None) -> dict:
        """Evaluate a trained run on its own data or on another split/protocol (e.g. holistic queries)."""
        from reidlib.data.loader import load_from_config
        from reidlib.engine import evaluate_model

        data_cfg = replace(run.config.data, **(data_overrides or {}))
        flip = run.config.train.flip_test if flip is None else flip
        return evaluate_model(run.load_model(), load_from_config(data_cfg), data_cfg, flip=flip)

    def data(self, cfg: RunConfig):
        """The ReidDataset a run config trains and tests on (SynthOcc is generated on first use)."""
        from reidlib.data.loader import load_from_config

        return load_from_config(cfg.data)

    def cost(self, run, batch: int = 16) -> dict:
        """Parameters, FLOPs, train s/iter and inference ms/image of a trained run, measured here on a
        batch of its own training images at its own resolution."""
        from reidlib.cost import cost_row
        from reidlib.data.loader import build_train_loader

        cfg = run.config
        sample = next(iter(build_train_loader(self.data(cfg), cfg.data, seed=cfg.seed)))
        images, pids, camids = (sample[k][:batch] for k in ("image", "pid", "camid"))
        return cost_row(run.load_model(), images, pids, camids)

    def rankings(self, runs, queries: int = 4, top: int = 8, data_overrides: dict | None = None):
        """Ranking-list figure of a run, or of several runs {name: run} side by side: the first query of
        `queries` identities, each followed by its top gallery images framed green (match) or red."""
        from reidlib.rankings import ranking_figure

        ranked = self._ranked(runs, data_overrides)
        return ranking_figure(ranked, next(iter(ranked.values())).first_query_per_identity(queries), top)

    def browse_rankings(self, runs, top: int = 8, data_overrides: dict | None = None):
        """With `interactive`: a slider over every query that redraws `rankings` for it (None otherwise,
        so a cell ending in this call shows nothing in a batch run)."""
        from reidlib.rankings import ranking_browser

        return ranking_browser(self._ranked(runs, data_overrides), top) if self.interactive else None

    def _ranked(self, runs, data_overrides: dict | None) -> dict:
        from reidlib.rankings import rank_test

        named = runs if isinstance(runs, dict) else {"": runs}
        return {name: rank_test(run, replace(run.config.data, **(data_overrides or {})))
                for name, run in named.items()}

    def occlusion_gap(self, runs: dict, holistic: dict | None = None) -> pd.DataFrame:
        """Each run on its own (occluded) queries and on a holistic twin of its test data, with the gap.

        For SynthOcc the twin is the `holistic` protocol: the very same query and gallery shots drawn
        without occluders, so the gap isolates what occlusion costs the method."""
        from reidlib.tables import metrics_table

        holistic = holistic or {"protocol": "holistic"}
        name = runs[next(iter(runs))].config.data.dataset
        cols = ["Rank-1", "mAP"]
        occ = metrics_table({n: r.metrics for n, r in runs.items()}, name, cols).droplevel(0, axis=1)
        hol = metrics_table({n: self.evaluate(r, holistic) for n, r in runs.items()}, name, cols)
        hol = hol.droplevel(0, axis=1)
        parts = {"occluded queries": occ, "holistic queries": hol, "gap (occluded - holistic)": occ - hol}
        return pd.concat(parts, axis=1)

    def samples(self, cfg: RunConfig, n: int = 4, split: str = "query"):
        """First image of `n` identities of a split, as the test transform gives them: (images, camids)."""
        import torch

        from reidlib.data.loader import build_test_loader

        ds = self.data(cfg)
        records = ds.split(split)
        first = {}
        for rec in records:
            first.setdefault(rec.pid, rec)
        picks = list(first.values())[:n]
        batch = next(iter(build_test_loader(picks, cfg.data, root=ds.root)))
        return batch["image"], torch.as_tensor(batch["camid"])

    def loss_curves(self, runs: dict):
        """Total training loss per epoch of several runs (from their history.jsonl)."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        for name, run in runs.items():
            hist = run.history_frame("epoch")
            if len(hist):
                ax.plot(hist["epoch"], hist["loss"], marker="o", ms=3, label=name)
        ax.set(xlabel="epoch", ylabel="training loss", yscale="log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def scaling(self, method: str) -> pd.DataFrame:
        """The paper's settings beside this profile's (docs/design.md: "the scaling stated in one table")."""
        paper, here = profile_config(method, "paper"), profile_config(method, self.profile)

        def pick(cfg: dict, path: tuple[str, str]) -> Any:
            return (cfg.get(path[0]) or {}).get(path[1], "-")

        rows = {name: {"paper": pick(paper, path), self.profile: pick(here, path)}
                for name, path in SCALING_FIELDS.items()}
        return pd.DataFrame(rows).T.astype(str).rename_axis("setting")

    # ----------------------------------------------------------------------------- tables, figures
    def table(self, df: pd.DataFrame, name: str, caption: str | None = None):
        """Export `df` as CSV/Markdown/LaTeX under the results folder; return a Styler to display."""
        from reidlib import tables

        paths = tables.export(df, self.results / name, caption=caption)
        self._register("tables", name, [str(p) for p in paths])
        return tables.style(df)

    def figure(self, fig, name: str) -> list[Path]:
        """Save `fig` to figures/<paper>/<name>.png and .pdf."""
        from reidlib.viz import save_figure

        paths = save_figure(fig, self.paper, name, root=self.figures_root)
        self._register("figures", name, [str(p) for p in paths])
        return paths

    def headline(self, **metrics: float) -> None:
        """Numbers `reidlib summary` shows for this notebook (fractions stay fractions)."""
        side = self._sidecar()
        side["headline"] = {**side.get("headline", {}), **{k: float(v) for k, v in metrics.items()}}
        atomic_write_json(self.results / "metrics.json", side)

    def _sidecar(self) -> dict:
        side = read_json(self.results / "metrics.json") or {}
        side.update(paper=self.paper, profile=self.profile)
        return side

    def _register(self, kind: str, name: str, paths: list[str]) -> None:
        side = self._sidecar()
        side.setdefault(kind, {})[name] = paths
        atomic_write_json(self.results / "metrics.json", side)
