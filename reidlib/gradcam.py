"""Grad-CAM (pytorch-grad-cam's `GradCAM`) for any registered method: which pixels make an image's descriptor
similar to a reference descriptor.

    maps = gradcam(method, batch)                        # [N, H, W] in [0, 1]: each image against itself
    ref = descriptor(method, query_batch)[0]             # [D] the query's descriptor
    maps = gradcam(method, gallery_batch, reference=ref) # which pixels make each gallery image look like it

The model Grad-CAM differentiates maps images to the method's descriptor (`descriptor_of`): the method's own
`embed` run with gradients, its Embedding flattened into one vector,

    d = [ g / |g|,  w_1 p_1 / |p_1|, ..., w_K p_K / |p_K| ]      (g: global_feat, p_k: parts, w_k: weights)

so that d_a . d_b = cos(g_a, g_b) + sum_k w_k^a w_k^b cos(p_k^a, p_k^b): one similarity for global and part
methods alike, a proxy of each method's own matching rule (which `distance` keeps; extras such as BPBreID's
holistic embeddings or DPM's mask are not part of d). The Grad-CAM target of image i is d_i . r_i.

Self-similarity (`reference=None`): an image's similarity to its own descriptor is at its maximum, so its
gradient vanishes wherever d is built from unit vectors (every piece of d above, and most methods normalise
inside `embed` already): d_0 . (dd/dA) = 0. The reference of an image is therefore its own descriptor minus
that of a blank image (zeros after normalisation: the data's mean colour, same camera): the map shows the
pixels that make the image look like itself rather than like an empty picture. Where the gradient still
vanishes (a blank image whose descriptor is zero, as in an untrained bias-free CNN, or an image without any
visible part, hence a zero descriptor) the map is zero: there is no first-order evidence to show.

Target layers (`target_layers`), by `backbone_kind` of the method's `backbone_attribute` module:
  cnn  -> that module itself: its output is the feature map [N, C, h, w] every CNN method pools from;
  vit  -> the last block's norm1 (the attention's input), tokens [N, 1+L, D];
  clip -> the last resblock's ln_1 (open_clip, batch first), tokens [N, 1+L, Dv];
the token layers' class token is dropped and the patch tokens laid on the patch grid (`backbone.spatial`).
The method is left as it was: weights, requires_grad flags, gradients and train / eval modes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.methods.base import Batch, Embedding, ReIDMethod
from reidlib.models import backbone_kind

# the code object of every function torch's grad-mode decorators (no_grad, enable_grad, inference_mode) wrap
_GRAD_MODE_WRAPPER = torch.no_grad()(lambda: None).__code__
# A target layer gradient at most this times the reference's largest entry is rounding noise: e.g. 1e-10 for a
# unit descriptor against itself, 1e-4 and more for real contrasts of the ci models; the map is then zero.
VANISHING_GRADIENT = 1e-6


# ------------------------------------------------------------------------------------ descriptor
def descriptor_of(emb: Embedding) -> Tensor:
    """The vector Grad-CAM compares (module docstring): [N, D] from an Embedding's global feature and its
    weighted parts, each L2-normalised."""
    pieces = []
    if emb.global_feat is not None:
        pieces.append(F.normalize(emb.global_feat.flatten(1), dim=1))            # [N, Dg]
    if emb.parts is not None:
        parts = F.normalize(emb.parts, dim=-1)                                    # [N, K, Dp]
        if emb.weights is not None:
            parts = parts * emb.weights.unsqueeze(-1).to(parts.dtype)
        pieces.append(parts.flatten(1))                                           # [N, K * Dp]
    if not pieces:
        raise ValueError("the Embedding has neither global_feat nor parts: Grad-CAM needs a descriptor")
    return torch.cat(pieces, dim=1)


@torch.no_grad()
def descriptor(method: ReIDMethod, batch: Batch) -> Tensor:
    """The method's descriptor of a batch, [N, D] (a reference for `gradcam`), in eval mode."""
    with _untouched(method):
        method.eval()
        return descriptor_of(method.embed(batch.to(_device(method))))


def _with_gradients(fn: Callable) -> Callable:
    """`fn` without torch's grad-mode decorators (ReIDMethod.embed is @torch.no_grad()); other
    decorators stay."""
    while getattr(fn, "__code__", None) is _GRAD_MODE_WRAPPER and hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


class DescriptorModel(nn.Module):
    """images [N, 3, H, W] -> the method's descriptor [N, D], differentiable; the batch's other fields
    (cameras, masks, normalisation) are those of `batch`."""

    def __init__(self, method: ReIDMethod, batch: Batch):
        super().__init__()
        self.method, self.batch = method, batch
        self._embed = _with_gradients(type(method).embed)

    def forward(self, images: Tensor) -> Tensor:
        # the parameters are frozen during Grad-CAM (none gets a gradient): the graph hangs on the input
        images = images.detach().requires_grad_(True)
        with torch.enable_grad():
            desc = descriptor_of(self._embed(self.method, replace(self.batch, images=images)))
        if not desc.requires_grad:
            raise ValueError(f"{type(self.method).__name__}.embed computes its descriptor without gradients "
                             "(a no_grad block inside it): Grad-CAM cannot differentiate it")
        return desc


