from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from reidlib.models import build_backbone
from reidlib.models.weights import (
    ALLOW_TORCHSCRIPT_ENV,
    WeightsError,
    load_pretrained,
    read_state_dict,
    resolve_pretrained,
    sha256_of,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


def test_missing_file_names_the_file_and_the_folder(tmp_path):
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet50", pretrained=tmp_path)
    assert "resnet50-*.pth" in str(err.value) and str(tmp_path) in str(err.value)
    assert "model.pretrained" in str(err.value)
    with pytest.raises(WeightsError, match="jx_vit_base_p16_224-80ecf9dd.pth"):
        resolve_pretrained(tmp_path / "jx_vit_base_p16_224-80ecf9dd.pth", ())


def test_default_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDLIB_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match=str(tmp_path)):
        resolve_pretrained(True, ("ViT-B-16.pt",))
    (tmp_path / "ViT-B-16.pt").write_bytes(b"")
    assert resolve_pretrained(True, ("ViT-B-16.pt",)) == tmp_path / "ViT-B-16.pt"
    assert resolve_pretrained(None, ("ViT-B-16.pt",)) is None


def test_sha256_check(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(Tiny().state_dict(), path)
    digest = sha256_of(path)
    assert read_state_dict(path, sha256=digest).keys() == Tiny().state_dict().keys()
    read_state_dict(path, sha256=digest[:8])  # torchvision-style file-name prefix is enough
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        read_state_dict(path, sha256=wrong)
    with pytest.raises(WeightsError, match="hex digest"):
        read_state_dict(path, sha256="abc")


def test_report_lists_missing_unexpected_mismatched_and_dropped_keys(tmp_path):
    state = Tiny().state_dict()
    del state["bn.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["conv.bias"] = torch.zeros(7)  # wrong shape
    state["fc.weight"] = torch.zeros(10, 4)  # classifier head: dropped on purpose
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # nested + DataParallel
    model = Tiny()
    report = load_pretrained(model, path, (), drop_prefixes=("fc.",))
    assert report.missing == ["bn.weight", "conv.bias"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == ["conv.bias"]
    assert report.dropped == ["fc.weight"]
    assert not report.complete and "missing 2" in str(report)
    assert torch.equal(model.conv.weight, state["conv.weight"])
    with pytest.raises(WeightsError, match="do not fit"):
        load_pretrained(Tiny(), path, (), drop_prefixes=("fc.",), strict=True)


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": Tiny()}, path)  # a pickled module, not tensors
    with pytest.raises(WeightsError, match="tensors only"):
        read_state_dict(path)


def test_safetensors_files(tmp_path):
    state = Tiny().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    assert read_state_dict(tmp_path / "w.safetensors").keys() == state.keys()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_archives_run_code_so_they_are_read_only_when_allowed(tmp_path, monkeypatch):
    """torch.jit.load runs code stored in the file: "weights are never unpickled" holds only if a
    TorchScript archive (OpenAI's CLIP .pt is one) is refused unless the user says it is trusted."""
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.script(Tiny().conv).save(str(path))
    monkeypatch.delenv(ALLOW_TORCHSCRIPT_ENV, raising=False)
    with pytest.raises(WeightsError, match=f"TorchScript archive.*runs code.*{ALLOW_TORCHSCRIPT_ENV}=1"):
        read_state_dict(path)
    with pytest.raises(WeightsError, match="TorchScript"):
        load_pretrained(Tiny().conv, path, ())
    assert set(read_state_dict(path, allow_torchscript=True)) == {"weight", "bias"}
    monkeypatch.setenv(ALLOW_TORCHSCRIPT_ENV, "1")
    assert load_pretrained(Tiny().conv, path, ()).complete
    with pytest.raises(WeightsError, match="TorchScript"):
        read_state_dict(path, allow_torchscript=False)  # the argument wins over the environment


def test_backbone_roundtrip_through_a_weights_folder(tmp_path):
    source = build_backbone("resnet_tiny")
    path = tmp_path / "resnet_tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("resnet_tiny", pretrained=path, sha256=sha256_of(path))
    assert loaded.load_report.complete and not loaded.load_report.unexpected
    assert torch.equal(loaded.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_vit_checkpoint_from_another_resolution_is_resized(tmp_path):
    source = build_backbone("vit_tiny_ci", img_size=(64, 64), depth=1)  # 4 x 4 grid, like 224 -> 14 x 14
    state = dict(source.state_dict(), **{"head.weight": torch.zeros(10, 48), "head.bias": torch.zeros(10)})
    torch.save(state, tmp_path / "vit.pth")
    target = build_backbone(
        "vit_tiny_ci", img_size=(96, 48), stride=12, depth=1, pretrained=tmp_path / "vit.pth"
    )
    report = target.load_report
    assert target.grid_size == (7, 3) and report.complete and report.dropped == ["head.bias", "head.weight"]
    assert report.adapted == ["pos_embed 4x4 -> 7x3"]
    assert torch.equal(target.pos_embed[:, 0], source.pos_embed[:, 0])  # class token kept
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    # a non-square checkpoint grid must be stated
    torch.save(target.state_dict(), tmp_path / "vit73.pth")
    with pytest.raises(ValueError, match="pretrained_grid"):
        build_backbone("vit_tiny_ci", depth=1, pretrained=tmp_path / "vit73.pth")
    ok = build_backbone("vit_tiny_ci", depth=1, pretrained=tmp_path / "vit73.pth", pretrained_grid=(7, 3))
    assert ok.load_report.complete
    # the SIE table is ReID-specific: reported as new (random init), not as missing
    with_sie = build_backbone(
        "vit_tiny_ci", depth=1, num_cameras=2, pretrained=tmp_path / "vit73.pth", pretrained_grid=(7, 3)
    )
    assert with_sie.load_report.new == ["sie_embed"] and with_sie.load_report.complete


def test_clip_checkpoint_position_embedding_resized(tmp_path):
    source = build_backbone("clip_tiny_ci", img_size=(64, 64))
    torch.save(source.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    target = build_backbone(
        "clip_tiny_ci", img_size=(64, 32), pretrained=tmp_path / "open_clip_pytorch_model.bin"
    )
    assert target.load_report.complete and not target.load_report.unexpected
    assert target.load_report.adapted == ["visual.positional_embedding 4x4 -> 4x2"]
    assert torch.equal(target.model.token_embedding.weight, source.model.token_embedding.weight)
