from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidlib.distance import euclidean
from reidlib.losses import (
    TripletLoss,
    batch_hard_triplet_loss,
    cross_entropy_label_smooth,
    hard_example_mining,
)
from reidlib.models.heads import ArcFace, BNNeck, LinearClassifier

# Hand-made distances for labels [0, 0, 1, 1]:
#   anchor 0: d_ap = 1, d_an = min(3, 4) = 3      anchor 1: d_ap = 1, d_an = min(2, 5) = 2
#   anchor 2: d_ap = 6, d_an = min(3, 2) = 2      anchor 3: d_ap = 6, d_an = min(4, 5) = 4
DIST = torch.tensor(
    [
        [0.0, 1.0, 3.0, 4.0],
        [1.0, 0.0, 2.0, 5.0],
        [3.0, 2.0, 0.0, 6.0],
        [4.0, 5.0, 6.0, 0.0],
    ]
)
LABELS = torch.tensor([0, 0, 1, 1])
GAPS = [1 - 3, 1 - 2, 6 - 2, 6 - 4]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_label_smoothing_known_value():
    # p = softmax(log [1, 2, 1]) = [1/4, 1/2, 1/4]; eps = 0.3, C = 3 -> q = [0.1, 0.8, 0.1]
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0]]))
    loss = cross_entropy_label_smooth(logits, torch.tensor([1]), epsilon=0.3)
    expected = -(0.1 * math.log(0.25) + 0.8 * math.log(0.5) + 0.1 * math.log(0.25))  # = 1.2 ln 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert cross_entropy_label_smooth(logits, torch.tensor([1]), 0.0).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="epsilon"):
        cross_entropy_label_smooth(logits, torch.tensor([1]), 1.0)


def test_hard_mining_picks_farthest_positive_and_closest_negative():
    pairs = hard_example_mining(DIST, LABELS)
    assert pairs.dist_ap.tolist() == [1.0, 1.0, 6.0, 6.0]
    assert pairs.dist_an.tolist() == [3.0, 2.0, 2.0, 4.0]
    assert pairs.valid.all()


def test_triplet_hard_margin_known_value():
    loss = batch_hard_triplet_loss(LABELS, margin=0.5, dist=DIST)
    assert loss.item() == pytest.approx(sum(max(0.0, g + 0.5) for g in GAPS) / 4)  # (4.5 + 2.5) / 4


def test_triplet_soft_margin_known_value_and_bounds_hard():
    soft = batch_hard_triplet_loss(LABELS, margin=None, dist=DIST)
    assert soft.item() == pytest.approx(sum(softplus(g) for g in GAPS) / 4, rel=1e-6)
    hard0 = batch_hard_triplet_loss(LABELS, margin=0.0, dist=DIST)
    assert soft.item() > hard0.item()  # softplus(x) > max(0, x)
    # far from the decision boundary the soft margin becomes the zero-margin hinge
    scale = 100.0
    soft_far = batch_hard_triplet_loss(LABELS, margin=None, dist=DIST * scale) / scale
    hard_far = batch_hard_triplet_loss(LABELS, margin=0.0, dist=DIST * scale) / scale
    assert soft_far.item() == pytest.approx(hard_far.item(), abs=1e-6)


def test_triplet_features_equal_precomputed_distances_and_gradients():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    feats_a = torch.randn(6, 5, requires_grad=True)
    feats_b = feats_a.detach().clone().requires_grad_(True)
    loss_a, pairs = batch_hard_triplet_loss(labels, 0.3, features=feats_a, return_pairs=True)
    loss_b = batch_hard_triplet_loss(labels, 0.3, dist=euclidean(feats_b, feats_b))
    loss_a.backward()
    loss_b.backward()
    assert loss_a.item() == pytest.approx(loss_b.item())
    assert torch.allclose(feats_a.grad, feats_b.grad)
    assert pairs.dist_ap.shape == (6,)
    assert TripletLoss(margin=0.3)(feats_a, labels).item() == pytest.approx(loss_a.item())


def test_triplet_cosine_metric_and_input_checks():
    feats = torch.randn(4, 3)
    dist = 1 - F.normalize(feats) @ F.normalize(feats).t()
    a = batch_hard_triplet_loss(LABELS, 0.1, features=feats, metric="cosine")
    assert a.item() == pytest.approx(batch_hard_triplet_loss(LABELS, 0.1, dist=dist).item(), abs=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        batch_hard_triplet_loss(LABELS, 0.3)
    with pytest.raises(ValueError, match="square"):
        batch_hard_triplet_loss(LABELS, 0.3, dist=torch.zeros(4, 3))


def test_triplet_without_negatives_is_zero_and_differentiable():
    feats = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(torch.zeros(3, dtype=torch.long), 0.3, features=feats)
    loss.backward()
    assert loss.item() == 0.0 and feats.grad is not None


def test_bnneck_bias_frozen_at_zero():
    neck = BNNeck(8)
    assert not neck.bn.bias.requires_grad and neck.bn.weight.requires_grad
    assert torch.all(neck.bn.bias == 0) and torch.all(neck.bn.weight == 1)
    out = neck(torch.randn(16, 8) * 3 + 5)
    assert out.mean(0).abs().max() < 1e-5  # training mode: centred by batch statistics, no shift
    with pytest.raises(ValueError, match="one BNNeck per part"):
        neck(torch.randn(2, 3, 8))


def test_linear_classifier_no_bias_small_init():
    torch.manual_seed(0)
    clf = LinearClassifier(256, 1000)
    assert clf.fc.bias is None
    assert clf.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert clf(torch.randn(2, 256)).shape == (2, 1000)


def test_arcface_zero_margin_is_scaled_cosine():
    torch.manual_seed(0)
    head = ArcFace(6, 5, scale=30.0, margin=0.0)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    cos = F.normalize(x) @ F.normalize(head.weight).t()
    assert torch.allclose(head(x, y), 30.0 * cos, atol=1e-5)
    assert torch.allclose(head(x), 30.0 * cos, atol=1e-5)  # inference: no margin


THETA2 = math.radians(170)  # beyond pi - 0.5 rad (151.4 deg)


def test_arcface_margin_on_target_only():
    head = ArcFace(2, 3, scale=30.0, margin=0.5)
    with torch.no_grad():  # class 0 along e0, class 1 at 60 degrees, class 2 at 170 degrees
        head.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [math.cos(THETA2), math.sin(THETA2)]])
        )
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logits = head(x, torch.tensor([1, 2]))
    cos = head.cosine(x)
    # sample 0, target 1 at theta = pi/3: s cos(theta + m); non-targets unchanged
    assert logits[0, 1].item() == pytest.approx(30.0 * math.cos(math.pi / 3 + 0.5), rel=1e-5)
    assert torch.allclose(logits[0, [0, 2]], 30.0 * cos[0, [0, 2]])
    # sample 1, target 2 at theta = 170 deg > pi - m: fallback s (cos theta - m sin m)
    assert logits[1, 2].item() == pytest.approx(30.0 * (math.cos(THETA2) - 0.5 * math.sin(0.5)), rel=1e-5)
    easy = ArcFace(2, 3, scale=30.0, margin=0.5, easy_margin=True)
    easy.load_state_dict(head.state_dict())
    assert easy(x, torch.tensor([1, 2]))[1, 2].item() == pytest.approx(30.0 * cos[1, 2].item(), rel=1e-5)
    with pytest.raises(ValueError, match="margin"):
        ArcFace(2, 3, scale=30.0, margin=2.0)
