"""QPM: its equations against loop implementations, the ablation rows end to end on a tiny backbone,
the Table VII attention modules, chunked matching, and a fidelity check that quality scores drop on
occluded parts after a short training on synthetic data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidlib.config import ConfigError, RunConfig, from_dict, profile_config
from reidlib.methods import build, names
from reidlib.methods.base import Embedding
from reidlib.methods.qpm import (
    ABLATIONS,
    MAX_COSINE_DISTANCE,
    TABLE_V,
    TABLE_VI,
    TABLE_VII,
    QPMConfig,
    ablation_config,
    agfe_distance_matrix,
    agfe_features,
    agfe_pair_logits,
    hard_triplet_violating,
    pair_weights,
    quality_weighted_part_distance,
)
from reidlib.methods.spatial_attention import ATTENTIONS, build_spatial_attention, region_average_pool

K = 6
IMAGE = (96, 48)  # resnet_tiny has stride 16: a 6 x 3 map, one row per part
TINY = {"backbone": "resnet_tiny", "part_dim": 32, "global_dim": 32}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cos_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(1.0 - F.cosine_similarity(a, b, dim=0))


def _random_side(n: int, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(n, K, dim, generator=g), torch.rand(n, K, generator=g) * 0.9 + 0.05


# ------------------------------------------------------------------------------------------ equations
def test_eq2_quality_weighted_part_distance_matches_loop():
    pa, qa = _random_side(4, seed=1)
    pb, qb = _random_side(5, seed=2)
    got = quality_weighted_part_distance(pa, qa, pb, qb)
    for a in range(4):
        for b in range(5):
            num = sum(qa[a, k] * qb[b, k] * _cos_dist(pa[a, k], pb[b, k]) for k in range(K))
            den = sum(qa[a, k] * qb[b, k] for k in range(K))
            assert got[a, b].item() == pytest.approx(float(num / den), abs=1e-5)


def test_eq2_with_unit_quality_is_pcb_concatenated_cosine():
    pa, _ = _random_side(3, seed=3)
    pb, _ = _random_side(4, seed=4)
    ones_a, ones_b = torch.ones(3, K), torch.ones(4, K)
    concat = lambda p: F.normalize(F.normalize(p, dim=-1).flatten(1), dim=1)  # noqa: E731
    expected = 1.0 - concat(pa) @ concat(pb).t()
    torch.testing.assert_close(quality_weighted_part_distance(pa, ones_a, pb, ones_b), expected)


def test_eq11_pair_weights_and_eqs9_10_features_match_loop():
    ga, qa = _random_side(3, seed=5)
    gb, qb = _random_side(4, seed=6)
    h_a, h_b = agfe_features(ga[:, None], qa[:, None], gb[None], qb[None])      # [3, 4, C]
    for a in range(3):
        for b in range(4):
            w = [qa[a, k] * qb[b, k] / sum(qa[a, i] * qb[b, i] for i in range(K)) for k in range(K)]
            torch.testing.assert_close(pair_weights(qa[a], qb[b]), torch.stack(w))
            torch.testing.assert_close(h_a[a, b], sum(w[k] * ga[a, k] for k in range(K)))
            torch.testing.assert_close(h_b[a, b], sum(w[k] * gb[b, k] for k in range(K)))


def test_agfe_features_are_symmetric_in_the_pair():
    ga, qa = _random_side(3, seed=7)
    gb, qb = _random_side(4, seed=8)
    h_ab_a, h_ab_b = agfe_features(ga[:, None], qa[:, None], gb[None], qb[None])  # pairs (a, b)
    h_ba_b, h_ba_a = agfe_features(gb[:, None], qb[:, None], ga[None], qa[None])  # pairs (b, a)
    torch.testing.assert_close(h_ab_a, h_ba_a.transpose(0, 1))
    torch.testing.assert_close(h_ab_b, h_ba_b.transpose(0, 1))
    torch.testing.assert_close(pair_weights(qa[:, None], qb[None]), pair_weights(qb[None], qa[:, None]))
    d = agfe_distance_matrix(ga, qa, gb, qb)
    torch.testing.assert_close(d, agfe_distance_matrix(gb, qb, ga, qa).t())


def test_agfe_distance_matrix_matches_pair_features():
    ga, qa = _random_side(3, seed=9)
    gb, qb = _random_side(5, seed=10)
    d = agfe_distance_matrix(ga, qa, gb, qb)
    for a in range(3):
        for b in range(5):
            h_a, h_b = agfe_features(ga[a], qa[a], gb[b], qb[b])
            assert d[a, b].item() == pytest.approx(_cos_dist(h_a, h_b), abs=1e-5)


def test_eq12_pair_logits_equal_classifying_pair_features():
    g, q = _random_side(4, seed=11)
    fc = torch.nn.Linear(8, 7)
    got = agfe_pair_logits(fc(g), q)                                             # [4, 4, 7]
    h_p, _ = agfe_features(g[:, None], q[:, None], g[None], q[None])             # h_g^p  [4, 4, 8]
    torch.testing.assert_close(got, fc(h_p))


def test_triplet_is_normalised_by_violating_triplets():
    pids = torch.tensor([0, 0, 1, 1])
    dist = torch.tensor([[0.0, 0.5, 0.6, 0.9],
                         [0.5, 0.0, 0.1, 0.7],
                         [0.6, 0.1, 0.0, 0.2],
                         [0.9, 0.7, 0.2, 0.0]])
    # hinges at margin 0.3: a0: .3+.5-.6=.2  a1: .3+.5-.1=.7  a2: .3+.2-.1=.4  a3: .3+.2-.7<0
    assert hard_triplet_violating(dist, pids, 0.3).item() == pytest.approx((0.2 + 0.7 + 0.4) / 3)
    assert hard_triplet_violating(torch.zeros(4, 4), pids, 0.0).item() == 0.0  # nothing violates


def test_region_average_pool_is_stripe_mean():
    x = torch.randn(2, 3, 12, 4, generator=_gen(12))
    pooled = region_average_pool(x, K)
    torch.testing.assert_close(pooled[:, 2], x[:, :, 4:6].mean((2, 3)))
    with pytest.raises(ValueError, match="smaller than the number of parts"):
        region_average_pool(torch.zeros(1, 3, 4, 2), K)


# ------------------------------------------------------------------------------------------ matching
def _embedding(n: int, seed: int, dim: int = 8) -> Embedding:
    parts, q = _random_side(n, dim, seed)
    stripes, _ = _random_side(n, dim, seed + 100)
    return Embedding(parts=parts, weights=q, extras={"global_parts": stripes})


@pytest.fixture(scope="module")
def qpm_model():
    return build("qpm", {**TINY}, num_classes=5).eval()


def _eq15_loop(model, query: Embedding, gallery: Embedding) -> torch.Tensor:
    gamma = model.cfg.gamma
    out = torch.empty(len(query), len(gallery))
    for i in range(len(query)):
        for j in range(len(gallery)):
            d_part = quality_weighted_part_distance(query.parts[i:i + 1], query.weights[i:i + 1],
                                                    gallery.parts[j:j + 1], gallery.weights[j:j + 1])
            h_q, h_g = agfe_features(query.extras["global_parts"][i], query.weights[i],
                                     gallery.extras["global_parts"][j], gallery.weights[j])
            out[i, j] = gamma * d_part.item() + (1 - gamma) * _cos_dist(h_q, h_g)
    return out


def test_eq15_over_the_whole_gallery_matches_loop(qpm_model, monkeypatch):
    query, gallery = _embedding(4, 20), _embedding(7, 21)
    monkeypatch.setattr(qpm_model.cfg, "top_n", None)
    torch.testing.assert_close(qpm_model.distance(query, gallery), _eq15_loop(qpm_model, query, gallery))


def test_eq15_rescores_only_the_top_n_part_neighbours(qpm_model, monkeypatch):
    query, gallery = _embedding(5, 22), _embedding(9, 23)
    n = 3
    monkeypatch.setattr(qpm_model.cfg, "top_n", n)
    got = qpm_model.distance(query, gallery)
    full = _eq15_loop(qpm_model, query, gallery)
    d_part = quality_weighted_part_distance(query.parts, query.weights, gallery.parts, gallery.weights)
    for i in range(len(query)):
        top = set(d_part[i].argsort()[:n].tolist())
        rest = [j for j in range(len(gallery)) if j not in top]
        for j in top:
            assert got[i, j].item() == pytest.approx(full[i, j].item(), abs=1e-5)
        assert got[i, rest].min() >= got[i, sorted(top)].max()          # re-scored ones rank first
        torch.testing.assert_close(got[i, rest], d_part[i, rest] + MAX_COSINE_DISTANCE)


@pytest.mark.parametrize("top_n", [None, 4])
def test_chunked_distance_equals_unchunked(qpm_model, monkeypatch, top_n):
    query, gallery = _embedding(11, 30), _embedding(13, 31)
    monkeypatch.setattr(qpm_model.cfg, "top_n", top_n)
    whole = qpm_model.distance(query, gallery)
    monkeypatch.setattr(qpm_model, "distance_chunk", 2)
    torch.testing.assert_close(qpm_model.distance(query, gallery), whole)


# ------------------------------------------------------------------------------------------ modules
@pytest.mark.parametrize("name", ATTENTIONS)
@pytest.mark.parametrize("residual", [True, None])
def test_table_vii_attention_preserves_shape(name, residual):
    x = torch.randn(3, 16, 6, 3, generator=_gen(40))
    module = build_spatial_attention(name, 16, K, spatial_size=(6, 3), residual=residual)
    if module is None:
        assert name == "none"
        return
    quality = torch.rand(3, K, generator=_gen(41))
    att = module.attend(x, quality)
    assert att.refined.shape == x.shape
    assert att.mask.shape[0] == 3 and att.mask.shape[2:] == (6, 3) and att.mask.shape[1] in (1, 16)
    assert 0.0 <= att.mask.min() and att.mask.max() <= 1.0
    combined = att.mask * x + x if module.residual else att.mask * x
    torch.testing.assert_close(att.refined, combined)
    att.refined.sum().backward()  # every module is differentiable end to end


def test_isa_follows_eqs_4_to_8():
    from reidlib.methods.spatial_attention import IdentityAwareSpatialAttention

    isa = IdentityAwareSpatialAttention(8, K, reduction=4)
    x = torch.randn(2, 8, 6, 2, generator=_gen(42))
    q = torch.rand(2, K, generator=_gen(43))
    att = isa.attend(x, q)
    h = sum((q[:, k] / q.sum(1))[:, None] * x[:, :, k].mean(-1) for k in range(K))          # Eqs. (4)-(5)
    torch.testing.assert_close(att.aux["h"], h)
    h_tilde = isa.expand(F.relu(isa.reduce(h)))
    m = torch.sigmoid((x * h_tilde[:, :, None, None]).sum(1, keepdim=True))                # Eq. (7)
    torch.testing.assert_close(att.refined, m * x + x)                                     # Eq. (8)
    with pytest.raises(ValueError, match="quality"):
        isa(x)


def test_fixed_size_attention_names_the_fix():
    module = build_spatial_attention("fc_sa", 16, K, spatial_size=(6, 3))
    with pytest.raises(ValueError, match=r"image_size=\(data.height, data.width\)"):
        module(torch.zeros(1, 16, 8, 4))
    with pytest.raises(ConfigError, match="image_size"):
        build("qpm", {**TINY, **ablation_config("+RGA-SA")}, num_classes=3)


# ------------------------------------------------------------------------------------------ ablations
def test_ablation_rows_cover_the_papers_tables():
    assert set(TABLE_V) | set(TABLE_VI) | set(TABLE_VII) <= set(ABLATIONS)
    assert ablation_config("QPM") == {}
    assert ablation_config("Baseline(+triplet)")["quality"] is False
    with pytest.raises(ValueError, match=r"unknown QPM ablation row 'QPM\+'.*'Part branch'"):
        ablation_config("QPM+")
    for row in ABLATIONS:  # every row is a valid config
        from_dict(QPMConfig, ablation_config(row))
    with pytest.raises(ConfigError, match="nothing is learned"):
        from_dict(QPMConfig, {"part_branch": False, "global_feature": "none", "spatial_attention": "none"})


def test_registered_and_profiles_parse():
    assert "qpm" in names()
    for profile in ("ci", "demo", "paper"):
        qpm, ide = RunConfig.from_profile("qpm", profile), RunConfig.from_profile("qpm_ide", profile)
        assert qpm.method == ide.method == "qpm"
        stages = [from_dict(QPMConfig, c.model).stage for c in (qpm, ide)]
        assert stages == ["qpm", "ide"]
        assert (qpm.data.height, qpm.data.width) == (ide.data.height, ide.data.width)
    paper = RunConfig.from_profile("qpm", "paper")
    assert (paper.data.height, paper.data.batch_p, paper.data.batch_k) == (384, 8, 8)      # Sec. IV-A
    for profile in ("ci", "demo", "paper"):                                               # Sec. IV-A
        assert profile_config("qpm", profile)["model"]["init_from"] == "ide"
    assert (paper.train.lr, paper.train.weight_decay, paper.train.epochs) == (0.01, 0.0, 70)


def test_init_from_ide_placeholder_needs_the_notebook():
    with pytest.raises(ConfigError, match="QPMRuns"):
        build("qpm", {**TINY, "init_from": "ide"}, num_classes=4)


@pytest.mark.parametrize("row", sorted(ABLATIONS))
def test_every_ablation_row_trains_embeds_and_matches(row):
    torch.manual_seed(0)
    model = build("qpm", {**TINY, **ablation_config(row)}, num_classes=4, image_size=IMAGE)
    images = torch.randn(8, 3, *IMAGE, generator=_gen(50))
    pids = torch.arange(4).repeat_interleave(2)
    out = model(images)
    terms = model.loss(out, pids)
    assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    cfg = model.cfg
    expected = {"part_id"} if cfg.part_branch else set()
    expected |= {"part_triplet"} if cfg.part_branch and cfg.part_triplet else set()
    expected |= {"sg_id", "global_triplet"} if cfg.global_feature != "none" else set()
    expected |= {"global_id"} if cfg.spatial_attention == "isa" else set()
    assert set(terms) == expected
    model.eval()
    emb = model.embed(images)
    assert emb.weights.shape == (8, K)
    if cfg.part_branch:
        assert emb.parts.shape == (8, K, cfg.part_dim)
    dist = model.distance(emb[:3], emb)
    assert dist.shape == (3, 8) and torch.isfinite(dist).all()
    assert dist[torch.arange(3), torch.arange(3)].abs().max() < 1e-4  # an image matches itself
    shown = model.explain(images[:2])
    assert shown["quality"].shape == (2, K)
    assert shown["heat_before"].shape == shown["heat_after"].shape == (2, 6, 3)


def test_ide_stage_initialises_qpm_backbone(tmp_path):
    ide = build("qpm", {**TINY, "stage": "ide"}, num_classes=4)
    out = ide(torch.randn(4, 3, *IMAGE, generator=_gen(60)))
    assert set(ide.loss(out, torch.tensor([0, 0, 1, 1]))) == {"ide_id"}
    path = tmp_path / "model.pt"
    torch.save({"state_dict": ide.state_dict()}, path)  # the engine's final model file layout
    qpm = build("qpm", {**TINY, "init_from": str(path)}, num_classes=4)
    for name, value in ide.backbone.state_dict().items():
        torch.testing.assert_close(qpm.backbone.state_dict()[name], value)
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, path)
    with pytest.raises(ConfigError, match="stage: ide"):
        build("qpm", {**TINY, "init_from": str(path)}, num_classes=4)


# ------------------------------------------------------------------------------------------ fidelity
def _striped_people(num_ids: int, per_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Identities are K horizontal bands, each one of two colours, so look-alikes differ in one or two
    bands and the triplets stay active. About half of the images hide their bottom two bands behind a
    noise-textured occluder. Returns images [N, 3, H, W], pids [N] and per-part visibility [N, K]."""
    colours = torch.tensor([[0.9, 0.75, 0.1], [0.2, 0.3, 0.9]])                      # yellow, blue
    bands = colours[torch.randint(2, (num_ids, K), generator=_gen(1001))]           # [ids, K, 3]
    height, width = IMAGE
    rows = height // K
    g = _gen(seed)
    images, pids, visible = [], [], []
    for pid in range(num_ids):
        for _ in range(per_id):
            img = bands[pid].repeat_interleave(rows, 0).t()[:, :, None].expand(3, height, width)
            img = img + 0.2 * torch.randn(3, height, width, generator=g)
            vis = torch.ones(K)
            if torch.rand(1, generator=g).item() < 0.5:
                img[:, (K - 2) * rows:] = torch.rand(3, 2 * rows, width, generator=g)
                vis[K - 2:] = 0
            images.append(img)
            pids.append(pid)
            visible.append(vis)
    return (torch.stack(images) - 0.5) / 0.25, torch.tensor(pids), torch.stack(visible)


