"""How the DPM notebook's demo schedule was chosen: re-measures the numbers quoted in the demo section of
reidlib/configs/dpm.yaml, in notebooks/04_dpm.ipynb and in the README (SynthOcc demo, seed 0 unless the
line says otherwise; runs cached under --out-dir, default /tmp/dpm_demo, so a second call only prints).

    python experiments/dpm_demo.py [--sections trunk scratch tables ...] [--out-dir DIR]

Each line: the variant, SynthOcc (occluded) mAP / Rank-1 in percent, the heads' diversity in the last block
(mean off-diagonal cross-correlation of their attention maps over the test queries, reidlib.attention;
lower = more diverse) and the run's wall time (training and its final evaluation). "The trunk" is
notebook 00's ViT baseline demo run (vit_baseline.yaml demo: the hybrid ViT, 4 epochs).
"""

from __future__ import annotations

from demo_backbones import merge, run_sections, schedule  # the same override builders (this folder)

from reidlib.attention import head_correlation, head_diversity
from reidlib.methods.dpm import ABLATIONS
from reidlib.workbook import Workbook


def diversity(wb: Workbook, run) -> float:
    """Mean off-diagonal head cross-correlation of the run's DPM-style attention over 64 test queries."""
    batch = wb.samples(run.config, n=64)
    model = run.load_model(wb.device)
    return head_diversity(head_correlation(model.explain(batch)["head_attention"])).item()


def report(wb: Workbook, label: str, run) -> None:
    m = run.metrics
    line = f"{label:<60} | mAP {100 * m['mAP']:5.1f} | Rank-1 {100 * m['rank1']:5.1f}"
    if run.config.method == "dpm":
        line += f" | head corr {diversity(wb, run):.2f}"
    if run.config.method == "dpm" and run.config.model["dpm"]:
        plain = wb.evaluate(run, model_overrides={"test_mask": False})
        line += f" | w/o test mask mAP {100 * plain['mAP']:5.1f}"
    print(f"{line} | {m['wall_time_s']:4.0f} s", flush=True)  # training and its final evaluation


def row(wb: Workbook, name: str, trunk, steps: int | None, lr: float, seed: int = 0,
        model: dict | None = None, epochs: int = 1):
    """DPM's ablation row `name` for `steps` steps per epoch (None: whole epochs) at a constant `lr` from
    the run `trunk` (None: the hybrid's ImageNet stem, random blocks), with `model` overrides."""
    init = None if trunk is None else f"{trunk.config.method}/{trunk.key}"
    overrides = merge(schedule(epochs, lr, [], warmup=0, max_iters_per_epoch=steps, scheduler="multistep"),
                      {"model": {**ABLATIONS[name].model, **(model or {})}, "seed": seed, "init_from": init})
    return wb.train(wb.config("dpm", overrides, tag=name))


def trunk_section(wb: Workbook) -> None:
    """Notebook 00's ViT baseline as a shared trunk, then Table 3's first and last rows for a few steps
    at a constant AdamW learning rate."""
    trunk = wb.train(wb.config("vit_baseline", tag="trunk"))
    report(wb, "trunk: ViT baseline demo (4 ep)", trunk)
    grid = ((30, 2e-4), (30, 5e-4), (30, 1e-3), (60, 5e-4), (30, 1e-4), (20, 1e-4), (20, 2e-4), (20, 3e-4),
            (20, 5e-4))
    for steps, lr in grid:
        for name in ("baseline", "+DPM+HR+HEM"):
            report(wb, f"{name}, {steps} steps at {lr:g} from the trunk", row(wb, name, trunk, steps, lr))


def scratch_section(wb: Workbook) -> None:
    """DPM and its baseline trained like the trunk (4 epochs, AdamW 2e-3 cosine) from the hybrid's init."""
    for name in ("baseline", "+DPM+HR+HEM"):
        overrides = {"model": ABLATIONS[name].model, "init_from": None}
        run = wb.train(wb.config("dpm", merge(schedule(4, 2e-3, [], warmup=1, max_iters_per_epoch=None),
                                              {"train": {"scheduler": "cosine"}}, overrides), tag=name))
        report(wb, f"{name}, 4 ep from the hybrid's init", run)


def tables_section(wb: Workbook) -> None:
    """The notebook's numbers as the demo profile trains them: Tables 3-5 (mAP / Rank-1 %, with the seed
    spread of DPM) and each step against it, the heads' cross-correlation without and with HEM, and how
    far the prototype mask moves from its occluder-free twin's against the occluded fraction."""
    import pandas as pd

    from reidlib import tables

    nb = Workbook("dpm", profile="demo", out_dir=wb.out_dir)
    for table_id in ("Table 3", "Table 4", "Table 5"):
        df = nb.ablation_table("dpm", table_id, spread_row="+DPM+HR+HEM")
        ours = df.xs("reproduced", level="source")["SynthOcc"]
        print(f"{table_id}:\n{ours.round(1).to_string()}\n{tables.separation(df).to_string()}", flush=True)
    for row in ("baseline", "+DPM+HR", "+DPM+HR+HEM"):
        report(nb, f"{row} (the notebook's run)", nb.train_row("dpm", row))
    shift = nb.extras_vs_occlusion(nb.train_row("dpm", "+DPM+HR+HEM"), "mask")
    bins = pd.cut(shift["occluded fraction"], [-0.01, 0.0, 0.2, 0.4, 0.6, 1.0])
    print(shift.groupby(bins, observed=True)[["cosine to twin", "mean abs change", "mean"]].mean().round(4))
    print(f"correlation of the occluded fraction with the mask's change: "
          f"{shift['occluded fraction'].corr(shift['mean abs change']):.2f}")


SECTIONS = {"trunk": trunk_section, "scratch": scratch_section, "tables": tables_section}


if __name__ == "__main__":
    run_sections(__doc__, SECTIONS, "dpm_demo")
