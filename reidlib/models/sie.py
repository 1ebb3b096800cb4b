"""Side information embedding of cameras (TransReID Sec. 3.3, Eq. 5; CLIP-ReID uses the same): a learnable
vector per training camera, scaled by lambda and added to every token. Shared by the ViT and CLIP backbones.

A test camera the training split never saw (e.g. a gallery camera absent from training) has no learned
vector. It gets the mean of the learned ones, the "average camera": SIE then adds what the camera vectors
share and nothing camera-specific that was never trained. (TransReID's code indexes the table and would
fail; the engine cannot know beforehand which test cameras a model will meet.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def camera_embedding(table: Tensor, camids: Tensor | None, n: int, coef: float, owner: str) -> Tensor:
    """coef * table[camids] as [N, 1, D]; table [num_cameras, 1, D]; ids >= num_cameras get the mean row."""
    if camids is None:
        raise ValueError(f"this {owner} has a camera embedding ({table.shape[0]} cameras): pass camids, or "
                         "build it with num_cameras=0")
    camids = torch.as_tensor(camids, device=table.device).long()
    if camids.shape != (n,):
        raise ValueError(f"camids must have shape ({n},), got {tuple(camids.shape)}")
    if camids.numel() and int(camids.min()) < 0:
        raise ValueError(f"camera ids must be >= 0; got {int(camids.min())}")
    known = camids < table.shape[0]
    if bool(known.all()):
        return coef * table[camids]
    rows = table[camids.clamp_max(table.shape[0] - 1)]                   # [N, 1, D]
    mean = table.mean(0, keepdim=True).expand_as(rows)
    return coef * torch.where(known.view(-1, 1, 1), rows, mean)


__all__ = ["camera_embedding"]
