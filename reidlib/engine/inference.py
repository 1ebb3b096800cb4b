"""Feature extraction and evaluation with a method's own matching rule (`method.distance`)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from reidlib.config import DataConfig
from reidlib.methods.base import Batch, Embedding


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _average(a: Embedding, b: Embedding) -> Embedding:
    """Mean of two embeddings' floating-point tensors; non-float extras (indices, flags) come from `a`."""
    def mean(x: Tensor | None, y: Tensor | None) -> Tensor | None:
        if x is None or not torch.is_floating_point(x):
            return x
        return (x + y) / 2

    return Embedding(global_feat=mean(a.global_feat, b.global_feat), parts=mean(a.parts, b.parts),
                     weights=mean(a.weights, b.weights),
                     extras={k: mean(v, b.extras[k]) for k, v in a.extras.items()})


@torch.no_grad()
def extract(model: nn.Module, loader: Iterable[dict], flip: bool = False,
            device: torch.device | str | None = None,
            data_cfg: DataConfig | None = None) -> tuple[Embedding, np.ndarray, np.ndarray]:
    """Embed every batch of `loader` in eval mode: (Embedding on the CPU, pids [N], camids [N]).

    flip: the embedding is the mean of the image's and its horizontal mirror's embeddings (every
    floating-point field: global, parts, weights, float extras), the usual ReID test-time
    augmentation. Part order is unaffected: parts are horizontal stripes or semantic regions, and a
    method whose parts have a left/right side must handle that inside `embed`. Part masks, when the
    loader gives them, are flipped alongside the image. `data_cfg` gives the batches their normalisation.
    """
    device = torch.device(device) if device is not None else device_of(model)
    was_training = model.training
    model.eval()
    embeddings, pids, camids = [], [], []
    try:
        for item in loader:
            batch = Batch.from_loader(item, data_cfg).to(device)
            emb = model.embed(batch)
            if flip:
                emb = _average(emb, model.embed(batch.flip()))
            embeddings.append(emb.map(lambda t: t.detach().cpu()))
            pids.append(item["pid"].cpu().numpy())
            camids.append(item["camid"].cpu().numpy())
    finally:
        model.train(was_training)
    if not embeddings:
        raise ValueError("extract(): the loader yielded no batches (empty query or gallery split?)")
    return Embedding.cat(embeddings), np.concatenate(pids), np.concatenate(camids)


def extract_test(model: nn.Module, dataset, data_cfg: DataConfig, flip: bool = False,
                 device: torch.device | str | None = None) -> tuple[tuple, tuple]:
    """`extract` of the query and of the gallery split: ((embedding, pids, camids), (...)). Test loaders come
    from `build_test_loader(records, data_cfg)`, with part masks when the method declares `test_masks`."""
    from reidlib.data.loader import build_test_loader

    with_masks = bool(getattr(model, "test_masks", False))
    query, gallery = (extract(model, build_test_loader(records, data_cfg, root=dataset.root,
                                                       with_masks=with_masks), flip, device, data_cfg)
                      for records in (dataset.query, dataset.gallery))
    return query, gallery


def evaluate_model(model: nn.Module, dataset, data_cfg: DataConfig, flip: bool = False,
                   device: torch.device | str | None = None, max_rank: int = 50) -> dict[str, float]:
    """Query-vs-gallery evaluation of `model` on `dataset` with `model.distance`.

    Returns fractions (as `EvaluationResult.as_dict`): mAP, rank1, rank5, rank10, mINP; plus
    `inference_images_per_s` (query + gallery images over the extraction time) and
    `num_valid_queries`. Embeddings come from `extract_test`.
    """
    from reidlib.evaluation import evaluate

    device = torch.device(device) if device is not None else device_of(model)
    start = time.perf_counter()
    (q_emb, q_pids, q_cams), (g_emb, g_pids, g_cams) = extract_test(model, dataset, data_cfg, flip, device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        distmat = model.distance(q_emb.to(device), g_emb.to(device))  # [Q, G]
    result = evaluate(distmat.float().cpu().numpy(), q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    images = len(q_pids) + len(g_pids)
    return {**result.as_dict(), "num_valid_queries": result.num_valid_queries,
            "inference_images_per_s": images / max(seconds, 1e-9)}


__all__ = ["device_of", "extract", "extract_test", "evaluate_model"]