def test_fidelity_quality_scores_drop_on_occluded_parts():
    """Sec. III-A: "the part quality predictors have to predict lower scores to occluded parts". No
    visibility label is used in training; the occluded bottom parts must end up with lower scores than
    the same parts when visible."""
    torch.manual_seed(0)
    num_ids, per_id, p, a = 32, 8, 8, 4
    images, pids, _ = _striped_people(num_ids, per_id, seed=70)
    model = build("qpm", {**TINY}, num_classes=num_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)  # from scratch: faster than the paper's SGD
    g = _gen(71)
    for _ in range(40):  # P x A batches, as the identity sampler draws them
        chosen = torch.randperm(num_ids, generator=g)[:p]
        index = torch.cat([torch.nonzero(pids == pid).flatten()[torch.randperm(per_id, generator=g)[:a]]
                           for pid in chosen])
        terms = model.loss(model(images[index]), pids[index])
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    test_images, _, visible = _striped_people(num_ids, 4, seed=72)
    model.eval()
    bottom_q, bottom_visible = model.embed(test_images).weights[:, K - 2:], visible[:, K - 2:]
    occluded, shown = bottom_q[bottom_visible == 0], bottom_q[bottom_visible == 1]
    # Eq. (2) uses the scores relatively, so the test asks for an ordering: the probability that a visible
    # part outscores an occluded one (ROC AUC); 0.5 would be chance.
    auc = (shown[:, None] > occluded[None]).float().mean().item()
    gap = (shown.mean() - occluded.mean()).item()
    # seed 0 gives AUC 0.70, gap 0.20; other seeds 0.59-0.73 and 0.11-0.24: a clear but moderate effect
    assert auc > 0.6 and gap > 0.1, (auc, gap)
