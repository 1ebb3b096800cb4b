from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from reidlib.models import BACKBONES, backbone_kind, build_backbone
from reidlib.models.resnet import IBN
from reidlib.models.stem import ConvStem
from reidlib.models.vit import ReIDViT, attention_probs, patch_grid, resize_pos_embed


def tiny_vit(**kwargs) -> ReIDViT:
    torch.manual_seed(0)
    return build_backbone("vit_tiny_ci", **{"depth": 2, "drop_path_rate": 0.0, **kwargs}).eval()


# ---- CNNs -----------------------------------------------------------------------------------------


def test_resnet50_last_stride_one_gives_16x8_at_256x128():
    with torch.device("meta"):  # shapes only: no weights initialised, no arithmetic
        model = build_backbone("resnet50")
        out = model(torch.empty(2, 3, 256, 128))
        stages = model.forward_stages(torch.empty(2, 3, 256, 128))
    assert out.shape == (2, 2048, 16, 8)
    assert model.out_channels == 2048 and model.stride == 16
    assert [s.shape[1:] for s in stages] == [(256, 64, 32), (512, 32, 16), (1024, 16, 8), (2048, 16, 8)]
    with torch.device("meta"):
        assert build_backbone("resnet50", last_stride=2)(torch.empty(1, 3, 256, 128)).shape[-2:] == (8, 4)


def test_resnet50_ibn_a_layers_1_to_3_only():
    with torch.device("meta"):
        model = build_backbone("resnet50", ibn=True)
    for i, layer in enumerate(model.layers):
        kinds = {type(block.bn1) for block in layer}
        assert kinds == ({IBN} if i < 3 else {torch.nn.BatchNorm2d})
    assert isinstance(model.bn1, torch.nn.BatchNorm2d)  # IBN-a keeps a BN stem
    keys = model.state_dict().keys()
    assert "layer1.0.bn1.IN.weight" in keys and "layer3.5.bn1.BN.running_mean" in keys  # IBN-Net names
    assert model.layer1[0].bn1.IN.num_features == 32 and model.layer1[0].bn1.BN.num_features == 32


def test_ibn_normalises_half_per_instance_half_per_batch():
    torch.manual_seed(0)
    ibn = IBN(8).train()
    x = torch.randn(4, 8, 5, 5) * torch.arange(1, 5.0).view(4, 1, 1, 1) + 3.0  # per-sample scale
    y = ibn(x)
    inst = y[:, :4].flatten(2)  # IN half: every sample-channel has mean 0, var 1
    assert torch.allclose(inst.mean(-1), torch.zeros(4, 4), atol=1e-5)
    assert torch.allclose(inst.var(-1, unbiased=False), torch.ones(4, 4), atol=1e-3)
    batch = y[:, 4:].transpose(0, 1).flatten(1)  # BN half: statistics over the batch, not per sample
    assert torch.allclose(batch.mean(-1), torch.zeros(4), atol=1e-5)
    assert not torch.allclose(y[:, 4:].flatten(2).mean(-1), torch.zeros(4, 4), atol=1e-2)


@pytest.mark.parametrize(
    "name,kwargs,channels",
    [("resnet_tiny", {}, 128), ("resnet_small", {}, 256), ("resnet_small", {"depth": 18, "ibn": True}, 256)],
)
def test_small_resnets_keep_resnet50_structure(name, kwargs, channels):
    model = build_backbone(name, **kwargs)
    x = torch.randn(2, 3, 64, 32)
    maps = model.forward_stages(x)
    assert len(model.layers) == 4 and len(maps) == 4
    assert model(x).shape == (2, channels, 4, 2) and model.stride == 16  # last stride 1
    assert [m.shape[1] for m in maps] == model.stage_channels and model.out_channels == channels
    assert len(model.layer1) == (2 if kwargs.get("depth") == 18 else 1)
    assert build_backbone(name, img_size=(64, 32), **kwargs)(x).shape == (
        2,
        channels,
        4,
        2,
    )  # accepted, unused
    with pytest.raises(ValueError, match="depth"):
        build_backbone(name, depth=50)


def test_hrnet_concatenates_upsampled_branches():
    with torch.device("meta"):
        model = build_backbone("hrnet_w32")
        out = model(torch.empty(1, 3, 256, 128))
    assert model.stage_channels == [32, 64, 128, 256] and model.stride == 4
    assert out.shape == (1, 480, 64, 32)


def test_an_option_the_backbone_lacks_is_named():
    message = r"backbone 'hrnet_w32' has no option\(s\) \['last_stride'\] \(its options: \['img_size'\]\)"
    with pytest.raises(ValueError, match=message):
        build_backbone("hrnet_w32", last_stride=1)


