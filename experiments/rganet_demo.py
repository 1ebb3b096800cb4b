"""How the RGANet notebook's demo schedule was chosen: re-measures the numbers quoted in the demo sections of
reidlib/configs/rganet.yaml and rganet_prompt.yaml, in notebooks/05_rganet.ipynb and in the README
(SynthOcc demo, seed 0; runs cached under --out-dir, default /tmp/rganet_demo, so a second call only prints).

    python experiments/rganet_demo.py [--sections schedule prompt tables weights] [--out-dir DIR]

"The trunk" is the CLIP baseline demo run (clip_baseline.yaml demo: the hybrid CLIP, 4 epochs) every
RGANet run starts from through the prompt stage. Lines give SynthOcc (occluded) mAP / Rank-1 in percent
and the run's wall time (training and its final evaluation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from demo_backbones import merge, run_sections, schedule  # the same override builders (this folder)

from reidlib.data.loader import build_test_loader
from reidlib.engine.inference import device_of
from reidlib.methods.base import Batch
from reidlib.methods.rganet import RGANet
from reidlib.workbook import Workbook


def report(label: str, run) -> None:
    m = run.metrics
    print(f"{label:<70} | mAP {100 * m['mAP']:5.1f} | Rank-1 {100 * m['rank1']:5.1f} | "
          f"{m['wall_time_s']:4.0f} s", flush=True)


def row(wb: Workbook, name: str, steps: int, lr: float, model: dict | None = None):
    """RGANet's ablation row `name` for `steps` steps at a constant AdamW `lr` from the prompt stage."""
    overrides = merge(schedule(1, lr, [], warmup=0, max_iters_per_epoch=steps, scheduler="multistep"),
                      {"model": {**RGANet.ablations[name].model, **(model or {})}})
    return wb.train(wb.config("rganet", overrides, tag=name))


def schedule_section(wb: Workbook) -> None:
    """The rows' schedule from the trunk, and the global feature: GAP of the projected patch tokens
    (Sec. III-A) against the projected class token the trunk was trained on."""
    report("trunk: CLIP baseline demo (4 ep)", wb.train(wb.config("clip_baseline", tag="trunk")))
    for steps, lr in ((10, 3e-4), (10, 1e-4), (20, 1e-4)):
        for pool in ("gap", "cls"):
            for name in ("Baseline", "RGM + DAI + IAI"):
                run = row(wb, name, steps, lr, {"global_pool": pool})
                report(f"{name}, F_g {pool}, {steps} steps at {lr:g}", run)


def region_agreement(wb: Workbook, run) -> str:
    df = wb.part_map_iou(run).groupby("part")[["iou", "template iou"]].mean()
    return " ".join(f"{p} {r['iou']:.2f}/{r['template iou']:.2f}" for p, r in df.iterrows())


