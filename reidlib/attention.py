"""What a ViT's heads and blocks attend to: the analyses behind DPM's Fig. 3 and Fig. 4 (Tan et al.,
"Dynamic Prototype Mask for Occluded Person Re-Identification", ACM MM 2022), usable on any ViT method.

    corr = head_correlation(explain(batch)["head_attention"])   # [N, H, H], Fig. 3(a) / Fig. 4
    head_diversity(corr)                                       # mean off-diagonal entry (lower = diverse)
    similarity_gap(model.block_tokens(batch))                  # [blocks], Fig. 3(b)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def head_correlation(head_attention: Tensor) -> Tensor:
    """Cross-correlation of the heads' attention maps [N, H, h, w] -> [N, H, H]: the cosine of every pair of
    flattened maps, i.e. A A^T of DPM's Eq. (6) with A's rows L2-normalised (1 on the diagonal; maps are
    non-negative, so entries lie in [0, 1])."""
    a = F.normalize(head_attention.flatten(2).float(), dim=-1)          # [N, H, h*w]
    return a @ a.transpose(1, 2)


def head_diversity(corr: Tensor) -> Tensor:
    """Mean off-diagonal entry of cross-correlation matrices [..., H, H] (over all leading axes too)."""
    h = corr.shape[-1]
    off = ~torch.eye(h, dtype=torch.bool, device=corr.device)
    return corr[..., off].mean()


def similarity_gap(blocks: list[Tensor], num_prefix_tokens: int = 1) -> Tensor:
    """DPM's Fig. 3(b): per block, the "maximum similarity gap" between patch tokens, read as 1 minus the
    cosine similarity of the two most dissimilar patches of an image (class token ignored), averaged
    over the images. blocks: every block's output [N, prefix + L, D] -> [len(blocks)]."""
    gaps = []
    for tokens in blocks:
        p = F.normalize(tokens[:, num_prefix_tokens:].float(), dim=-1)   # [N, L, D]
        cos = p @ p.transpose(1, 2)                                     # [N, L, L]
        gaps.append(1 - cos.amin(dim=(1, 2)).mean())
    return torch.stack(gaps)


__all__ = ["head_correlation", "head_diversity", "similarity_gap"]
