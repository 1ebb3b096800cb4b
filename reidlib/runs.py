"""Run folders: atomic writes, safe paths, run keys (config hashes), manifests and the table of runs.

A training run lives in `<runs_dir>/cache/<method>/<key>/`:
  config.yaml     the RunConfig
  manifest.json   git SHA + dirty flag, package versions, device, threads, seed, start time (+ resumes)
  last.pt         checkpoint after every epoch (model, optimiser, scheduler, scaler, RNG, history)
  history.jsonl   one JSON object per log window, epoch and evaluation
  model.pt        final weights + the constructor arguments `Run.load_model` needs
  metrics.json    final metrics, timings and `"finished": true` (written last: its presence marks a
                  finished run)
Every file is written atomically (temporary file in the same folder + os.replace), so a crash never
leaves a half-written file that looks complete; files get the mode `open(..., "w")` would give them
under the umask. Only the holder of a folder's `run_lock` writes into it, so the temporary file that a
kill mid-write leaves (`.<name>.<random>.tmp`) is removed by the next holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from reidlib.config import config_hash, to_dict

# Bump when the engine changes what a given config trains to: every cached run key changes with it.
KEY_VERSION = 1
# Fields that change only what is printed, never the trained model or its metrics.
_COSMETIC_TRAIN_FIELDS = ("log_every",)
SYNTHOCC_META = "synthocc.json"
# synthocc.json entries that describe where/when a set was written, not what it contains.
_SYNTHOCC_VOLATILE = ("created", "created_at", "root", "out_dir", "path", "elapsed_s")
MANIFEST_PACKAGES = ("torch", "torchvision", "timm", "numpy", "reidlib")
# The atomic writer's temporary files: `.<target name>.<random hex>.tmp` in the target's folder.
TMP_PREFIX, TMP_SUFFIX, TMP_RANDOM_BYTES = ".", ".tmp", 8
NEW_FILE_MODE = 0o666  # what open(..., "w") asks for; the umask takes its bits away
# Any writer's temporary name, this one's and tempfile.mkstemp's (earlier versions): what a kill leaves.
TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp")
LOCK_FILE = ".lock"
# Tries at locking a run folder that other processes keep discarding before giving up (each needs one).
LOCK_ATTEMPTS = 100


# Refused inside names on every system, so a name that works here also stays one folder deep on Windows.
NAME_SEPARATORS = ("/", "\\")


class UnsafePathError(ValueError):
    """A path built from user input would land outside the folder it must stay in."""


class DamagedFileError(ValueError):
    """A file reidlib wrote cannot be read back (truncated, corrupt or edited by hand); the message names the
    file and what to do (`fix`, by default: delete it)."""

    def __init__(self, file: str | os.PathLike, reason: str, fix: str | None = None):
        self.file, self.reason = Path(file), reason
        super().__init__(f"{file} is damaged ({reason}); {fix or 'delete it, and reidlib writes it again'}")


def rerun_fix(folder: str | os.PathLike) -> str:
    """What to do about a damaged file of run folder `folder`: train the run again."""
    return (f"delete the run folder {folder} and run again, or rerun with retrain (train(..., retrain=True), "
            "the notebook parameter retrain = True, `reidlib reproduce --retrain`)")


# ----------------------------------------------------------------------------------------- paths
def safe_path(base: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """`base / parts...`, refusing any result outside `base` (`..` climbing out, absolute parts).

    The check is lexical (no symlink resolution), so a `runs/` that is itself a symlink to a larger
    disk keeps working while names taken from configs cannot climb out of it.
    """
    root = os.path.normpath(os.path.abspath(os.fspath(base)))
    for part in parts:
        text = os.fspath(part)
        if not text or os.path.isabs(text):
            raise UnsafePathError(f"path part {text!r} under {root} must be a non-empty relative name")
    target = os.path.normpath(os.path.join(root, *map(os.fspath, parts)))
    if os.path.commonpath([root, target]) != root:
        raise UnsafePathError(
            f"{os.path.join(*map(os.fspath, parts))!r} escapes {root}; use names without '..'"
        )
    return Path(target)


def plain_name(name: str, what: str) -> str:
    """`name` when it is one plain file or folder name (a paper, table or figure name), for `safe_path`:
    not empty, not '.' or '..', and without a path separator, so it cannot be absolute or point into
    another folder either. `what` names it in the error."""
    text = os.fspath(name)
    if text in ("", os.curdir, os.pardir) or any(sep in text for sep in NAME_SEPARATORS):
        raise UnsafePathError(f"{what} {text!r} is not a plain name: use a single file or folder name, "
                              "without '/', '\\' or '..', so that its files stay inside their output folder")
    return text


# -------------------------------------------------------------------------------- atomic writes
def temporary_sibling(path: Path) -> Path:
    """A fresh name for the atomic writer's temporary copy of `path`: `.<name>.<random>.tmp` beside it."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(TMP_RANDOM_BYTES)}{TMP_SUFFIX}")


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create and open a new temporary sibling of `path` with the mode `open(path, "w")` would give it
    (0o666 minus the umask: the kernel applies the umask, and default ACLs, to `os.open`'s mode), where
    tempfile.mkstemp would make it 0600 whatever the umask and so hide a shared runs folder's files."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = temporary_sibling(path)
        with contextlib.suppress(FileExistsError):  # a name already taken: draw another
            return os.open(tmp, flags, NEW_FILE_MODE), tmp


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through `write(fh)` into a temporary sibling, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_dict(obj), indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def atomic_write_jsonl(path: str | os.PathLike, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return _atomic_write(path, lambda fh: torch.save(obj, fh))


def _parse_json(text: str, path: str | os.PathLike, fix: str | None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # its message names no file
        raise DamagedFileError(path, f"not valid JSON: {exc}", fix) from None


def read_json(path: str | os.PathLike, fix: str | None = None) -> dict | None:
    """The JSON object in `path`, or None when the file does not exist; DamagedFileError (with `fix`) when it
    does not parse."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return _parse_json(text, path, fix)


def read_jsonl(path: str | os.PathLike, fix: str | None = None) -> list[dict]:
    """One JSON object per line of `path` ([] when the file does not exist); DamagedFileError as read_json."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [_parse_json(line, path, fix) for line in lines if line.strip()]


def read_run_config(folder: str | os.PathLike) -> dict:
    """The config.yaml of run folder `folder` as a dict; DamagedFileError when it is not a YAML mapping."""
    file, fix = Path(folder) / "config.yaml", rerun_fix(folder)
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise DamagedFileError(file, f"not valid YAML: {_one_line(exc)}", fix) from None
    if not isinstance(data, dict):
        raise DamagedFileError(file, f"a run config is a mapping, not a {type(data).__name__}", fix)
    return data


def load_torch_file(path: str | os.PathLike, fix: str | None = None, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)` (files may come from strangers); a file that does not load
    raises DamagedFileError naming it, with `fix`."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated archive, foreign pickle: torch's messages name no file
        raise DamagedFileError(path, f"{type(exc).__name__}: {_one_line(exc)}", fix) from exc


REASON_CHARS = 240  # a library error quoted in a DamagedFileError (torch's can run to a page)


def _one_line(exc: Exception) -> str:
    """A library's (often multi-line) error message as one line for a reason in parentheses."""
    text = " ".join(str(exc).split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "..."


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the atomic writer's temporary files in `folder` and return them: what a writer killed
    mid-write (e.g. during a checkpoint) left. Call it only under the folder's `run_lock`, which every
    writer into a run folder holds, so that no live writer's file is taken."""
    stale = [p for p in Path(folder).iterdir() if p.is_file() and TEMPORARY_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class RunFolderLock:
    """What `run_lock` yields: the locked folder, and the way to remove it when a run's start failed."""

    def __init__(self, folder: Path):
        self.folder = folder

    def discard(self, disposable: Iterable[str], root: str | os.PathLike) -> bool:
        """Remove the locked folder if it holds nothing but `disposable` files (what a run writes before
        its first checkpoint), temporaries and the lock, then each parent left empty below `root`; return
        whether it went. A folder holding anything else (a checkpoint, results, a file of the user's) is
        kept whole, so a failed start leaves no litter and a finished or resumable run is never touched.
        The lock file goes last: a process waiting on it then finds it deleted and locks a new one."""
        remove_temporaries(self.folder)
        names = {p.name for p in self.folder.iterdir()}
        if not names <= {*disposable, LOCK_FILE}:
            return False
        for name in sorted(names - {LOCK_FILE}) + [LOCK_FILE]:
            (self.folder / name).unlink(missing_ok=True)
        stop, folder = Path(os.path.abspath(root)), Path(os.path.abspath(self.folder))
        while stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty: a newcomer already locks it again, or other runs live there
                break
            folder = folder.parent
        return True


def _holds_current_lock(fh: IO, lock_file: Path) -> bool:
    """Whether the locked open file is still `lock_file`: a holder that discarded the folder deleted the
    file we waited on, and locking a deleted file excludes no one who opens its successor."""
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(lock_file))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[RunFolderLock]:
    """Exclusive lock on a run folder, so two notebooks executed in parallel that ask for the same run
    train it once: the second waits, then finds it finished. The holder finds the folder cleared of
    temporary files that a killed writer left (`remove_temporaries`) and may `discard` it. The lock
    itself is not enforced where fcntl is missing (Windows)."""
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        folder.mkdir(parents=True, exist_ok=True)
        yield RunFolderLock(folder)
        return
    for _ in range(LOCK_ATTEMPTS):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fh = open(folder / LOCK_FILE, "a")  # noqa: SIM115 - closed by the `with` below
        except FileNotFoundError:  # the folder (or a parent) was being discarded: create it again
            continue
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if _holds_current_lock(fh, folder / LOCK_FILE):
                    remove_temporaries(folder)
                    yield RunFolderLock(folder)
                    return
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    raise RuntimeError(f"could not lock {folder}: it was deleted {LOCK_ATTEMPTS} times while this process "
                       "waited for it; check that nothing else removes run folders")


# --------------------------------------------------------------------------------- identity/keys
def _records_digest(dataset: Any) -> str:
    """Hash of every split's (path relative to root, pid, camid): changes when images are added,
    removed or relabelled."""
    h = hashlib.sha256()
    root = os.path.abspath(dataset.root)
    for split in ("train", "query", "gallery"):
        h.update(f"[{split}]".encode())
        for r in getattr(dataset, split):
            rel = os.path.relpath(os.path.abspath(r.path), root)
            h.update(f"{rel}\t{r.pid}\t{r.camid}\n".encode())
    return h.hexdigest()[:16]


def _synthocc_meta(root: Path) -> Path | None:
    """`synthocc.json` of a SynthOcc set: in `root` itself or, for a protocol folder, its parent."""
    for folder in (root, root.parent):
        if (folder / SYNTHOCC_META).is_file():
            return folder / SYNTHOCC_META
    return None


def data_identity(dataset: Any) -> dict:
    """What a run's data *is*, independent of where it was opened from.

    SynthOcc (`synthocc.json` in the data root or, for a protocol folder, its parent): the generator's
    parameters from that file, minus where/when it was written, plus the protocol folder used, so the
    same generated set gives the same key on every machine.
    A real data set: its name, its resolved root and a digest of its record lists (relative path, pid,
    camid), so moving a data set starts new runs and so does adding, removing or relabelling images.
    """
    root = Path(dataset.root)
    meta = _synthocc_meta(root)
    if meta is not None:
        params = json.loads(meta.read_text())
        params = {k: v for k, v in params.items() if k not in _SYNTHOCC_VOLATILE}
        subset = os.path.relpath(os.path.abspath(root), os.path.abspath(meta.parent))
        return {"name": dataset.name, "synthocc": params, "subset": subset}
    return {"name": dataset.name, "root": str(root.resolve()), "records": _records_digest(dataset)}


def key_payload(cfg: Any, data_identity: dict, model_config: dict | None = None) -> dict:
    """Everything that determines a run's result: resolved method config, data config (its `root` is
    replaced by the data identity), training schedule (minus print-only fields) and seed. The `tag`
    and progress settings are left out, and so is `data.preload` (where images are decoded, not what)."""
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in ("root", "preload")}
    train = {k: v for k, v in to_dict(cfg.train).items() if k not in _COSMETIC_TRAIN_FIELDS}
    return {
        "key_version": KEY_VERSION,
        "method": cfg.method,
        "model": to_dict(model_config if model_config is not None else cfg.model),
        "data": data,
        "data_identity": data_identity,
        "train": train,
        "seed": cfg.seed,
        # an earlier stage's run key (absent when none, so single-stage keys are unchanged)
        **({"init_from": cfg.init_from} if getattr(cfg, "init_from", None) else {}),
    }


def run_key(cfg: Any, data_identity: dict, model_config: dict | None = None) -> str:
    """12-hex-digit key of a RunConfig on a given data set (see `key_payload`). Pass `model_config`
    with the method's defaults filled in so `{}` and `{lr_mult: <default>}` share a key."""
    return config_hash(key_payload(cfg, data_identity, model_config))


def run_dir(runs_dir: str | os.PathLike, method: str, key: str) -> Path:
    return safe_path(runs_dir, "cache", method, key)


# ------------------------------------------------------------------------------------- manifest
def _git_state() -> dict:
    """SHA and dirty flag of the checkout reidlib is imported from (None outside a git checkout)."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                 timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = MANIFEST_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def manifest(seed: int | None = None, device: str | None = None, **extra: Any) -> dict:
    """Where and with what a run was produced: git state, package versions, device, thread count,
    seed, start time (UTC, ISO 8601); `extra` entries are added as given."""
    import torch

    return {
        **_git_state(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "cuda_device": (torch.cuda.get_device_name(torch.device(device))
                        if device and device.startswith("cuda") else None),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "start_time": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


# ------------------------------------------------------------------------------------ run table
def run_status(folder: str | os.PathLike) -> str:
    """finished (metrics.json says so), interrupted (a checkpoint, no final metrics) or started;
    DamagedFileError when metrics.json does not parse."""
    folder = Path(folder)
    metrics = read_json(folder / "metrics.json", rerun_fix(folder))
    if metrics and metrics.get("finished"):
        return "finished"
    if (folder / "last.pt").is_file():
        return "interrupted"
    return "started"


def _run_row(folder: Path) -> dict:
    cfg = read_run_config(folder)
    metrics = read_json(folder / "metrics.json", rerun_fix(folder)) or {}
    return {
        "method": cfg.get("method", folder.parent.name),
        "key": folder.name,
        "tag": cfg.get("tag", ""),
        "status": run_status(folder),
        "dataset": (cfg.get("data") or {}).get("dataset"),
        "epochs": (cfg.get("train") or {}).get("epochs"),
        "seed": cfg.get("seed"),
        **{k: v for k, v in metrics.items() if k != "finished" and not isinstance(v, dict | list)},
        "path": str(folder),
    }


def list_runs(runs_dir: str | os.PathLike = "runs") -> Any:
    """A pandas DataFrame with one row per run folder under `<runs_dir>/cache`: method, key, tag,
    status, dataset, epochs, seed, every final metric and the folder path. A folder with a damaged file
    gets the status "damaged: <file> (<reason>)"."""
    import pandas as pd

    rows = []
    cache = Path(runs_dir) / "cache"
    for folder in sorted(cache.glob("*/*/")) if cache.is_dir() else []:
        if not (folder / "config.yaml").is_file():
            continue
        try:
            rows.append(_run_row(folder))
        except DamagedFileError as exc:  # one damaged run must not hide the others
            rows.append({"method": folder.parent.name, "key": folder.name,
                         "status": f"damaged: {exc.file.name} ({exc.reason})", "path": str(folder)})
    columns = ["method", "key", "tag", "status", "dataset", "epochs", "seed"]
    return pd.DataFrame(rows, columns=None if rows else columns + ["path"])


__all__ = [
    "KEY_VERSION", "UnsafePathError", "safe_path", "plain_name", "atomic_write_bytes", "atomic_write_text",
    "atomic_write_json", "atomic_write_yaml", "atomic_write_jsonl", "atomic_torch_save", "read_json",
    "read_jsonl", "remove_temporaries", "RunFolderLock", "run_lock", "data_identity", "key_payload",
    "run_key", "run_dir", "package_versions", "manifest", "run_status", "list_runs",
    "DamagedFileError", "rerun_fix", "read_run_config", "load_torch_file",
]
