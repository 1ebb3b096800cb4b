"""QPM: its equations against loop implementations, the ablation rows end to end on a tiny backbone,
the Table VII attention modules, chunked matching, and a fidelity check that quality scores drop on
occluded parts after a short training on synthetic data."""

from __future__ import annotations

from statistics import median

import pytest
import torch
import torch.nn.functional as F

from reidlib import reported
from reidlib.config import ConfigError, RunConfig, from_dict
from reidlib.losses import batch_hard_triplet_loss
from reidlib.methods import build, names
from reidlib.methods.base import Batch, DataInfo, Embedding, check_explain
from reidlib.methods.parts import stripe_pool
from reidlib.methods.parts import weighted_part_distance as quality_weighted_part_distance  # Eq. (2)
from reidlib.methods.qpm import (
    ABLATIONS,
    MAX_COSINE_DISTANCE,
    QPMConfig,
    agfe_distance_matrix,
    agfe_features,
    agfe_pair_logits,
    pair_weights,
)
from reidlib.methods.spatial_attention import ATTENTIONS, build_spatial_attention

K = 6
IMAGE = (96, 48)  # resnet_tiny has stride 16: a 6 x 3 map, one row per part
TINY = {"backbone": "resnet_tiny", "part_dim": 32, "global_dim": 32}
TRAINED_ROWS = sorted(row for row, ablation in ABLATIONS.items() if ablation.base is None)


def info(num_classes: int, image_size: tuple[int, int] = IMAGE) -> DataInfo:
    return DataInfo(num_classes=num_classes, image_size=image_size)


def batch(images: torch.Tensor, pids: torch.Tensor | None = None) -> Batch:
    return Batch(images=images, camids=torch.zeros(len(images), dtype=torch.long), pids=pids)


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
    def triplet(d, margin):
        return batch_hard_triplet_loss(pids, margin, dist=d, average="violating").item()

    assert triplet(dist, 0.3) == pytest.approx((0.2 + 0.7 + 0.4) / 3)
    assert triplet(torch.zeros(4, 4), 0.0) == 0.0  # nothing violates


def test_region_average_pool_is_stripe_mean():
    x = torch.randn(2, 3, 12, 4, generator=_gen(12))
    pooled = stripe_pool(x, K)
    torch.testing.assert_close(pooled[:, 2], x[:, :, 4:6].mean((2, 3)))
    with pytest.raises(ValueError, match="smaller than the number of stripes"):
        stripe_pool(torch.zeros(1, 3, 4, 2), K)


# ------------------------------------------------------------------------------------------ matching
def _embedding(n: int, seed: int, dim: int = 8) -> Embedding:
    parts, q = _random_side(n, dim, seed)
    stripes, _ = _random_side(n, dim, seed + 100)
    return Embedding(parts=parts, weights=q, extras={"global_parts": stripes})


@pytest.fixture(scope="module")
def qpm_model():
    return build("qpm", {**TINY}, info(5)).eval()


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


# ------------------------------------------------------------------------------------------ ablations
def test_ablation_rows_cover_the_papers_tables():
    tables = ("Table V", "Table VI", "Table VII", "Table IX", "Table X", "Table XI")
    for table_id in tables:                                 # every reported row has its switches
        assert set(reported.table("qpm", table_id).index) <= set(ABLATIONS), table_id
    assert ABLATIONS["QPM"].model == {} and ABLATIONS["Baseline(+triplet)"].model["quality"] is False
    for row, ablation in ABLATIONS.items():                 # every row is a valid config
        from_dict(QPMConfig, ablation.model)
        assert ablation.base in (None, *ABLATIONS), row
        if ablation.test:
            from_dict(QPMConfig, ablation.test)
    with pytest.raises(ConfigError, match="nothing is learned"):
        from_dict(QPMConfig, {"part_branch": False, "global_feature": "none", "spatial_attention": "none"})