# ------------------------------------------------------------------------------------ target layers
def backbone_of(method: ReIDMethod) -> nn.Module:
    backbone = getattr(method, method.backbone_attribute, None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(method).__name__} has no backbone module at its backbone_attribute "
                         f"{method.backbone_attribute!r}: set backbone_attribute to the image encoder's name")
    return backbone


def target_layers(method: ReIDMethod) -> list[nn.Module]:
    """The layer Grad-CAM weighs, by backbone kind (module docstring)."""
    backbone = backbone_of(method)
    kind = backbone_kind(backbone)
    if kind == "vit":
        return [backbone.blocks[-1].norm1]
    if kind == "clip":
        return [backbone.model.visual.transformer.resblocks[-1].ln_1]
    return [backbone]


def reshape_transform(method: ReIDMethod) -> Callable[[Tensor], Tensor] | None:
    """Token layers' activations and gradients [N, 1+L, D] -> [N, D, h, w] (class token dropped); None
    for a CNN, whose target layer gives the map itself."""
    backbone = backbone_of(method)
    return backbone.spatial if backbone_kind(backbone) in ("vit", "clip") else None


# ------------------------------------------------------------------------------------ Grad-CAM
class SimilarityTarget:
    """pytorch-grad-cam target: the dot product of one image's descriptor [D] with a reference [D]."""

    def __init__(self, reference: Tensor):
        self.reference = reference

    def __call__(self, output: Tensor) -> Tensor:
        if output.shape != self.reference.shape:
            raise ValueError(f"reference of shape {tuple(self.reference.shape)} does not match the method's "
                             f"descriptor {tuple(output.shape)}: pass gradcam.descriptor(method, batch) rows")
        return (output * self.reference.to(output)).sum()


def gradcam(method: ReIDMethod, batch: Batch, reference: Tensor | None = None) -> Tensor:
    """Grad-CAM maps [N, H, W] in [0, 1] at the image size, on the CPU: where image i's descriptor draws its
    similarity to `reference` ([D] for every image, or [N, D] one row each; None: each image's own
    descriptor against a blank image's, see the module docstring). The method is left untouched."""
    from pytorch_grad_cam import GradCAM

    device = _device(method)
    batch = batch.to(device)
    if reference is None:
        reference = descriptor(method, batch) - descriptor(method, _blank(batch))  # [N, D]
    reference = reference.detach().to(device)
    rows = reference.expand(len(batch), -1) if reference.dim() == 1 else reference
    if rows.dim() != 2 or rows.shape[0] != len(batch):
        raise ValueError(f"reference of shape {tuple(reference.shape)}: pass [D] or [N, D] with "
                         f"N={len(batch)}")
    layers = target_layers(method)
    with _untouched(method):
        method.eval()
        cam = GradCAM(DescriptorModel(method, batch), layers, reshape_transform=reshape_transform(method))
        try:
            maps = torch.from_numpy(cam(batch.images, targets=[SimilarityTarget(r) for r in rows]))
            _check_hooks(cam, layers, method)
            maps[_vanished(cam.activations_and_grads.gradients[0], rows)] = 0.0  # [N, H, W]
        finally:
            cam.activations_and_grads.release()
    return maps.float().clamp(0.0, 1.0)


def _vanished(grads: Tensor, rows: Tensor) -> Tensor:
    """[N] bool: images whose target's gradient is rounding noise (a reference along the image's own unit
    descriptor, or a zero descriptor), which Grad-CAM's min-max scaling would blow up into a map."""
    scale = rows.detach().abs().amax(dim=1).cpu()                                    # [N]
    return grads.flatten(1).abs().amax(dim=1) <= VANISHING_GRADIENT * scale


def _check_hooks(cam, layers: list[nn.Module], method: ReIDMethod) -> None:
    """One activation and one gradient per target layer: a layer run twice by `embed` would pair the
    wrong activation with a gradient."""
    got, name = cam.activations_and_grads, type(method).__name__
    if len(got.activations) != len(layers) or len(got.gradients) != len(layers):
        raise ValueError(f"{name}: the target layer ran {len(got.activations)} time(s) in one embed call "
                         f"with {len(got.gradients)} gradient(s); Grad-CAM needs exactly one each")
    if got.activations[0].dim() != 4:
        raise ValueError(f"{name}: the target layer gives {tuple(got.activations[0].shape)}, not a feature "
                         "map [N, C, h, w]")


def _blank(batch: Batch) -> Batch:
    """The batch with every image blank: zeros after normalisation, i.e. the data's mean colour."""
    return replace(batch, images=torch.zeros_like(batch.images))


def _device(method: nn.Module) -> torch.device:
    from reidlib.engine.inference import device_of

    return device_of(method)


@contextmanager
def _untouched(method: nn.Module) -> Iterator[None]:
    """Restore the parameters' requires_grad flags and gradients and every module's train / eval mode on
    exit; inside, no parameter requires a gradient (Grad-CAM needs the activations' gradients only)."""
    params = list(method.parameters())
    flags, grads = [p.requires_grad for p in params], [p.grad for p in params]
    modes = [(m, m.training) for m in method.modules()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
        for m, mode in modes:
            m.training = mode


__all__ = ["VANISHING_GRADIENT", "DescriptorModel", "SimilarityTarget", "backbone_of", "descriptor",
           "descriptor_of", "gradcam", "reshape_transform", "target_layers"]
