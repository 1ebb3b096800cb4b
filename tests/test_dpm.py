"""DPM (Tan et al., ACM MM 2022): the HMG's tapped blocks and gate (Eq. 3), the masked prototypes of Table 5
(Eq. 4), the orthonormal loss (Eq. 6), ArcFace (Eq. 7), the two-step update, the query-mask distance, the
rows of Tables 3-5 and Fig. 5, the profiles and a ci engine run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from parsing_methods import one_thread  # noqa: F401  (autouse: one thread for tiny tensors)

from reidlib import reported
from reidlib.config import ConfigError, RunConfig, from_dict, replace
from reidlib.engine.step import StepContext
from reidlib.methods import build
from reidlib.methods.base import Batch, DataInfo, Embedding, check_explain
from reidlib.methods.dpm import (
    ABLATIONS,
    DPMConfig,
    HierarchicalMaskGenerator,
    masked_cosine,
    orthonormal_loss,
    tapped_blocks,
)
from reidlib.models.heads import angular_margin_logits

IMAGE = (64, 32)
TINY = {"backbone": "vit_tiny_ci", "pretrained": None, "patch_stride": 12}   # 4 blocks, 5 x 2 patches


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def info(num_classes: int = 4) -> DataInfo:
    return DataInfo(num_classes=num_classes, num_cameras=2, image_size=IMAGE)


def tiny(**model) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("dpm", {**TINY, **model}, info())


def batch(n: int = 8, seed: int = 1) -> Batch:
    return Batch(images=torch.randn(n, 3, *IMAGE, generator=_gen(seed)), camids=torch.arange(n) % 2,
                 pids=torch.arange(n) // 2 % 4)


# ------------------------------------------------------------------------------------------ HMG, Eq. (3)
def test_taps_at_the_papers_fractions_of_depth():
    assert tapped_blocks(12) == [2, 4, 10, 12]                      # Sec. 3.2
    assert tapped_blocks(4) == [1, 2, 3, 4]                         # ci: 0.67, 1.33 -> 1, 2 (distinct)
    assert tapped_blocks(6) == [1, 2, 5, 6]
    assert tapped_blocks(24) == [4, 8, 20, 24]
    assert tapped_blocks(4, [12]) == [4]
    with pytest.raises(ConfigError, match="distinct"):
        tapped_blocks(3)
    twelve = build("dpm", {**TINY, "backbone": "vit_small_demo", "patch_stride": 16}, info())
    assert twelve.vit.num_blocks == 12 and twelve.hmg_taps == [2, 4, 10, 12]
    assert twelve.mask_generator.convs[0][0].in_channels == 4 * twelve.vit.embed_dim
    assert tiny().hmg_taps == [1, 2, 3, 4]


def test_gate_keeps_a_closed_blocks_tokens_out_of_the_mask():
    model = tiny(hmg_gate=[True, False, True, True], hmg_zero_init=False).eval()
    assert model.hmg_taps == [1, 3, 4]
    assert model.mask_generator.convs[0][0].in_channels == 3 * model.vit.embed_dim
    b = batch(4)
    with torch.no_grad():
        outs = model.vit(b.images, b.camids, return_all=True)
        mask = model.mask_from_blocks(outs)
        assert mask.shape == (4, model.vit.embed_dim) and 0 < mask.min() and mask.max() < 1
        for block, gated_in in ((2, False), (1, True), (4, True)):
            changed = list(outs)
            changed[block - 1] = outs[block - 1] + torch.randn(outs[0].shape, generator=_gen(block))
            assert torch.equal(model.mask_from_blocks(changed), mask) != gated_in, block
    last_only = tiny(**ABLATIONS["+DPM"].model)                     # Table 3's +DPM: no HR
    assert last_only.hmg_taps == [4]
    assert last_only.mask_generator.convs[0][0].in_channels == last_only.vit.embed_dim


def test_zero_initialised_generator_starts_at_one_half_and_pools_as_configured():
    with torch.no_grad():
        assert torch.allclose(tiny().eval().encode(batch(2))["mask"], torch.full((2, 48), 0.5))
        maps = [torch.randn(2, 8, 12, 6, generator=_gen(9)) for _ in range(2)]   # a grid that stays > 1 x 1
        torch.manual_seed(0)
        hmg = HierarchicalMaskGenerator(8, 2, "max", zero_init=False).eval()
        x = hmg.convs[0](torch.cat(maps, 1))
        assert x.shape == (2, 16, 12, 6)
        x = hmg.convs[2](F.max_pool2d(hmg.convs[1](F.max_pool2d(x, 2)), 2))        # code: 2 x 2 max pooling
        assert x.shape == (2, 8, 3, 1)
        for pool, pooled in (("max", x.amax((2, 3))), ("avg", x.mean((2, 3)))):   # code / Eq. (3)
            hmg.pool = pool
            torch.testing.assert_close(hmg(maps), torch.sigmoid(hmg.fc(pooled)))
        assert not torch.allclose(x.amax((2, 3)), x.mean((2, 3)))


# ------------------------------------------------------------------------------------------ Eqs. (4)-(7)
def test_orthonormal_loss_known_values():
    eye = torch.eye(3, 5).unsqueeze(0)                               # orthonormal head maps
    assert orthonormal_loss(eye).item() == 0.0
    assert orthonormal_loss(eye * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1)).item() == pytest.approx(0.0)
    same = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])                  # two identical heads: off-diagonals 1
    assert orthonormal_loss(same).item() == pytest.approx(2.0)
    tilted = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])                # cos 45 degrees: 2 x 0.5
    assert orthonormal_loss(tilted).item() == pytest.approx(1.0)
    assert orthonormal_loss(torch.cat([eye[:, :2, :2], same])).item() == pytest.approx(1.0)  # batch mean


@pytest.mark.parametrize(("mask_feature", "before_norm"), [(False, False), (True, False), (False, True),
                                                           (True, True)], ids=["P_n", "P_n+F_n", "P", "P+F"])
def test_masked_prototype_matches_eq_4_per_table_5_variant(mask_feature, before_norm):
    f = torch.randn(3, 6, generator=_gen(2))
    w = torch.randn(5, 6, generator=_gen(3))
    m = torch.rand(3, 6, generator=_gen(4))
    expected = torch.empty(3, 5)
    for i in range(3):
        if before_norm:                                             # P / F: mask, then the cosine
            w_mp = w * m[i]                                         # Eq. (4), row-extended mask
            fi = f[i] * m[i] if mask_feature else f[i]
            expected[i] = F.cosine_similarity(fi.expand(5, 6), w_mp, dim=1)
        else:                                                       # P_n / F_n: after the L2 normalisation
            w_mp = F.normalize(w, dim=1) * m[i]
            fi = F.normalize(f[i], dim=0) * (m[i] if mask_feature else 1)
            expected[i] = w_mp @ fi
    torch.testing.assert_close(masked_cosine(f, w, m, mask_feature, before_norm), expected)


def test_forward_classifies_against_the_masked_prototypes():
    model = tiny(hmg_zero_init=False).train()
    out = model(batch())
    w = model.prototypes
    torch.testing.assert_close(out["mask_scores"], masked_cosine(out["bn_feat"], w, out["mask"]))
    torch.testing.assert_close(out["scores"], out["bn_feat"] @ w.t())   # Cls = S: the same prototypes
    soft = tiny(masked_classifier="softmax", hmg_zero_init=False).train()
    out = soft(batch())
    pairs = zip(out["bn_feat"], out["mask"], strict=True)
    direct = torch.stack([(soft.prototypes * m) @ f for f, m in pairs])   # <f_i, W_p (.) M_i>
    torch.testing.assert_close(out["mask_scores"], direct)


def test_arcface_logits_against_the_direct_formula():
    cos = torch.tensor([[0.9, -0.2, 0.1], [-0.95, 0.3, 0.5]])
    labels = torch.tensor([0, 0])
    s, m = 30.0, 0.5
    logits = angular_margin_logits(cos, labels, s, m)
    assert logits[0, 0].item() == pytest.approx(s * math.cos(math.acos(0.9) + m), rel=1e-5)
    # theta + m > pi: ArcFace's fallback cos(theta) - m sin(m)
    assert logits[1, 0].item() == pytest.approx(s * (-0.95 - m * math.sin(m)), rel=1e-5)
    torch.testing.assert_close(logits[:, 1:], s * cos[:, 1:])


def test_loss_is_eq_8():
    model = tiny(hmg_zero_init=False).train()
    b = batch()
    out = model(b)
    terms = model.loss(out, b)
    assert set(terms) == {"id", "mask_id", "hem", "triplet"}
    torch.testing.assert_close(terms["id"], 0.5 * F.cross_entropy(out["scores"], b.pids))
    arc = angular_margin_logits(out["mask_scores"], b.pids, 30.0, 0.5)
    torch.testing.assert_close(terms["mask_id"], 0.5 * F.cross_entropy(arc, b.pids))
    torch.testing.assert_close(terms["hem"], 0.1 * orthonormal_loss(out["cls_scores"].softmax(-1)))
    base = tiny(**ABLATIONS["baseline"].model).train()
    out = base(b)
    assert base.mask_generator is None and "mask" not in out
    assert set(base.loss(out, b)) == {"id", "triplet"}


# ------------------------------------------------------------------------------------------ two steps
def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}


def test_two_step_update_changes_only_the_intended_parameters():
    model = tiny(hmg_zero_init=False, drop_path=0.0).train()
    optimizer = torch.optim.SGD(model.param_groups(0.01), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = StepContext(method=model, forward=model, device=torch.device("cpu"), amp=False, grad_clip=None,
                      epoch=1, epochs=1, step=1, steps=1)
    hmg = {n for n in _snapshot(model) if n.startswith("mask_generator.")}
    rest = set(_snapshot(model)) - hmg
    assert hmg and rest
    b = batch()

    before = _snapshot(model)
    model._partial_step(b, optimizer, scaler, ctx, lambda p: all(p is not q for q in
                                                                  model.mask_generator.parameters()))
    changed = _changed(model, before)
    assert changed == rest                                                 # step 1: HMG frozen

    before = _snapshot(model)
    model._partial_step(b, optimizer, scaler, ctx, lambda p: any(p is q for q in
                                                                  model.mask_generator.parameters()))
    assert _changed(model, before) == hmg                                  # step 2: all else frozen

    before = _snapshot(model)
    terms = model.train_step(b, optimizer, scaler, ctx)                    # both, one iteration
    assert set(terms) == {"id", "mask_id", "hem", "triplet"}
    assert hmg <= _changed(model, before) and _changed(model, before) & rest


def test_mask_step_gives_the_hmg_the_whole_losss_gradient():
    model = tiny(hmg_zero_init=False, drop_path=0.0).train()
    b = batch()
    params = list(model.mask_generator.parameters())
    full = torch.autograd.grad(sum(model.loss(model(b), b).values()), params)
    out = model(b, mask_step=True)
    assert set(out) == {"mask", "mask_scores"} and out["mask"].requires_grad
    terms = model.loss(out, b)
    assert set(terms) == {"mask_id"}
    for a, g in zip(full, torch.autograd.grad(terms["mask_id"], params), strict=True):
        torch.testing.assert_close(a, g)


# ------------------------------------------------------------------------------------------ test rule
@pytest.mark.parametrize("row", ["P_n", "P_n + F_n", "P", "P + F"])
def test_query_mask_distance_matches_a_direct_loop(row):
    abl = ABLATIONS[row]
    model = tiny(**abl.model).eval()
    model.distance_chunk = 2                                                # several query chunks
    q = Embedding(global_feat=F.normalize(torch.randn(5, 48, generator=_gen(5)), dim=1),
                  extras={"mask": torch.rand(5, 48, generator=_gen(6))})
    g = Embedding(global_feat=F.normalize(torch.randn(7, 48, generator=_gen(7)), dim=1),
                  extras={"mask": torch.rand(7, 48, generator=_gen(8))})
    cfg = model.cfg
    direct = torch.empty(5, 7)
    for i in range(5):
        m = q.extras["mask"][i]
        for j in range(7):
            fq, fg = q.global_feat[i], g.global_feat[j]
            if cfg.mask_before_norm:
                cos = F.cosine_similarity(fq * m if cfg.mask_feature else fq, fg * m, dim=0)
            else:
                cos = (F.normalize(fq, dim=0) * (m if cfg.mask_feature else 1)) @ (F.normalize(fg, dim=0) * m)
            direct[i, j] = torch.arccos(cos.clamp(-1 + 1e-5, 1 - 1e-5))
    torch.testing.assert_close(model.distance(q, g), direct)
    plain = replace(cfg, test_mask=False)
    model.cfg = plain                                                       # matching switch: no mask
    torch.testing.assert_close(model.distance(q, g), torch.cdist(q.global_feat, g.global_feat))


def test_embed_carries_the_mask_and_the_baseline_has_none():
    b = batch(3)
    e = tiny().eval().embed(b)
    assert e.global_feat.shape == (3, 48) and e.extras["mask"].shape == (3, 48)
    torch.testing.assert_close(e.global_feat.norm(dim=1), torch.ones(3))
    base = tiny(**ABLATIONS["baseline"].model).eval()
    e = base.embed(b)
    assert not e.extras and base.distance(e, e).shape == (3, 3)


# ------------------------------------------------------------------------------------------ tables, profiles
def test_every_reported_row_of_tables_3_to_5_and_fig_5_has_an_ablation():
    for table in ("Table 3", "Table 4", "Table 5", "Fig. 5 (alpha)", "Fig. 5 (beta)"):
        rows = list(reported.table("dpm", table).index)
        assert rows and all(r in ABLATIONS for r in rows), (table, rows)
    for row, abl in ABLATIONS.items():                                    # bases exist and train something
        if abl.base is not None:
            assert abl.base in ABLATIONS and ABLATIONS[abl.base].base is None, row
        from_dict(DPMConfig, {**TINY, **abl.model}).validate()
    assert ABLATIONS["+DPM+HR+HEM"].model == {} and ABLATIONS["+DPM+HR"].model == {"beta": 0.0}
    assert ABLATIONS["baseline (Cls=A)"].model["global_classifier"] == "arcface"
    assert ABLATIONS["DPM (Cls=S, Mask-Cls=S)"].model["masked_classifier"] == "softmax"


def test_profiles_build_and_bad_gates_are_refused():
    paper = RunConfig.from_profile("dpm", "paper")
    cfg = from_dict(DPMConfig, paper.model)
    assert (cfg.backbone, cfg.patch_stride, cfg.sie_coef) == ("vit_base_patch16", 11, 3.0)
    assert (cfg.alpha, cfg.beta, cfg.label_smoothing, cfg.triplet_margin) == (0.5, 0.1, 0.0, None)
    assert (cfg.arc_scale, cfg.arc_margin, cfg.hmg_blocks) == (30.0, 0.5, [2, 4, 10, 12])
    assert (paper.data.batch_p, paper.data.batch_k, paper.data.height, paper.data.width) == (16, 4, 256, 128)
    assert (paper.train.lr, paper.train.scheduler, paper.train.optimizer) == (0.008, "cosine", "sgd")
    ci = RunConfig.from_profile("dpm", "ci")
    assert build("dpm", ci.model, info()).hmg_taps == [1, 2, 3, 4]
    demo = RunConfig.from_profile("dpm", "demo")
    assert demo.model["backbone"] == "vit_small_hybrid" and (demo.data.height, demo.data.width) == (128, 64)
    with pytest.raises(ConfigError, match="hmg_gate"):
        build("dpm", {**TINY, "hmg_gate": [True, False]}, info())
    with pytest.raises(ConfigError, match="no block"):
        build("dpm", {**TINY, "hmg_gate": [False] * 4}, info())


# ------------------------------------------------------------------------------------------ engine
def test_ci_run_through_the_engine_on_synthocc(tmp_path):
    from reidlib.engine import train

    cfg = replace(RunConfig.from_profile("dpm", "ci"),
                  data={"batch_p": 4, "batch_k": 2, "erasing_p": 0.0, "pad": 0},
                  train={"epochs": 1, "max_iters_per_epoch": 2},
                  init_from=None)
    run = train(cfg, runs_dir=tmp_path, progress="off")
    terms = next(r for r in run.history if r["kind"] == "epoch")["terms"]
    assert {"id", "mask_id", "hem", "triplet"} <= set(terms)
    assert all(math.isfinite(v) for v in terms.values())
    model = run.load_model().eval()
    shown = model.explain(Batch(images=torch.randn(2, 3, *IMAGE, generator=_gen(13)),
                                camids=torch.zeros(2, dtype=torch.long)))
    check_explain(shown, 2)
    assert shown["head_attention"].shape == (2, model.vit.num_heads, *model.vit.grid_size)
    torch.testing.assert_close(shown["head_attention"].sum((2, 3)), torch.ones(2, model.vit.num_heads))


# ------------------------------------------------------------------------------------------ fidelity
HEM_EPOCHS = 15   # SynthOcc ci, 16 images per step: about 100 steps


def _heads_cross_correlation(beta: float, tmp_path, seed: int = 0) -> float:
    """DPM (ci size) trained with HEM weight `beta` on SynthOcc ci; the mean off-diagonal cross-correlation
    of its heads' last-block attention maps over the query images (reidlib.attention)."""
    from reidlib.attention import head_correlation, head_diversity
    from reidlib.data.loader import build_test_loader, load_from_config
    from reidlib.engine import train

    adamw = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "scheduler": "multistep",
             "milestones": [], "warmup_epochs": 0, "epochs": HEM_EPOCHS, "max_iters_per_epoch": None}
    cfg = replace(RunConfig.from_profile("dpm", "ci"), data={"erasing_p": 0.0, "pad": 0}, train=adamw,
                  model={"beta": beta}, seed=seed, init_from=None)
    model = train(cfg, runs_dir=tmp_path, progress="off").load_model().eval()
    dataset = load_from_config(cfg.data)
    queries = Batch.from_loader(next(iter(build_test_loader(dataset.query, cfg.data, root=dataset.root))),
                                cfg.data)
    return head_diversity(head_correlation(model.explain(queries)["head_attention"])).item()


def test_fidelity_hem_makes_the_heads_attend_to_different_patches(tmp_path):
    """Sec. 3.3 / Fig. 4: with HEM (the paper's beta = 0.1) the heads' attention maps correlate far less
    than without. Measured (seeds 0 / 1 / 2, mean off-diagonal cross-correlation over the queries):
    0.35 / 0.32 / 0.20 with HEM against 0.88 / 0.95 / 0.93 without."""
    with_hem = _heads_cross_correlation(0.1, tmp_path)
    without = _heads_cross_correlation(0.0, tmp_path)
    assert with_hem < without - 0.3, (with_hem, without)