def test_table_v_part_branch_is_table_xi_gamma_1():
    """By the paper's numbers (Occluded-Duke 58.3 / 46.7 in both), Table V's "Part branch" is the jointly
    trained QPM scored with its part distance only; the separately trained part model is another row."""
    v, xi = reported.table("qpm", "Table V"), reported.table("qpm", "Table XI")
    assert v.loc["Part branch"].equals(xi.loc["gamma=1.0"])
    assert ABLATIONS["Part branch"].base == "QPM" and ABLATIONS["Part branch"].test == {"gamma": 1.0}
    assert ABLATIONS["Part branch (trained alone)"].model["global_feature"] == "none"


def test_registered_and_profiles_parse():
    assert "qpm" in names()
    for profile in ("ci", "demo", "paper"):
        qpm, ide = RunConfig.from_profile("qpm", profile), RunConfig.from_profile("qpm_ide", profile)
        assert qpm.method == ide.method == "qpm"
        stages = [from_dict(QPMConfig, c.model).stage for c in (qpm, ide)]
        assert stages == ["qpm", "ide"]
        assert (qpm.data.height, qpm.data.width) == (ide.data.height, ide.data.width)
        assert qpm.init_from == "qpm_ide" and ide.init_from is None                    # Sec. IV-A
    paper = RunConfig.from_profile("qpm", "paper")
    assert (paper.data.height, paper.data.batch_p, paper.data.batch_k) == (384, 8, 8)      # Sec. IV-A
    assert (paper.train.lr, paper.train.weight_decay, paper.train.epochs) == (0.01, 0.0, 70)


