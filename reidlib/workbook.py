"""The notebook-facing layer: one `Workbook` per paper notebook turns its parameters into configs, runs,
tables, figures and the metrics sidecar, so that notebook cells stay short and logic stays here.

    wb = Workbook("qpm", **notebook_parameters(globals()))   # the parameters cell's variables
    qpm = wb.train_row("qpm", "QPM")          # a row of the method's `ablations` (stages trained first)
    wb.table(wb.ablation_table("qpm", "Table V", spread_row="QPM"), "table5")  # rows from reported/qpm.yaml
    wb.table(df, "table1_occluded_duke")      # runs/results/<profile>/qpm/table1_occluded_duke.{csv,md,tex}
    wb.figure(fig, "fig4_quality_scores")     # figures/qpm/fig4_quality_scores.{png,pdf}
    wb.headline(mAP=..., rank1=...)           # runs/results/<profile>/qpm/metrics.json (reidlib summary)

Staged training: a config whose `init_from` names another config (configs/qpm.yaml: `init_from: qpm_ide`)
has that stage trained first, on the same data and with the notebook's seed, and starts from its weights;
the run key holds the stage's run key, so moving `out_dir` keeps the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from reidlib import methods
from reidlib.config import RunConfig, check_profile, deep_merge, from_dict, profile_config, replace
from reidlib.engine.inference import device_of
from reidlib.paths import project_root, results_dir
from reidlib.runs import atomic_write_json, plain_name, safe_path

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
# The notebook parameters (docs/design.md, "Notebook anatomy"), in the order of the parameters cell.
PARAMETERS = ("profile", "dataset", "data_root", "device", "seed", "run_ablations", "run_sweeps",
              "interactive", "out_dir", "retrain")
# The data fields a training stage shares with the run that starts from it (which images, not how many
# per batch: the stage keeps its own batch and augmentation settings).
STAGE_DATA_FIELDS = ("dataset", "root", "protocol", "synth_size")


def notebook_parameters(namespace: dict) -> dict:
    """The notebook parameters found in `namespace` (a notebook's `globals()`), for `Workbook(**...)`."""
    return {name: namespace[name] for name in PARAMETERS if name in namespace}


def _ranked_by(model, extracted) -> tuple:
    """(dist [Q, G] numpy, q_pids, g_pids, q_camids, g_camids) of extracted test embeddings under the
    model's own matching rule: what `evaluate` and the per-query metrics take."""
    (q, q_pids, q_cams), (g, g_pids, g_cams) = extracted
    device = device_of(model)
    return model.distance(q.to(device), g.to(device)).float().cpu().numpy(), q_pids, g_pids, q_cams, g_cams


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
        self.run_sweeps = (profile == "paper") if run_sweeps is None else run_sweeps  # off in demo
        self.interactive = interactive
        out = Path(out_dir)
        self.out_dir = out if out.is_absolute() else project_root() / out
        self.results = results_dir(self.out_dir, profile, paper)
        self.results.mkdir(parents=True, exist_ok=True)
        # this session's metrics.json: it starts empty, so that headline numbers, tables and figures an
        # earlier (perhaps partial, interactive) run registered never pass for this run's
        self._side: dict[str, Any] = {"paper": self.paper, "profile": self.profile}
        # ci is the test profile: its figures stay under out_dir instead of replacing the demo's in figures/
        self.figures_root = self.out_dir if profile == "ci" else project_root()
        self.stages: dict[str, Any] = {}      # training stages trained so far (loss curves)
        self._extracted: dict[tuple, tuple] = {}

    # ------------------------------------------------------------------------------ configs and runs
    def config(self, name: str, overrides: dict | None = None, tag: str = "") -> RunConfig:
        """configs/<name>.yaml for this profile, with the notebook's data set, root and seed applied; the
        method config is validated here (a bad key fails now, not when the run starts)."""
        merged = profile_config(name, self.profile)
        data = {k: v for k, v in (("dataset", self.dataset), ("root", self.data_root)) if v is not None}
        notebook = {"seed": self.seed, "tag": tag or name, **({"data": data} if data else {})}
        merged = deep_merge(deep_merge(merged, notebook), overrides or {})
        merged.setdefault("method", name)
        cfg = from_dict(RunConfig, merged)
        methods.build_config(cfg.method, cfg.model)
        return cfg

    def train(self, cfg: RunConfig):
        """Train (or reuse) `cfg`, after the stage its `init_from` names, if any."""
        from reidlib.engine import train

        return train(self.resolve_stage(cfg), runs_dir=self.out_dir, retrain=self.retrain, device=self.device)

    def resolve_stage(self, cfg: RunConfig) -> RunConfig:
        """`cfg` with an `init_from` that names a config replaced by "<method>/<key>" of that stage's run,
        trained here on the same data with the notebook's seed (so the seed-spread runs share it) and with
        the run's values of the method's `stage_fields` (e.g. RGANet's K: each Fig. 3(c) row its prompt)."""
        if cfg.init_from is None or "/" in cfg.init_from:
            return cfg
        default = self.config(cfg.init_from)
        own = methods.build_config(default.method, default.model)   # the stage's own settings
        data = {k: getattr(cfg.data, k) for k in STAGE_DATA_FIELDS}
        model = {k: cfg.model[k] for k in methods.get(cfg.method).stage_fields
                 if k in cfg.model and hasattr(own, k)}
        stage = self.train(self.config(cfg.init_from, {"data": data, "model": model}, tag=cfg.init_from))
        changed = [(k, v) for k, v in data.items() if v != getattr(default.data, k)]
        changed += [(k, v) for k, v in model.items() if v != getattr(own, k)]
        label = cfg.init_from + "".join(f" ({k}={v})" for k, v in changed)
        self.stages[label] = stage
        return replace(cfg, init_from=f"{stage.config.method}/{stage.key}")

    # ------------------------------------------------------------------------------ ablation rows
    def _ablation(self, name: str, row: str):
        table = methods.get(self.config(name).method).ablations
        if row not in table:
            raise ValueError(f"{name} has no ablation row {row!r}; rows: {list(table)}")
        return table[row]

    def row_config(self, name: str, row: str, data: dict | None = None) -> RunConfig:
        """The config a row of the method's `ablations` trains (a test-only row: its base row's)."""
        ablation = self._ablation(name, row)
        if ablation.base is not None:
            return self.row_config(name, ablation.base, data)
        return self.config(name, {"model": ablation.model, "data": data or {}}, tag=row)

    def train_row(self, name: str, row: str, data: dict | None = None):
        return self.train(self.row_config(name, row, data))

    def row_metrics(self, name: str, row: str, data: dict | None = None) -> dict[str, float]:
        """The row's metrics: its run's, or its base run's re-scored with the row's `test` switches."""
        run, test = self.train_row(name, row, data), self._ablation(name, row).test
        return self.evaluate(run, model_overrides=test) if test else run.metrics

    def ablation_table(self, name: str, table_id: str, spread_row: str | None = None, extra: tuple = (),
                       sweep: bool = False, data: dict | None = None) -> pd.DataFrame:
        """A table of the paper (`reported/<paper>.yaml`) with our rows beside it: every reported row that
        the method's `ablations` names (plus `extra` rows), trained under one protocol, and the seed
        spread of `spread_row`. Training rows follow `run_ablations` (`run_sweeps` for sweep=True);
        rows that only re-score a trained run are always shown."""
        from reidlib import reported, tables

        table = methods.get(self.config(name).method).ablations
        enabled = self.run_sweeps if sweep else self.run_ablations
        rows = [r for r in [*reported.table(self.paper, table_id).index, *extra] if r in table]
        ours = {row: self.row_metrics(name, row, data) for row in rows
                if enabled or (table[row].test and table[row].base is not None)}
        if spread_row is not None and enabled:
            label = f"{tables.SPREAD_PREFIX} of {spread_row} (max - min, seeds {self.seed}-{self.seed + 1})"
            ours[label] = self.seed_spread(self.row_config(name, spread_row, data), seeds=(self.seed + 1,))
        return self.compare(table_id, ours, self.config(name, {"data": data or {}}).data.dataset)

    def compare(self, table_id: str, metrics: dict[str, dict], dataset: str,
                more: dict[str, dict[str, dict]] | None = None) -> pd.DataFrame:
        """Our rows {name: metrics (fractions)} on `dataset` beside the paper's table `table_id`; `more`
        adds column groups {label: {name: metrics}} (e.g. the same runs on SynthOcc's other protocols;
        with `metrics` empty, only those)."""
        from reidlib import reported, tables

        reported_table = reported.table(self.paper, table_id)
        names = list(dict.fromkeys(reported_table.columns.get_level_values("metric")))
        groups = [tables.metrics_table(m, dataset, names, label=label) for label, m in (more or {}).items()]
        if metrics or not groups:
            groups.insert(0, tables.metrics_table(metrics, dataset, names))
        return tables.compare(pd.concat(groups, axis=1) if len(groups) > 1 else groups[0], reported_table)

    def seed_spread(self, cfg: RunConfig, seeds=(1,)) -> dict[str, float]:
        """max - min of each ranking metric over `cfg` trained with its own seed and with each of `seeds`:
        how far two runs of one table row differ by chance alone, the yardstick for the table's
        differences (a row that beats another by less than this has not shown anything)."""
        runs = [self.train(cfg)] + [self.train(replace(cfg, seed=s)) for s in seeds]  # stages shared
        keys = [k for k in SPREAD_METRICS if all(k in r.metrics for r in runs)]
        return {k: max(r.metrics[k] for r in runs) - min(r.metrics[k] for r in runs) for k in keys}

    def evaluate(self, run, data_overrides: dict | None = None, model_overrides: dict | None = None,
                 flip: bool | None = None) -> dict:
        """Evaluate a trained run on its own data or on another split/protocol (e.g. holistic queries),
        optionally with matching-only switches of its method config (`model_overrides`, e.g. a distance
        weight: the embeddings, extracted once per run and data, are re-scored)."""
        from reidlib.evaluation import evaluate

        model = run.load_model(self.device)
        data_cfg = replace(run.config.data, **(data_overrides or {}))
        flip = run.config.train.flip_test if flip is None else flip
        # extracted with the run's own config, whichever row asks first: the cache is shared by all rows
        extracted = self._embeddings(run, data_cfg, flip, model)
        if model_overrides:
            model.cfg = replace(model.cfg, **model_overrides)
        return evaluate(*_ranked_by(model, extracted)).as_dict()

    def _embeddings(self, run, data_cfg, flip: bool, model=None):
        """The run's test embeddings on `data_cfg`, extracted once (with `model`, else the run's)."""
        from reidlib.config import config_hash
        from reidlib.engine import extract_test

        key = (str(run.path), config_hash(data_cfg), flip)
        if key not in self._extracted:
            model = model if model is not None else run.load_model(self.device)
            self._extracted[key] = extract_test(model, self.data(data_cfg), data_cfg, flip)
        return self._extracted[key]

    def per_query(self, run, dataset=None):
        """Per-query Rank-1 hit and AP (reidlib.robustness.per_query_metrics) of a run under its own
        distance, indexed by query file name: on its own test split (embeddings shared with `evaluate`),
        or on `dataset`, e.g. a real data set whose queries got SynthOcc's occluders
        (`reidlib.data.synthocc.occlude_queries`)."""
        from reidlib.engine import extract_test
        from reidlib.robustness import per_query_metrics

        model, data_cfg, flip = run.load_model(self.device), run.config.data, run.config.train.flip_test
        if dataset is None:
            dataset, extracted = self.data(data_cfg), self._embeddings(run, data_cfg, flip, model)
        else:
            extracted = extract_test(model, dataset, data_cfg, flip)
        names = [Path(r.path).name for r in dataset.query]
        return per_query_metrics(*_ranked_by(model, extracted), names=names)

    def data(self, cfg):
        """The ReidDataset of a run config or data config (SynthOcc is generated on first use)."""
        from reidlib.data.loader import load_from_config

        return load_from_config(getattr(cfg, "data", cfg))

    def cost(self, run, batch: int = 16, memory: bool = False) -> dict:
        """Parameters, FLOPs, train s/iter (the method's own training step with the run's optimiser) and
        inference ms/image of a trained run, or of a RunConfig's untrained model (the cost is the same:
        e.g. another paper's method beside this one's without training it), measured here on a batch of
        its own training images; with `memory`, also the peak memory of a training step and the images
        per second of training and inference (the comparison's units)."""
        from reidlib.cost import cost_row
        from reidlib.data.loader import build_train_loader
        from reidlib.engine.distributed import env_context, resolve_device
        from reidlib.engine.loop import memory_format
        from reidlib.methods.base import Batch, DataInfo

        cfg = run if isinstance(run, RunConfig) else run.config
        data = self.data(cfg)
        item = next(iter(build_train_loader(data, cfg.data, seed=cfg.seed)))
        sample = Batch.from_loader(item, cfg.data)[:batch]
        if isinstance(run, RunConfig):
            model = methods.build(cfg.method, cfg.model, DataInfo.from_dataset(data, cfg.data))
            model = memory_format(model, cfg.train).to(resolve_device(self.device, env_context())).eval()
        else:
            model = run.load_model(self.device)
        sample = sample.to(device_of(model))
        row = cost_row(model, sample, cfg.train)
        if memory:
            from reidlib.cost import peak_train_memory_mb

            row.update({"train images / s": len(sample) / row["train s / iter"],
                        "inference images / s": 1e3 / row["inference ms / image"],
                        "peak train memory (MB)": peak_train_memory_mb(model, sample, cfg.train)})
        return row

    def rankings(self, runs, queries: int = 4, top: int = 8, data_overrides: dict | None = None,
                 model_overrides: dict[str, dict] | None = None):
        """Ranking-list figure of a run, or of several runs {name: run} side by side: the first query of
        `queries` identities, each followed by its top gallery images framed green (match) or red.
        `model_overrides` {name: matching-only switches} ranks one run several ways (e.g. by its parts
        alone and by all its features)."""
        from reidlib.rankings import ranking_figure

        ranked = self._ranked(runs, data_overrides, model_overrides)
        return ranking_figure(ranked, next(iter(ranked.values())).first_query_per_identity(queries), top)

    def browse_rankings(self, runs, top: int = 8, data_overrides: dict | None = None):
        """With `interactive`: a slider over every query that redraws `rankings` for it (None otherwise,
        so a cell ending in this call shows nothing in a batch run)."""
        from reidlib.rankings import ranking_browser

        return ranking_browser(self._ranked(runs, data_overrides), top) if self.interactive else None

    def _ranked(self, runs, data_overrides: dict | None, model_overrides: dict[str, dict] | None = None
                ) -> dict:
        from reidlib.rankings import rank_test

        named = runs if isinstance(runs, dict) else {"": runs}
        ranked = {}
        for name, run in named.items():  # embeddings shared with evaluate() and earlier ranking figures
            data_cfg = replace(run.config.data, **(data_overrides or {}))
            extracted = self._embeddings(run, data_cfg, run.config.train.flip_test)
            ranked[name] = rank_test(run, data_cfg, self.device, extracted, (model_overrides or {}).get(name))
        return ranked

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
        """The first image of `n` identities of a split, as the test transform gives them (a Batch that
        carries its normalisation, for figures)."""
        ds = self.data(cfg)
        first: dict[int, Any] = {}
        for rec in ds.split(split):
            first.setdefault(rec.pid, rec)
        return self._batch(list(first.values())[:n], cfg)

    def example_queries(self, cfg: RunConfig, per_kind: int = 3):
        """Queries occluded by objects, then by pedestrians (SynthOcc): (Batch, captions)."""
        from reidlib.visibility import example_queries

        picks, captions = example_queries(self.data(cfg), per_kind)
        return self._batch(picks, cfg), captions

    def explorer_data(self, runs: dict) -> dict:
        """{name: reidlib.explorer.MethodData} of trained runs: each ranked on its own test split under its
        own distance, with its queries' overlays (`explain` and Grad-CAM) computed when first shown."""
        from reidlib.explorer import MethodData, method_overlays
        from reidlib.visibility import layout_part_names

        data = {}
        for name, run in runs.items():
            model, cfg = run.load_model(self.device), run.config
            queries = self.data(cfg).query
            layout = model.part_layout()

            def load_query(q: int, cfg=cfg, queries=queries):
                return self._batch([queries[q]], cfg)

            data[name] = MethodData(self._ranked({name: run}, None)[name], method_overlays(model, load_query),
                                    part_names=layout_part_names(layout) if layout is not None else ())
        return data

    def _batch(self, records: list, cfg: RunConfig):
        from reidlib.data.loader import build_test_loader
        from reidlib.methods.base import Batch

        masks = methods.get(cfg.method).test_masks
        loader = build_test_loader(records, cfg.data, root=self.data(cfg).root, with_masks=masks)
        return Batch.from_loader(next(iter(loader)), cfg.data)

    def explain(self, run, batch, hook: str = "explain") -> dict:
        """`explain` (or another hook returning named tensors, e.g. RGANet's `assessment`) of a trained run
        on a Batch (tensors on the CPU)."""
        model = run.load_model(self.device)
        return {k: v.float().cpu() for k, v in getattr(model, hook)(batch.to(device_of(model))).items()}

    def head_correlation(self, run, batch):
        """Cross-correlation of the heads' attention maps (`explain`'s head_attention) per image of a Batch,
        [N, H, H] (reidlib.attention; DPM's Fig. 3(a) and Fig. 4)."""
        from reidlib.attention import head_correlation

        return head_correlation(self.explain(run, batch)["head_attention"])

    def similarity_gap(self, run, batch):
        """Per block of a ViT run, the similarity gap of its most dissimilar patch tokens over a Batch,
        [blocks] (reidlib.attention; DPM's Fig. 3(b))."""
        from reidlib.attention import similarity_gap

        model = run.load_model(self.device)
        return similarity_gap([t.float().cpu() for t in model.block_tokens(batch.to(device_of(model)))])

    def score_vs_visibility(self, run) -> pd.DataFrame:
        """Per (query, part): the run's part score, the part's true visible fraction, the occluder kind
        (reidlib.visibility; SynthOcc only)."""
        from reidlib.visibility import score_vs_visibility

        return score_vs_visibility(run.load_model(self.device), self.data(run.config), run.config.data)

    def part_map_iou(self, run) -> pd.DataFrame:
        """Per (query, part): IoU of the run's part maps with the labelled parts, and a fixed template's
        (reidlib.visibility; SynthOcc only)."""
        from reidlib.visibility import part_map_iou

        return part_map_iou(run.load_model(self.device), self.data(run.config), run.config.data)

    def extras_vs_occlusion(self, run, key: str, twin: str = "holistic") -> pd.DataFrame:
        """Per query: how the run's per-image vector `key` of `Embedding.extras` (DPM: the prototype mask)
        differs from its occluder-free twin's, beside the occluded fraction (reidlib.visibility.vector_shift;
        SynthOcc only). The embeddings are the evaluation's (cached)."""
        from reidlib.visibility import query_metadata, vector_shift

        data, flip = run.config.data, run.config.train.flip_test
        vectors = {}
        for protocol in (data.protocol, twin):
            cfg = replace(data, protocol=protocol)
            (emb, _, _), _ = self._embeddings(run, cfg, flip)
            if key not in emb.extras:
                raise ValueError(f"{run.config.method}'s embeddings carry no {key!r} "
                                 f"(their extras: {list(emb.extras)})")
            names = [Path(r.path).name for r in self.data(cfg).query]
            vectors[protocol] = dict(zip(names, emb.extras[key], strict=True))
        return vector_shift(vectors[data.protocol], vectors[twin], query_metadata(self.data(data)))

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

    def scaling(self, name: str) -> pd.DataFrame:
        """The paper's settings beside this profile's (docs/design.md: "the scaling stated in one table")."""
        paper, here = profile_config(name, "paper"), profile_config(name, self.profile)

        def pick(cfg: dict, path: tuple[str, str]) -> Any:
            return (cfg.get(path[0]) or {}).get(path[1], "-")

        rows = {name: {"paper": pick(paper, path), self.profile: pick(here, path)}
                for name, path in SCALING_FIELDS.items()}
        return pd.DataFrame(rows).T.astype(str).rename_axis("setting")

    # ----------------------------------------------------------------------------- tables, figures
    def table(self, df: pd.DataFrame, name: str, caption: str | None = None):
        """Export `df` as CSV/Markdown/LaTeX under the results folder; return a Styler to display."""
        from reidlib import tables

        paths = tables.export(df, safe_path(self.results, plain_name(name, "table name")), caption=caption)
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
        side = self._side
        side["headline"] = {**side.get("headline", {}), **{k: float(v) for k, v in metrics.items()}}
        atomic_write_json(self.results / "metrics.json", side)

    def _register(self, kind: str, name: str, paths: list[str]) -> None:
        side = self._side
        side.setdefault(kind, {})[name] = paths
        atomic_write_json(self.results / "metrics.json", side)
