"""reidlib.attention (DPM's Fig. 3 and Fig. 4 analyses) and visibility.vector_shift: known values."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from reidlib.attention import head_correlation, head_diversity, similarity_gap
from reidlib.visibility import vector_shift


def test_head_correlation_is_the_cosine_of_the_flattened_maps():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 0, 0, 0] = 1.0                       # head 0 and head 1 look at disjoint patches
    maps[0, 1, 1, 1] = 0.5
    maps[0, 2] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])   # head 2 at both: cosines 0.6 and 0.8
    corr = head_correlation(maps)[0]
    expected = torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8], [0.6, 0.8, 1.0]])
    torch.testing.assert_close(corr, expected)
    assert head_diversity(corr).item() == pytest.approx((0.0 + 0.6 + 0.8) / 3)


def test_head_diversity_averages_the_off_diagonal_over_every_leading_axis():
    corr = torch.stack([torch.tensor([[1.0, 0.2], [0.2, 1.0]]), torch.tensor([[1.0, 0.4], [0.4, 1.0]])])
    assert head_diversity(corr).item() == pytest.approx(0.3)


def test_similarity_gap_ignores_the_class_token():
    same = torch.tensor([[[-1.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])    # class token, 3 patches
    opposite = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(similarity_gap([same, opposite]), torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(similarity_gap([torch.cat([same, opposite])]), torch.tensor([1.0]))


def test_vector_shift_against_the_twin():
    meta = pd.DataFrame({"occluded_fraction": [0.4, 0.0], "occluder": ["car", "none"]},
                        index=["a.jpg", "b.jpg"])
    occluded = {"a.jpg": torch.tensor([1.0, 0.0]), "b.jpg": torch.tensor([0.5, 0.5])}
    holistic = {"a.jpg": torch.tensor([0.0, 1.0]), "b.jpg": torch.tensor([0.5, 0.5])}
    df = vector_shift(occluded, holistic, meta).set_index("image")
    assert df.loc["a.jpg", "occluder"] == "object" and df.loc["a.jpg", "occluded fraction"] == 0.4
    assert df.loc["a.jpg", "cosine to twin"] == pytest.approx(0.0)
    assert df.loc["a.jpg", "mean abs change"] == pytest.approx(1.0)
    assert df.loc["b.jpg", "cosine to twin"] == pytest.approx(1.0)
    assert df.loc["b.jpg", "mean abs change"] == 0.0 and df.loc["b.jpg", "mean (twin)"] == 0.5
