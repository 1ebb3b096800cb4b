"""BPSEMA-ReID (reidlib/methods/bpsema.py): the refinement module (Eqs. 7-14), both readings of EMA
attention (Eq. 4 / [34]), the mean combination of part distances (Eqs. 15-17), Table II's rows, the
profiles and a ci engine run."""

from __future__ import annotations

import math

import pytest
import torch
from parsing_methods import IMAGE, batch, ci_engine_run, one_thread  # noqa: F401 (one_thread: autouse)
from parsing_methods import gen as _gen
from torch import nn

from reidlib import reported
from reidlib.config import ConfigError, RunConfig, from_dict, replace
from reidlib.data.masks import part_names
from reidlib.methods import build
from reidlib.methods.base import DataInfo, check_explain
from reidlib.methods.bpbreid import part_averaged_distance, part_averaged_triplet_loss
from reidlib.methods.bpsema import (
    ABLATIONS,
    BPSEMAConfig,
    DynamicFeatureRefinement,
    EfficientMultiScaleAttention,
    FeatureMovingAverage,
)

PARTS = tuple(part_names("five"))
TINY = {"backbone": "resnet_tiny", "dim_reduce": 16}


def info() -> DataInfo:
    return DataInfo(num_classes=4, image_size=IMAGE, part_names=PARTS)


# ------------------------------------------------------------------------------------------ Eqs. (7)-(14)
@pytest.mark.parametrize(("cin", "cout"), [(32, 16), (16, 16)])
def test_refinement_keeps_the_map_and_sets_the_width(cin, cout):
    module = DynamicFeatureRefinement(cin, cout).eval()
    out = module(torch.randn(3, cin, 6, 3, generator=_gen(1)))
    assert out.shape == (3, cout, 6, 3)
    # Eq. (14) needs x and x_SE of one width: a 1x1 projection when the widths differ, else the identity
    assert isinstance(module.shortcut, nn.Identity) == (cin == cout)


def test_se_weights_are_per_channel_and_in_zero_one():
    module = DynamicFeatureRefinement(8, 32, se_reduction=4).eval()
    refined = torch.relu(torch.randn(5, 32, 6, 3, generator=_gen(2)) * 10)
    s = module.channel_weights(refined)                                   # Eq. (12)
    assert s.shape == (5, 32, 1, 1) and bool(((s > 0) & (s < 1)).all())
    assert module.se.fc1.out_channels == 8                               # C / r hidden units


def test_zeroed_branch_leaves_the_shortcut():
    """With BN's scale and shift at 0 the branch gives x'' = 0, so x_out = shortcut(x) (Eq. 14)."""
    x = torch.randn(2, 16, 6, 3, generator=_gen(3))
    module = DynamicFeatureRefinement(16, 16).eval()
    with torch.no_grad():
        module.bn.weight.zero_()
        module.bn.bias.zero_()
    torch.testing.assert_close(module(x), x)
    projected = DynamicFeatureRefinement(32, 16).eval()
    with torch.no_grad():
        projected.bn.weight.zero_()
        projected.bn.bias.zero_()
    y = torch.randn(2, 32, 6, 3, generator=_gen(4))
    torch.testing.assert_close(projected(y), projected.shortcut(y))


def test_d1_is_conv_bn_relu():
    """Table II's D1: no residual, no SE: BPBreID's reduction of the map before pooling."""
    module = DynamicFeatureRefinement(16, 8, residual=False, se=False).eval()
    x = torch.randn(2, 16, 6, 3, generator=_gen(5))
    torch.testing.assert_close(module(x), torch.relu(module.bn(module.conv(x))))
    assert module.se is None and module.shortcut is None


# ------------------------------------------------------------------------------------------ EMA
def test_multiscale_attention_reweights_positions_within_groups():
    ema = EfficientMultiScaleAttention(64, groups=32).eval()
    x = torch.randn(2, 64, 6, 3, generator=_gen(6))
    out = ema(x)
    assert out.shape == x.shape and ema.groups == 32
    ratio = out / x                                   # a sigmoid weight per (image, group, position)
    assert bool(((ratio > 0) & (ratio < 1)).all())
    per_group = ratio.view(2, 32, 2, 6, 3)
    torch.testing.assert_close(per_group[:, :, 0], per_group[:, :, 1])  # shared by the group's channels
    # each image is attended on its own: changing image 1 leaves image 0's output alone
    x2 = x.clone()
    x2[1] = torch.randn(64, 6, 3, generator=_gen(7))
    torch.testing.assert_close(ema(x2)[0], out[0])
    assert EfficientMultiScaleAttention(48, groups=32).groups == 24   # the largest divisor <= 32


def test_moving_average_is_eq_4_over_training_batches():
    ema = FeatureMovingAverage(decay=0.75)
    first = torch.randn(4, 3, 2, 2, generator=_gen(8))
    second = torch.randn(4, 3, 2, 2, generator=_gen(9))
    torch.testing.assert_close(ema.eval()(first), first)  # no history yet: F_ema = F
    out1 = ema.train()(first)                           # the first batch starts the average
    torch.testing.assert_close(out1, 0.75 * first + 0.25 * first.mean(0))
    running = 0.75 * first.mean(0) + 0.25 * first.mean(0)
    torch.testing.assert_close(ema.running, running)
    out2 = ema(second)                                  # F_ema = alpha F + (1 - alpha) F_ema_prev
    torch.testing.assert_close(out2, 0.75 * second + 0.25 * running)
    running = 0.75 * second.mean(0) + 0.25 * running
    ema.eval()
    torch.testing.assert_close(ema(first), 0.75 * first + 0.25 * running)
    torch.testing.assert_close(ema.running, running)   # test time reads, never writes
    restored = FeatureMovingAverage(decay=0.75)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.eval()(first), ema(first))