# ---- ViT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,stride,grid",
    [((256, 128), 16, (16, 8)), ((256, 128), 12, (21, 10)), ((128, 64), 16, (8, 4)), ((128, 64), 8, (15, 7))],
)
def test_vit_grid_for_strides_and_sizes(size, stride, grid):
    assert patch_grid(size, 16, stride) == grid
    with torch.device("meta"):
        vit = build_backbone("vit_base_patch16", img_size=size, stride=stride)
        out = vit(torch.empty(2, 3, *size))
    assert vit.grid_size == grid and vit.pos_embed.shape == (1, 1 + grid[0] * grid[1], 768)
    assert out.shape == (2, 1 + grid[0] * grid[1], 768)
    assert (vit.embed_dim, vit.num_heads, vit.num_blocks) == (768, 12, 12)


def test_vit_rejects_bad_stride_and_size():
    with pytest.raises(ValueError, match="stride"):
        patch_grid((256, 128), 16, 17)
    vit = tiny_vit()
    with pytest.raises(ValueError, match="img_size"):
        vit(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("size", [(128, 64), (64, 32), (256, 128)])
def test_conv_stem_gives_the_patchify_grid(size):
    stem = ConvStem(3, 48)
    tokens = torch.nn.Conv2d(3, 48, 16, stride=16)(torch.randn(2, 3, *size))
    assert stem(torch.randn(2, 3, *size)).shape == tokens.shape  # [N, D, H/16, W/16]
    with torch.device("meta"):
        vit = build_backbone("vit_small_demo", img_size=size)
        out = vit(torch.empty(2, 3, *size))
    assert isinstance(vit.patch_embed.proj, ConvStem)
    assert vit.grid_size == tuple(tokens.shape[-2:])
    assert out.shape == (2, 1 + size[0] // 16 * size[1] // 16, 96)


def test_conv_stem_rejects_overlap_and_odd_sizes():
    with pytest.raises(ValueError, match="patch_stride: 16"):
        build_backbone("vit_small_demo", stride=12)
    with pytest.raises(ValueError, match="divisible by 16"):
        build_backbone("vit_small_demo", img_size=(120, 64))
    with pytest.raises(ValueError, match="unknown stem"):
        build_backbone("vit_tiny_ci", stem="resnet")


def test_camera_embedding_acts_only_through_camids():
    vit = tiny_vit(num_cameras=3, sie_coef=3.0)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        a = vit(x, torch.tensor([0, 1]))
        assert torch.equal(a, vit(x, torch.tensor([0, 1])))
        b = vit(x, torch.tensor([2, 1]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])  # each image its own camera
    # coefficient 0: identical to a ViT without camera table and the same other weights
    vit.sie_coef = 0.0
    plain = tiny_vit(num_cameras=0)
    plain.load_state_dict({k: v for k, v in vit.state_dict().items() if k != "sie_embed"})
    with torch.no_grad():
        assert torch.allclose(vit(x, torch.tensor([0, 1])), plain(x), atol=1e-6)
        assert torch.allclose(vit(x, torch.tensor([2, 0])), plain(x), atol=1e-6)
    with pytest.raises(ValueError, match="camids"):
        vit(x)
    with pytest.raises(ValueError, match=">= 0"):
        vit(x, torch.tensor([0, -1]))
    vit.sie_coef = 3.0  # a camera the table lacks (unseen in training) adds the mean camera vector
    with torch.no_grad():
        mean = vit.sie_embed.mean(0, keepdim=True).expand(3, -1, -1).clone()
        unseen = vit(x, torch.tensor([0, 3]))
        vit.sie_embed.copy_(mean)
        assert torch.allclose(unseen[1], vit(x, torch.tensor([0, 0]))[1], atol=1e-6)


def test_every_block_tokens_and_final_norm():
    vit = tiny_vit(depth=3)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        outs = vit(x, return_all=True)
        last = vit(x)
    assert len(outs) == vit.num_blocks == 3
    assert all(o.shape == (2, 1 + 4 * 2, vit.embed_dim) for o in outs)
    assert torch.allclose(vit.norm(outs[-1]), last, atol=1e-6)
    assert vit.spatial(last).shape == (2, vit.embed_dim, 4, 2)


def test_last_block_attention_rows_sum_to_one_and_reproduce_the_block():
    vit = tiny_vit(depth=2)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        outs, attn = vit(x, return_all=True, return_attention=True)
        tokens_in = outs[-2]  # input of the last block
        assert attn.shape == (2, vit.num_heads, 9, 9)
        assert torch.allclose(attn.sum(-1), torch.ones(2, vit.num_heads, 9), atol=1e-5)
        block = vit.blocks[-1]
        h = block.norm1(tokens_in)
        n, t, d = h.shape
        v = block.attn.qkv(h).reshape(n, t, 3, vit.num_heads, d // vit.num_heads).permute(2, 0, 3, 1, 4)[2]
        mixed = (attn @ v).transpose(1, 2).reshape(n, t, d)  # [N, T, D]
        y = tokens_in + block.attn.proj(mixed)
        y = y + block.mlp(block.norm2(y))
        assert torch.allclose(y, outs[-1], atol=1e-5)
        assert torch.allclose(attention_probs(block.attn, h), attn)


def test_pos_embed_resize_keeps_cls_and_is_identity_at_same_size():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert torch.equal(resize_pos_embed(pos, (14, 14), (14, 14)), pos)
    resized = resize_pos_embed(pos, (14, 14), (21, 10))
    assert resized.shape == (1, 1 + 210, 8) and torch.equal(resized[:, 0], pos[:, 0])
    # a constant grid stays constant under bilinear resizing
    const = torch.cat([pos[:, :1], torch.ones(1, 196, 8)], 1)
    assert torch.allclose(resize_pos_embed(const, (14, 14), (16, 8))[:, 1:], torch.ones(1, 128, 8))
    with pytest.raises(ValueError, match="grid tokens"):
        resize_pos_embed(pos, (10, 10), (4, 4))


# ---- CLIP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_tiny():
    torch.manual_seed(0)
    return build_backbone("clip_tiny_ci", img_size=(64, 32)).eval()


def test_clip_encode_image_tokens_shapes(clip_tiny):
    with torch.no_grad():
        cls, tokens = clip_tiny.encode_image_tokens(torch.randn(2, 3, 64, 32))
        blocks = clip_tiny.forward_visual(torch.randn(2, 3, 64, 32), return_all=True)
    assert clip_tiny.grid_size == (4, 2)
    assert cls.shape == (2, clip_tiny.embed_dim) and tokens.shape == (2, 8, clip_tiny.width)
    assert clip_tiny.project(tokens).shape == (2, 8, clip_tiny.embed_dim)
    assert len(blocks) == clip_tiny.num_blocks and blocks[-1].shape == (2, 9, clip_tiny.width)
    assert clip_tiny.spatial(tokens).shape == (2, clip_tiny.width, 4, 2)
    assert torch.equal(clip_tiny.spatial(blocks[-1]), clip_tiny.spatial(blocks[-1][:, 1:]))
    assert backbone_kind(clip_tiny) == "clip"


def test_clip_small_structure():
    with torch.device("meta"):
        clip = build_backbone("clip_small")
        cls, tokens = clip.encode_image_tokens(torch.empty(2, 3, 128, 64))
    assert (clip.width, clip.num_heads, clip.num_blocks, clip.embed_dim) == (96, 3, 12, 64)
    assert cls.shape == (2, 64) and tokens.shape == (2, 32, 96)
    assert isinstance(clip.model.visual.conv1, ConvStem) and clip.patch_size == 16


def test_clip_text_is_frozen_and_tokenizer_offline(clip_tiny, monkeypatch):
    monkeypatch.setattr(socket, "socket", _no_network)
    ids = clip_tiny.tokenize(["a head part of a person", "a foot part of a person"])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    with torch.no_grad():
        text = clip_tiny.encode_text(ids)
        via_embeddings = clip_tiny.encode_text_embeddings(clip_tiny.model.token_embedding(ids), ids)
    assert text.shape == (2, clip_tiny.embed_dim) and torch.allclose(text, via_embeddings, atol=1e-5)
    assert not any(p.requires_grad for p in clip_tiny.text_parameters())
    assert clip_tiny.model.visual.conv1.weight.requires_grad
    assert clip_tiny.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_clip_camera_embedding(clip_tiny):
    cam = build_backbone("clip_tiny_ci", img_size=(64, 32), num_cameras=2).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert not torch.allclose(cam(x, torch.tensor([0]))[0], cam(x, torch.tensor([1]))[0])


# ---- no network -----------------------------------------------------------------------------------


def _no_network(*args, **kwargs):
    raise AssertionError("a backbone tried to open a network connection")


def test_building_every_backbone_touches_no_network(monkeypatch):
    monkeypatch.setattr(socket, "socket", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    with torch.device("meta"):  # construction code only; no weights materialised
        for name in BACKBONES.names():
            model = build_backbone(name, pretrained=None)
            assert model.load_report is None, name
    assert {"resnet50", "vit_base_patch16", "clip_vit_b16", "hrnet_w32"} <= set(BACKBONES.names())
    assert backbone_kind(model) in {"cnn", "vit", "clip"}


def test_vit_features_trainable():
    vit = tiny_vit(num_cameras=2).train()
    out = vit(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    F.mse_loss(out, torch.zeros_like(out)).backward()
    assert vit.sie_embed.grad is not None and vit.patch_embed.proj.weight.grad is not None
