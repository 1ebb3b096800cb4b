"""CLIP (open_clip) as a ReID backbone: an image encoder that exposes its patch tokens, a frozen text
encoder (for text prototypes and prompt learning, as RGANet uses them) and the offline BPE tokenizer.

The model is `open_clip.CLIP` built from a config dict (never `pretrained=` names, which download);
open_clip ships the tokenizer's vocabulary inside the package, so nothing reaches the network.
Parameter names are those of OpenAI's release, so open_clip's `open_clip_pytorch_model.bin` /
`.safetensors` and `ViT-B-16.pt` load into `self.model`. The latter is TorchScript, read with
`torch.jit.load(...).state_dict()` as open_clip itself does, which runs code from the file: it is read
only with $REIDLIB_ALLOW_TORCHSCRIPT=1 (reidlib.models.weights).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from reidlib.models.sie import camera_embedding
from reidlib.models.stem import build_stem, check_stem
from reidlib.models.vit import INIT_STD, patch_grid, resize_pos_embed, tokens_to_map
from reidlib.models.weights import LoadReport, PretrainedSpec, load_pretrained

CLIP_B16_FILES = ("ViT-B-16.pt", "open_clip_pytorch_model.bin", "open_clip_model.safetensors")
TOKENIZER_NAME = "ViT-B-16"  # every config here shares CLIP's 49,408-token BPE vocabulary

# open_clip's ViT-B-16 config (embed 512; vision 12 x 768, 12 heads; text 12 x 512, 8 heads).
CLIP_B16_CFG = dict(
    embed_dim=512,
    vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=16, head_width=64),
    text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
)
# Narrow twin for ci/demo: same structure, vision 12 x 96 (3 heads of 32), text 2 x 64.
CLIP_SMALL_CFG = dict(
    embed_dim=64,
    vision_cfg=dict(image_size=224, layers=12, width=96, patch_size=16, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
)
# ci: vision 4 x 48 (3 heads of 16), text 1 x 32.
CLIP_TINY_CFG = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=224, layers=4, width=48, patch_size=16, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)


class CLIPBackbone(nn.Module):
    """open_clip CLIP with token access, optional camera SIE (as CLIP-ReID) and a frozen text tower.

    encode_image_tokens(x, camids) -> (cls [N, E] projected to the joint space,
                                       patch tokens [N, L, Dv] after ln_post, not projected)
    forward_visual(x, camids, return_all) -> the visual token sequence before ln_post, [N, 1+L, Dv],
                                       or the list of every block's output
    project(tokens [..., Dv]) -> [..., E]       (patch tokens into the text space)
    encode_text(token_ids [T, ctx]) -> [T, E]
    encode_text_embeddings(embeddings [T, ctx, Dt], token_ids) -> [T, E]   (learnable prompts)
    """

    def __init__(
        self, model: nn.Module, num_cameras: int = 0, sie_coef: float = 3.0, freeze_text: bool = True
    ):
        super().__init__()
        import open_clip

        self.model = model
        visual = model.visual
        if visual.attn_pool is not None or visual.final_ln_after_pool or visual.pool_type != "tok":
            raise ValueError("CLIPBackbone supports class-token ViT CLIP configs only")
        self.tokenizer = open_clip.get_tokenizer(TOKENIZER_NAME, context_length=model.context_length)
        self.width = visual.transformer.width  # Dv
        self.feature_dim = self.width  # token width a method's head receives (uniform across kinds)
        self.embed_dim = visual.output_dim  # E
        self.num_heads = visual.transformer.resblocks[0].attn.num_heads
        self.num_blocks = len(visual.transformer.resblocks)
        self.grid_size = tuple(visual.grid_size)
        self.patch_size = visual.patch_size[0]
        self.image_size = tuple(visual.image_size)
        self.text_width = model.token_embedding.embedding_dim  # Dt
        self.num_cameras, self.sie_coef = num_cameras, sie_coef
        self.sie_embed = None
        if num_cameras > 0:
            self.sie_embed = nn.Parameter(torch.zeros(num_cameras, 1, self.width))
            nn.init.trunc_normal_(self.sie_embed, std=INIT_STD)
        if freeze_text:
            for p in self.text_parameters():
                p.requires_grad_(False)

    # ---- text tower -------------------------------------------------------------------------
    def text_parameters(self):
        m = self.model
        yield from (m.token_embedding.weight, m.positional_embedding, m.text_projection)
        yield from m.transformer.parameters()
        yield from m.ln_final.parameters()

    @property
    def logit_scale(self) -> Tensor:
        """CLIP's learned log temperature (a parameter; logits use its exp)."""
        return self.model.logit_scale

    def tokenize(self, texts: str | list[str]) -> Tensor:
        """Texts -> token ids [T, context_length] (offline BPE)."""
        return self.tokenizer(texts)

    def encode_text(self, token_ids: Tensor) -> Tensor:
        return self.model.encode_text(token_ids)  # [T, E]

    def encode_text_embeddings(self, embeddings: Tensor, token_ids: Tensor) -> Tensor:
        """Text features from token embeddings [T, ctx, Dt] (e.g. with learnable context vectors spliced
        in); `token_ids` [T, ctx] only locate the end-of-text token that is pooled."""
        from open_clip.transformer import text_global_pool

        m = self.model
        x = embeddings + m.positional_embedding.to(embeddings.dtype)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))  # [T, ctx, Dt]
        x = text_global_pool(x, token_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        return x @ m.text_projection  # [T, E]

    # ---- image tower ------------------------------------------------------------------------
    def _camera(self, camids: Tensor | None, n: int) -> Tensor | None:
        if self.sie_embed is None:
            return None
        return camera_embedding(self.sie_embed, camids, n, self.sie_coef, "CLIP backbone")  # [N, 1, Dv]

    def embed(self, x: Tensor, camids: Tensor | None = None) -> Tensor:
        """Tokens entering the first block: ln_pre([cls; patches] + pos (+ lambda * SIE)), [N, 1+L, Dv]."""
        v = self.model.visual
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} differs from the CLIP backbone's {self.image_size}; "
                f"build it with img_size={tuple(x.shape[-2:])}"
            )
        tokens = v.conv1(x).flatten(2).transpose(1, 2)  # [N, L, Dv]
        cls = v.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + v.positional_embedding.to(tokens.dtype)
        cam = self._camera(camids, tokens.shape[0])
        if cam is not None:
            tokens = tokens + cam
        return v.ln_pre(v.patch_dropout(tokens))

    def forward_visual(self, x: Tensor, camids: Tensor | None = None, return_all: bool = False):
        tokens = self.embed(x, camids)
        transformer = self.model.visual.transformer
        if not transformer.batch_first:
            raise ValueError(
                "open_clip transformer is not batch_first; this open_clip version is unsupported"
            )
        outs = []
        for block in transformer.resblocks:
            tokens = block(tokens)
            outs.append(tokens)
        return outs if return_all else tokens

    def project(self, tokens: Tensor) -> Tensor:
        return tokens @ self.model.visual.proj  # [..., Dv] -> [..., E]

    def encode_image_tokens(self, x: Tensor, camids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        tokens = self.model.visual.ln_post(self.forward_visual(x, camids))  # [N, 1+L, Dv]
        return self.project(tokens[:, 0]), tokens[:, 1:]

    def forward(self, x: Tensor, camids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.encode_image_tokens(x, camids)

    def spatial(self, tokens: Tensor) -> Tensor:
        """Patch tokens [N, L, C] (or [N, 1+L, C], class token dropped) -> map [N, C, h, w]."""
        return tokens_to_map(tokens, self.grid_size)

    def load_pretrained(
        self, pretrained: PretrainedSpec, sha256: str | None = None, expected=CLIP_B16_FILES
    ) -> LoadReport | None:
        """Load CLIP weights into `self.model`; the visual position embedding is resized (bilinear,
        class token kept) from the checkpoint's square grid to this backbone's grid."""
        target = self.model.visual.positional_embedding

        def adapt(state: dict[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
            key = "visual.positional_embedding"
            pos = state.get(key)
            if pos is not None and pos.shape != target.shape:
                side = int(round((pos.shape[0] - 1) ** 0.5))
                state[key] = resize_pos_embed(pos[None], (side, side), self.grid_size)[0]
                report.adapted.append(f"{key} {side}x{side} -> {self.grid_size[0]}x{self.grid_size[1]}")
            return state

        return load_pretrained(self.model, pretrained, expected, sha256, adapt=adapt)


def build_clip(
    cfg: dict,
    img_size: tuple[int, int] = (256, 128),
    quick_gelu: bool = True,
    num_cameras: int = 0,
    sie_coef: float = 3.0,
    freeze_text: bool = True,
    pretrained: PretrainedSpec = None,
    sha256: str | None = None,
    expected: tuple[str, ...] = (),
    stem: str = "patchify",
) -> CLIPBackbone:
    """Build `open_clip.CLIP(**cfg)` at `img_size` (grid H/16 x W/16) and wrap it.

    quick_gelu: OpenAI's weights (ViT-B-16.pt and open_clip's 'openai' tag) were trained with QuickGELU;
    set False for LAION-trained open_clip weights.
    stem: "conv" / "hybrid" replaces the visual patchify conv (`visual.conv1`) (models/stem.py)."""
    import open_clip

    cfg = copy.deepcopy(cfg)
    cfg["vision_cfg"]["image_size"] = tuple(img_size)
    patch = cfg["vision_cfg"]["patch_size"]
    patch_grid(tuple(img_size), patch, patch)  # validates
    check_stem(stem, tuple(img_size), patch, patch)
    model = open_clip.CLIP(**cfg, quick_gelu=quick_gelu)
    if stem != "patchify":
        model.visual.conv1 = build_stem(stem, 3, model.visual.transformer.width)
    backbone = CLIPBackbone(model, num_cameras=num_cameras, sie_coef=sie_coef, freeze_text=freeze_text)
    backbone.load_report = backbone.load_pretrained(pretrained, sha256, expected)
    return backbone


def clip_vit_b16(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> CLIPBackbone:
    """CLIP ViT-B/16; weights: OpenAI's ViT-B-16.pt or open_clip's open_clip_pytorch_model.bin."""
    return build_clip(CLIP_B16_CFG, pretrained=pretrained, sha256=sha256, expected=CLIP_B16_FILES, **kwargs)


def clip_small(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> CLIPBackbone:
    """demo: narrow CLIP of the same structure (vision 12 x 96, text 2 x 64), 128x64 by default, with the
    convolutional stem (random init: a patchify stem does not learn in the demo budget; models/stem.py)."""
    kwargs.setdefault("img_size", (128, 64))
    kwargs.setdefault("stem", "conv")
    return build_clip(CLIP_SMALL_CFG, pretrained=pretrained, sha256=sha256, **kwargs)


def clip_small_hybrid(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> CLIPBackbone:
    """clip_small with the hybrid stem (MobileNetV2's ImageNet layers up to stride 16; models/stem.py)."""
    return clip_small(pretrained, sha256, **{"stem": "hybrid", **kwargs})


def clip_tiny_ci(pretrained: PretrainedSpec = None, sha256: str | None = None, **kwargs) -> CLIPBackbone:
    """ci: narrow CLIP (vision 4 x 48, text 1 x 32), 64x32 by default."""
    kwargs.setdefault("img_size", (64, 32))
    return build_clip(CLIP_TINY_CFG, pretrained=pretrained, sha256=sha256, **kwargs)