@pytest.mark.parametrize("kind", ["multiscale", "moving_average", "none"])
def test_ema_switch_builds_a_working_model(kind):
    model = build("bpsema", {**TINY, "ema": kind}, info()).train()
    images = torch.randn(4, 3, *IMAGE, generator=_gen(10))
    out = model._features(images)
    assert out["parts"].shape == (4, len(PARTS), 16)
    assert out["pixel_logits"].shape == (4, len(PARTS) + 1, 6, 3)
    assert (model.ema is None) == (kind == "none")


# ------------------------------------------------------------------------------------------ Eqs. (15)-(17)
def test_mean_part_distance_and_its_triplets_against_a_direct_loop():
    parts = torch.randn(6, 3, 4, generator=_gen(11))
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    dist, _ = part_averaged_distance(parts)
    margin = 0.3
    hard, soft = 0.0, 0.0
    for i in range(6):
        row = [sum(float((parts[i, k] - parts[j, k]).norm()) for k in range(3)) / 3 for j in range(6)]
        for j in range(6):
            assert dist[i, j].item() == pytest.approx(row[j], rel=1e-5)          # Eq. (15), "mean"
        positive = max(row[j] for j in range(6) if pids[j] == pids[i])
        negative = min(row[j] for j in range(6) if pids[j] != pids[i])
        hard += max(positive - negative + margin, 0.0) / 6                     # Eq. (16)
        soft += math.log1p(math.exp(positive - negative)) / 6                  # Eq. (17)
    assert part_averaged_triplet_loss(parts, pids, margin).item() == pytest.approx(hard, rel=1e-5)
    assert part_averaged_triplet_loss(parts, pids, None).item() == pytest.approx(soft, rel=1e-5)


# ------------------------------------------------------------------------------ Table II, profiles
def test_table_ii_rows_switch_the_modules_in_order():
    rows = reported.table("bpsema_reid", "Table II").index
    assert list(rows) == ["D1", "D2", "D3", "D4"] and all(r in ABLATIONS for r in rows)
    models = {row: build("bpsema", {**TINY, **ABLATIONS[row].model}, info()) for row in rows}
    assert models["D1"].map_reduce.shortcut is None and models["D1"].map_reduce.se is None
    assert models["D2"].map_reduce.shortcut is not None and models["D2"].map_reduce.se is None
    assert models["D3"].map_reduce.se is not None and models["D3"].ema is None
    assert isinstance(models["D4"].ema, EfficientMultiScaleAttention)


def test_profiles_and_refusals():
    paper = from_dict(BPSEMAConfig, RunConfig.from_profile("bpsema", "paper").model)
    assert (paper.dim_reduce, paper.dim_reduce_at, paper.triplet_margin) == (512, "before_pooling", 0.3)
    cfg = RunConfig.from_profile("bpsema", "paper")
    data = cfg.data
    assert (data.batch_p, data.batch_k, data.height, data.mask_grouping) == (16, 4, 384, "eight")
    assert cfg.train.milestones == [40, 70] and cfg.train.epochs == 120
    for profile in ("ci", "demo"):
        assert RunConfig.from_profile("bpsema", profile).data.mask_grouping == "five"
    with pytest.raises(ConfigError, match="before_pooling"):
        build("bpsema", {**TINY, "dim_reduce_at": "after_pooling"}, info())
    with pytest.raises(ConfigError, match="ema"):
        build("bpsema", {**TINY, "ema": "exponential"}, info())


def test_fig9_part_features_alone_is_a_matching_switch():
    model = build("bpsema", dict(TINY), info()).eval()
    images = torch.randn(6, 3, *IMAGE, generator=_gen(12))
    emb = model.embed(batch(images))
    both = model.distance(emb, emb)
    model.cfg = replace(model.cfg, test_entries="parts")
    parts_only = model.distance(emb, emb)
    assert not torch.equal(both, parts_only)
    model.cfg = replace(model.cfg, test_entries="all", test_embeddings=("parts",))
    again = build("bpsema", {**TINY, "test_embeddings": ("parts",)}, info()).eval()
    again.load_state_dict(model.state_dict())
    e2 = again.embed(batch(images))
    torch.testing.assert_close(again.distance(e2, e2), parts_only)
    again.cfg = replace(again.cfg, test_entries="holistic")      # nothing holistic was embedded
    with pytest.raises(ValueError, match="keeps none of the embedded entries"):
        again.distance(e2, e2)


# ------------------------------------------------------------------------------------------ engine
def test_ci_run_through_the_engine_on_synthocc_with_parsing_labels(tmp_path):
    run = ci_engine_run("bpsema", tmp_path)
    terms = next(r for r in run.history if r["kind"] == "epoch")["terms"]
    assert {"id_global", "id_foreground", "id_concat", "triplet_parts", "pixel"} <= set(terms)
    assert all(math.isfinite(v) for v in terms.values())
    model = run.load_model().eval()
    shown = model.explain(batch(torch.randn(2, 3, *IMAGE, generator=_gen(13))))
    check_explain(shown, 2)
    assert shown["part_maps"].shape == (2, len(PARTS), 6, 3)