def probes(wb: Workbook, run, steps: int = 300) -> None:
    """What the prompt stage's frozen features allow at the feature grid: N+1 free prototypes under the
    same cosine rule (Eq. 1 with any p_k), and a linear classifier with biases, fitted on 1,200 training
    images' cells and scored on the queries (IoU per class: background, then the regions)."""
    model, cfg = run.load_model(wb.device), run.config
    data, device = wb.data(cfg), device_of(model)

    def cells(records):
        feats, labels = [], []
        for item in build_test_loader(records, cfg.data, root=data.root, with_masks=True):
            batch = Batch.from_loader(item, cfg.data).to(device)
            with torch.no_grad():
                fmap, _ = model.feature_map(batch)
            feats.append(fmap.flatten(2).transpose(1, 2).reshape(-1, fmap.shape[1]))
            labels.append(model.targets(batch.masks, tuple(fmap.shape[-2:])).flatten())
        return torch.cat(feats), torch.cat(labels)

    (x, y), (xq, yq) = cells(data.train[:1200]), cells(data.query)
    classes = 1 + model.num_regions
    print(f"training cells per class (background first): {torch.bincount(y, minlength=classes).tolist()}")
    torch.manual_seed(0)
    protos = torch.nn.Parameter(torch.randn(classes, x.shape[1]))
    linear = torch.nn.Linear(x.shape[1], classes)
    def cosine_rule(f):  # Eq. (1)'s logits with free prototypes in place of the text's
        return model.cfg.gamma * F.normalize(f, dim=1) @ F.normalize(protos, dim=1).t()

    fits = {"free prototypes": (cosine_rule, [protos]), "linear probe": (linear, list(linear.parameters()))}
    with torch.no_grad():
        fits_pred = {"learnt prompt": model.region_logits(xq.t()[None, :, :, None])[0, :, :, 0].t().argmax(1)}
    for label, (fn, params) in fits.items():
        opt = torch.optim.Adam(params, 1e-2)
        for _ in range(steps):
            loss = F.cross_entropy(fn(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            fits_pred[label] = fn(xq).argmax(1)
    for label, pred in fits_pred.items():
        ious = [((pred == k) & (yq == k)).sum().item() / max(((pred == k) | (yq == k)).sum().item(), 1)
                for k in range(classes)]
        print(f"{label:<16} IoU per class: " + " ".join(f"{v:.2f}" for v in ious), flush=True)


def prompt_section(wb: Workbook) -> None:
    """The prompt stage: region IoU with the labelled parts / a fixed template's, per region, for the
    pseudo-label rule, learning rate and epochs; then what the frozen features allow (probes)."""
    variants = {"demo (seg_min_body 0.2, 2 ep, lr 3e-3)": {},
                "argmax labels (seg_min_body null)": {"model": {"seg_min_body": None}},
                "4 epochs": {"train": {"epochs": 4}},
                "lr 1e-2": {"train": {"lr": 1e-2}},
                "lr 5e-4": {"train": {"lr": 5e-4}}}
    for label, overrides in variants.items():
        run = wb.train(wb.config("rganet_prompt", overrides, tag=label))
        print(f"{label:<45} | {region_agreement(wb, run)} | {run.metrics['wall_time_s']:3.0f} s", flush=True)
    probes(wb, wb.train(wb.config("rganet_prompt")))


def tables_section(wb: Workbook) -> None:
    """The notebook's numbers as the demo profile trains them: Tables V and VI (mAP / Rank-1 %, seed
    spreads, each step against them), the regions' IoU, the confidence's ROC AUC, the Fig. 4 scores."""
    from reidlib import tables
    from reidlib.visibility import score_auc

    nb = Workbook("rganet", profile="demo", out_dir=wb.out_dir)
    spreads = {"Table V": "RGM + DAI + IAI", "Table VI": '"[Learnable Tokens] + [CLASS]"'}
    for table_id, spread in spreads.items():
        df = nb.ablation_table("rganet", table_id, spread_row=spread)
        ours = df.xs("reproduced", level="source")["SynthOcc"]
        print(f"{table_id}:\n{ours.round(1).to_string()}\n{tables.separation(df).to_string()}", flush=True)
    rganet, prompt = nb.train_row("rganet", "RGM + DAI + IAI"), nb.train(nb.config("rganet_prompt"))
    queries = nb.samples(rganet.config, n=64)
    for label, run in {"prompt stage": prompt, "RGANet": rganet}.items():
        model = run.load_model(nb.device)
        with torch.no_grad():
            maps = model.region_logits(model.feature_map(queries.to(device_of(model)))[0]).softmax(1)
        print(f"region IoU / template IoU, {label}: {region_agreement(nb, run)}; mean S_k over 64 queries "
              f"(background first): {' '.join(f'{v:.2f}' for v in maps.mean((0, 2, 3)).tolist())}")
    print(score_auc(nb.score_vs_visibility(rganet)).round(2).to_string())
    examples, captions = nb.example_queries(rganet.config)
    scores = nb.explain(rganet, examples, hook="assessment")
    print("Fig. 4 queries, mean over regions: " + ", ".join(
        f"{key} {v.mean():.2f} (range {v.min():.2f}-{v.max():.2f})" for key, v in scores.items()))


def weights_section(wb: Workbook) -> None:
    """Table V's rows without RAM count each region's ID loss fully (w_j = 1), its RAM rows by a softmax
    that sums to 1 over the regions: the same rows with w_j = 1/N separate the scores' effect from the
    loss's scale."""
    nb = Workbook("rganet", profile="demo", out_dir=wb.out_dir)
    for name in ("Fixed-stripe", "Fixed-stripe, w = 1/N", "Fixed-stripe + DAI", "RGM", "RGM, w = 1/N",
                 "RGM + DAI"):
        report(f"{name} (the notebook's run)", nb.train_row("rganet", name))


SECTIONS = {"schedule": schedule_section, "prompt": prompt_section, "tables": tables_section,
            "weights": weights_section}


if __name__ == "__main__":
    run_sections(__doc__, SECTIONS, "rganet_demo")
