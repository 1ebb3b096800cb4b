"""Pretrained weights from local files only: locate, verify (SHA-256), read safely, load and report.

Nothing here touches the network. Files come from strangers, so they are read as tensors only:
safetensors or `torch.load(..., weights_only=True)`. A TorchScript archive (OpenAI's CLIP release is one)
can only be read by `torch.jit.load`, which runs code stored in the file, so it is refused unless the
user allows it ($REIDLIB_ALLOW_TORCHSCRIPT=1 or `allow_torchscript=True`); then it is read as open_clip's
own loader does (`torch.jit.load(...).state_dict()`).

`pretrained` arguments everywhere accept:
  None / False      random initialisation
  a file path       that file
  a directory       the backbone's expected file inside it
  True / "default"  the expected file inside `default_weights_dir()` ($REIDLIB_WEIGHTS, else
                    ~/.cache/reidlib/weights)
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

WEIGHTS_ENV = "REIDLIB_WEIGHTS"
ALLOW_TORCHSCRIPT_ENV = "REIDLIB_ALLOW_TORCHSCRIPT"  # "1": TorchScript weights files may be read
MIN_SHA_PREFIX = 8  # torchvision / timm file names carry the first 8 hex digits of the file's SHA-256

PretrainedSpec = str | os.PathLike | bool | None


class WeightsError(RuntimeError):
    """A pretrained file is missing, corrupt, or does not fit the model; the message says what to do."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model (see `load_pretrained`)."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # same key, other shape: skipped
    dropped: list[str] = field(default_factory=list)  # file keys skipped on purpose (classifier heads)
    adapted: list[str] = field(default_factory=list)  # keys converted (e.g. position embeddings resized)
    new: list[str] = field(default_factory=list)  # model keys no such checkpoint has (e.g. SIE): random init

    @property
    def complete(self) -> bool:
        return not (self.missing or self.mismatched)

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            shown = ", ".join(keys[:6])
            return f"{len(keys)} ({shown}{', ...' if len(keys) > 6 else ''})" if keys else "0"

        return (
            f"{self.path}: loaded {self.loaded} tensors; missing {few(self.missing)}; "
            f"unexpected {few(self.unexpected)}; shape-mismatched {few(self.mismatched)}; "
            f"dropped {few(self.dropped)}; adapted {few(self.adapted)}; new (random init) {few(self.new)}"
        )


def default_weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV, Path.home() / ".cache" / "reidlib" / "weights")).expanduser()


def _missing_file_error(expected: Sequence[str], where: Path) -> WeightsError:
    if not expected:
        return WeightsError(
            f"no weights file found in {where}: this backbone has no standard release, so set "
            f"model.pretrained to the weights file's path"
        )
    names = " or ".join(expected)
    return WeightsError(
        f"pretrained weights not found: put {names} in {where} (or set ${WEIGHTS_ENV} to the folder "
        f"holding it), or set model.pretrained to the file's path; nothing is downloaded"
    )


def resolve_pretrained(pretrained: PretrainedSpec, expected: Sequence[str]) -> Path | None:
    """Map a `pretrained` argument to an existing file, or None for random init.

    `expected` are file names or glob patterns (e.g. "resnet50-*.pth") searched in a directory."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True or pretrained == "default":
        folder = default_weights_dir()
    else:
        path = Path(pretrained).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            if path.suffix:  # looks like a file name: report that file, and where to put it
                raise WeightsError(
                    f"pretrained weights file {path} does not exist; put {path.name} in {path.parent} "
                    f"or set model.pretrained to the right path; nothing is downloaded"
                )
            raise _missing_file_error(expected, path)
        folder = path
    if folder.is_dir():
        for pattern in expected:
            hits = sorted(p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))
            if hits:
                return hits[0]
    raise _missing_file_error(expected, folder)


def sha256_of(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, sha256: str) -> None:
    """Raise unless the file's SHA-256 starts with `sha256` (full digest or a prefix of >= 8 hex digits)."""
    want = sha256.strip().lower()
    if len(want) < MIN_SHA_PREFIX or any(c not in "0123456789abcdef" for c in want):
        raise WeightsError(f"sha256 {sha256!r} is not a hex digest (give the full digest or >= 8 hex digits)")
    got = sha256_of(path)
    if not got.startswith(want):
        raise WeightsError(
            f"SHA-256 mismatch for {path}: expected {want}..., got {got}; the file is corrupt or a "
            f"different release: replace it, or fix/remove the configured sha256"
        )


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding a `code/` folder (plain torch.save zips do not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name or name.startswith("code/") for name in zf.namelist())


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    """Checkpoints nest their weights under 'state_dict' / 'model' and DataParallel adds 'module.'."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors; give a weights (state-dict) file")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def torchscript_allowed(allow_torchscript: bool | None = None) -> bool:
    """The caller's choice, else $REIDLIB_ALLOW_TORCHSCRIPT == "1" (configs reach the loader only by it)."""
    if allow_torchscript is not None:
        return allow_torchscript
    return os.environ.get(ALLOW_TORCHSCRIPT_ENV) == "1"