@pytest.mark.parametrize("row", TRAINED_ROWS)
def test_every_ablation_row_trains_embeds_and_matches(row):
    torch.manual_seed(0)
    k = ABLATIONS[row].model.get("num_parts", K)
    size = (16 * max(k, K), IMAGE[1])                        # one feature-map row per stripe at least
    model = build("qpm", {**TINY, **ABLATIONS[row].model}, info(4, size))
    images = torch.randn(8, 3, *size, generator=_gen(50))
    pids = torch.arange(4).repeat_interleave(2)
    out = model(batch(images, pids))
    terms = model.loss(out, batch(images, pids))
    assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    cfg = model.cfg
    expected = {"part_id"} if cfg.part_branch else set()
    expected |= {"part_triplet"} if cfg.part_branch and cfg.part_triplet else set()
    expected |= {"sg_id", "global_triplet"} if cfg.global_feature != "none" else set()
    expected |= {"global_id"} if cfg.spatial_attention == "isa" else set()
    assert set(terms) == expected
    model.eval()
    emb = model.embed(batch(images))
    assert emb.weights.shape == (8, k)
    if cfg.part_branch:
        assert emb.parts.shape == (8, k, cfg.part_dim)
    dist = model.distance(emb[:3], emb)
    assert dist.shape == (3, 8) and torch.isfinite(dist).all()
    assert dist[torch.arange(3), torch.arange(3)].abs().max() < 1e-4  # an image matches itself
    shown = model.explain(batch(images[:2]))
    check_explain(shown, 2)
    grid = (size[0] // 16, size[1] // 16)
    assert shown["part_scores"].shape == (2, k) and shown["part_maps"].shape == (2, k, *grid)
    assert shown["activation_before"].shape == shown["activation"].shape == (2, *grid)


def test_ide_stage_initialises_the_qpm_backbone_only():
    ide = build("qpm", {**TINY, "stage": "ide"}, info(4))
    pids = torch.tensor([0, 0, 1, 1])
    images = torch.randn(4, 3, *IMAGE, generator=_gen(60))
    assert set(ide.loss(ide(batch(images, pids)), batch(images, pids))) == {"ide_id"}
    torch.manual_seed(1)
    qpm = build("qpm", {**TINY}, info(4))
    heads = {k: v.clone() for k, v in qpm.state_dict().items() if not k.startswith("backbone.")}
    taken = qpm.load_stage(ide.state_dict())                 # what the engine does with init_from
    assert taken == sorted(k for k in ide.state_dict() if k.startswith("backbone."))
    for name, value in ide.backbone.state_dict().items():
        torch.testing.assert_close(qpm.backbone.state_dict()[name], value)
    assert all(torch.equal(qpm.state_dict()[k], v) for k, v in heads.items())  # heads keep their init
    with pytest.raises(ValueError, match="share no tensor"):
        qpm.load_stage({"head.weight": torch.zeros(1)})


def _batch_hard_violating_loop(dist: torch.Tensor, pids: torch.Tensor, margin: float) -> float:
    hinges = []
    for i in range(len(pids)):
        pos = [dist[i, j] for j in range(len(pids)) if pids[j] == pids[i]]
        neg = [dist[i, j] for j in range(len(pids)) if pids[j] != pids[i]]
        hinges.append(max(0.0, margin + float(max(pos)) - float(min(neg))))
    return sum(hinges) / max(1, sum(h > 0 for h in hinges))


def test_loss_assembly_matches_a_direct_computation():
    """Eq. (14) = Eq. (1) summed over parts + Eq. (3) + Eq. (6) on the pre-ReLU h^ + Eq. (12) over all
    N x N ordered pairs (each h_g^p labelled with p's identity, both orders: the factor 2) + Eq. (13)."""
    torch.manual_seed(3)
    model = build("qpm", {**TINY}, info(4)).train()
    with torch.no_grad():  # classifiers far from their N(0, 0.001^2) init, so every logit matters
        for fc in (model.part_classifier, model.isa_classifier, model.global_classifier):
            fc.weight.normal_(0.0, 1.0)
    images = torch.randn(8, 3, *IMAGE, generator=_gen(80))
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    step = batch(images, pids)
    out = model(step)
    terms = model.loss(out, step)
    assert set(terms) == {"part_id", "part_triplet", "global_id", "sg_id", "global_triplet"}
    n, margin = len(pids), model.cfg.margin
    f, q = out["part_feats"], out["quality"]                                   # [N, K, d], [N, K]
    w, b = model.part_classifier.weight, model.part_classifier.bias             # [K, M, d], [K, M]
    eq1 = sum(F.cross_entropy(f[:, k] @ w[k].t() + b[k], pids) for k in range(K))
    torch.testing.assert_close(terms["part_id"], eq1)
    fd, qd = f.detach(), q.detach()
    d_part = torch.tensor([[float(quality_weighted_part_distance(fd[i:i + 1], qd[i:i + 1], fd[j:j + 1],
                                                                 qd[j:j + 1])) for j in range(n)]
                           for i in range(n)])
    eq3 = _batch_hard_violating_loop(d_part, pids, margin)
    assert terms["part_triplet"].item() == pytest.approx(eq3, abs=1e-5)
    # Eq. (6): the ID loss sees h^ = W1 h, the first conv's output, before the ReLU
    with torch.no_grad():
        g = model.global_embed(model.backbone(images))                          # G [N, C, h, w]
        stripes = stripe_pool(g, K)                                             # [N, K, C]
        h = torch.einsum("nk,nkc->nc", q / q.sum(1, keepdim=True), stripes)     # Eqs. (4)-(5)
        h_hat = model.attention.reduce(h)
        eq6 = F.cross_entropy(model.isa_classifier(h_hat), pids)
        relu_first = F.cross_entropy(model.isa_classifier(F.relu(h_hat)), pids)
    assert terms["global_id"].item() == pytest.approx(eq6.item(), abs=1e-5)
    assert abs(eq6.item() - relu_first.item()) > 1e-4                         # the test can tell them apart
    # Eqs. (9)-(13) over every ordered pair of the batch
    gp, classifier = out["global_parts"], model.global_classifier
    eq12, d_global = 0.0, torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            h_ij, h_ji = agfe_features(gp[i], q[i], gp[j], q[j])               # h_j^i (i's), h_i^j (j's)
            eq12 += F.cross_entropy(classifier(h_ij)[None], pids[i:i + 1]).item()
            eq12 += F.cross_entropy(classifier(h_ji)[None], pids[j:j + 1]).item()
            d_global[i, j] = _cos_dist(h_ij.detach(), h_ji.detach())
    assert terms["sg_id"].item() == pytest.approx(eq12 / n**2, abs=1e-4)
    assert terms["global_triplet"].item() == pytest.approx(_batch_hard_violating_loop(d_global, pids, margin),
                                                           abs=1e-5)


def test_quality_predictor_is_per_part_conv_bn_sigmoid():
    from reidlib.methods.qpm import PartQualityPredictor

    predictor = PartQualityPredictor(K, 8).eval()
    with torch.no_grad():
        predictor.bn.running_mean.uniform_(-0.5, 0.5)
        predictor.bn.running_var.uniform_(0.5, 2.0)
        predictor.bn.weight.uniform_(0.5, 1.5)
        predictor.bn.bias.uniform_(-0.2, 0.2)
    z = torch.randn(5, K, 8, generator=_gen(90))
    w, b, bn = predictor.score.weight, predictor.score.bias, predictor.bn        # [K, 1, C], [K, 1]
    assert w.shape == (K, 1, 8)                                                  # one 1x1 conv per part
    logits = torch.stack([z[:, k] @ w[k, 0] + b[k, 0] for k in range(K)], 1)    # [N, K]
    expected = torch.sigmoid((logits - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
                             + bn.bias)
    torch.testing.assert_close(predictor(z), expected)
    changed = z.clone()
    changed[:, 2] += 1.0                                                         # only part 2's input moves
    moved = (predictor(changed) - predictor(z)).abs().amax(0) > 0
    assert moved.tolist() == [k == 2 for k in range(K)]


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


def fidelity_run(seed: int) -> tuple[float, float]:
    """Train QPM for 40 P x A steps on striped people (model init and batch order from `seed`, the data
    fixed) and return (AUC, gap) of the bottom parts' quality scores, visible against occluded."""
    torch.manual_seed(seed)
    num_ids, per_id, p, a = 32, 8, 8, 4
    images, pids, _ = _striped_people(num_ids, per_id, seed=70)
    model = build("qpm", {**TINY}, info(num_ids))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)  # from scratch: faster than the paper's SGD
    g = _gen(71 + seed)
    for _ in range(40):  # P x A batches, as the identity sampler draws them
        chosen = torch.randperm(num_ids, generator=g)[:p]
        index = torch.cat([torch.nonzero(pids == pid).flatten()[torch.randperm(per_id, generator=g)[:a]]
                           for pid in chosen])
        step = batch(images[index], pids[index])
        terms = model.loss(model(step), step)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    test_images, _, visible = _striped_people(num_ids, 4, seed=72)
    model.eval()
    bottom_q, bottom_visible = model.embed(batch(test_images)).weights[:, K - 2:], visible[:, K - 2:]
    occluded, shown = bottom_q[bottom_visible == 0], bottom_q[bottom_visible == 1]
    # Eq. (2) uses the scores relatively, so the test asks for an ordering: the probability that a visible
    # part outscores an occluded one (ROC AUC); 0.5 would be chance.
    auc = (shown[:, None] > occluded[None]).float().mean().item()
    return auc, (shown.mean() - occluded.mean()).item()


# Measured over seeds 0-9 (python experiments/qpm_fidelity_seeds.py): AUC 0.64-0.81 and gap 0.11-0.23 for
# nine seeds, median 0.71 / 0.19, but seed 6 learns no ordering (0.48 / 0.03). So the test asks the median of
# three seeds to clear the nine good seeds' floor: one unlucky seed cannot fail it, a lost effect does.
FIDELITY_SEEDS, FIDELITY_MIN_AUC, FIDELITY_MIN_GAP = (0, 1, 2), 0.6, 0.1


def test_fidelity_quality_scores_drop_on_occluded_parts():
    """Sec. III-A: "the part quality predictors have to predict lower scores to occluded parts". No
    visibility label is used in training; the occluded bottom parts must end up with lower scores than
    the same parts when visible."""
    results = [fidelity_run(seed) for seed in FIDELITY_SEEDS]
    aucs, gaps = zip(*results, strict=True)
    assert median(aucs) > FIDELITY_MIN_AUC and median(gaps) > FIDELITY_MIN_GAP, results