def _read_torchscript(path: Path) -> dict[str, Tensor]:
    """OpenAI's CLIP release, read as open_clip's loader reads it (jit.load, then state_dict): this runs
    code stored in the file, so only trusted files get here."""
    with warnings.catch_warnings():  # torch>=2.9 flags TorchScript as deprecated; the file format stays
        warnings.simplefilter("ignore", FutureWarning)
        sd = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    for meta in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(meta, None)
    return sd


def read_state_dict(path: str | os.PathLike, sha256: str | None = None, *,
                    allow_torchscript: bool | None = None) -> dict[str, Tensor]:
    """Read a state dict from `path` without unpickling arbitrary objects (optionally checking SHA-256).

    allow_torchscript: read a TorchScript archive (which runs code from the file); None: only when
    $REIDLIB_ALLOW_TORCHSCRIPT is "1"."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"pretrained weights file {path} does not exist")
    if sha256:
        verify_sha256(path, sha256)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if _is_torchscript(path):
        if not torchscript_allowed(allow_torchscript):
            raise WeightsError(
                f"{path} is a TorchScript archive: reading it (torch.jit.load) runs code stored in the file, "
                f"so it is refused. If you trust the file, allow it with {ALLOW_TORCHSCRIPT_ENV}=1 in the "
                "environment (or read_state_dict(..., allow_torchscript=True)); otherwise use a plain "
                "state-dict or .safetensors release of the same weights (CLIP ViT-B/16: open_clip's "
                "open_clip_model.safetensors)")
        return _read_torchscript(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with custom classes, or a truncated file
        raise WeightsError(
            f"cannot read {path} as tensors only ({type(exc).__name__}: {exc}); re-save it as a plain "
            f"state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from exc
    return _unwrap(obj, path)


def load_pretrained(
    model: nn.Module,
    pretrained: PretrainedSpec,
    expected: Sequence[str],
    sha256: str | None = None,
    drop_prefixes: Iterable[str] = (),
    adapt: Callable[[dict[str, Tensor], LoadReport], dict[str, Tensor]] | None = None,
    new_prefixes: Iterable[str] = (),
    strict: bool = False,
    allow_torchscript: bool | None = None,
) -> LoadReport | None:
    """Load local weights into `model` (non-strict) and return a `LoadReport` (also logged).

    expected:      file names / glob patterns to look for when `pretrained` is a directory or True
    drop_prefixes: file keys skipped on purpose (ImageNet classifier heads)
    adapt:         converts the state dict to the model's layout (renames, position-embedding resize)
    new_prefixes:  model keys such checkpoints never hold (parts added for ReID, e.g. the SIE table):
                   reported as `new`, not `missing`
    strict:        raise if any model key stays missing or any shape mismatches
    allow_torchscript: read a TorchScript archive, which runs code from the file (see read_state_dict)
    Returns None when `pretrained` asks for random init."""
    path = resolve_pretrained(pretrained, expected)
    if path is None:
        return None
    state = read_state_dict(path, sha256, allow_torchscript=allow_torchscript)
    report = LoadReport(path=str(path))
    drop = tuple(drop_prefixes)
    report.dropped = sorted(k for k in state if drop and k.startswith(drop))
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    if adapt is not None:
        state = adapt(state, report)
    own = model.state_dict()
    report.mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    state = {k: v for k, v in state.items() if k not in report.mismatched}
    result = model.load_state_dict(state, strict=False)
    new = tuple(new_prefixes)
    report.new = sorted(k for k in result.missing_keys if new and k.startswith(new))
    report.missing = sorted(k for k in result.missing_keys if k not in report.new)
    report.unexpected = sorted(result.unexpected_keys)
    report.loaded = len(state) - len(report.unexpected)
    if strict and not report.complete:
        raise WeightsError(f"weights do not fit the model: {report}")
    (log.info if report.complete and not report.unexpected else log.warning)("pretrained %s", report)
    return report
