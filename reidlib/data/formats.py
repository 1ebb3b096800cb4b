"""Real benchmark folders -> `ReidDataset`: Market-1501, DukeMTMC-reID, Occluded-Duke, Occluded-REID,
Partial-REID, Partial-iLIDS, P-DukeMTMC-reID, MSMT17 (V1, V2) and SynthOcc's own output.

Each adapter accepts the folder layouts the community uses (torchreid, BPBreID, TransReID, PVPM): ROOT
may be the data-set folder itself or a folder holding it under one of its usual names, matched
case-insensitively. `reidlib datasets list` prints every accepted layout (`describe_datasets`).

Conventions shared by all adapters:
- camera ids are 0-based; training ids are relabelled by sorted raw id to 0..n-1; query and gallery
  keep raw ids;
- Market-1501 protocol: junk images (pid -1) are dropped, distractors (pid 0) kept;
- single-camera benchmarks (Occluded-REID, Partial-REID, Partial-iLIDS, P-DukeMTMC-reID) put the query
  on camera 0 and the gallery on camera 1: the evaluation drops same-id same-camera gallery items, so
  sharing one camera id would throw every true match away;
- a human-parsing label map for DATA_DIR/<sub>/<name>.jpg is picked up from
  DATA_DIR/masks/parsing/<sub>/<name>.png when it exists (`parsing_mask_path`), for every layout.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TextIO

from reidlib.data.images import IMAGE_SUFFIXES, CorruptImageError, find_corrupt, is_image_file
from reidlib.data.records import Record, ReidDataset
from reidlib.registry import Registry

__all__ = [
    "DATASETS", "Adapter", "CorruptImageError", "DatasetLayoutError", "Layout", "SYNTHOCC_PROTOCOLS",
    "attach_parsing_masks", "check_dataset", "describe_datasets", "guess_dataset", "load_dataset",
    "parsing_mask_path", "relabel",
]

SPLITS = ("train", "query", "gallery")
JUNK_PID = -1  # Market-1501: images to ignore; pid 0 (distractors) stays in the gallery
QUERY_CAMID, GALLERY_CAMID = 0, 1  # camera ids of the single-camera benchmarks' two views
PARSING_DIR = ("masks", "parsing")
SYNTHOCC_PROTOCOLS = ("occluded_duke", "holistic", "occluded_reid", "partial_reid")
_LISTED = 12  # folder entries shown in error messages


# (data-set folder, train, query, gallery) as an adapter's parser returns them
Parsed = tuple[Path, list[Record], list[Record], list[Record]]


class DatasetLayoutError(ValueError):
    """A data-set folder is missing or laid out unexpectedly. The message says what was expected where,
    what was found, and how to fix it."""


# ---------------------------------------------------------------------------------------------------
# Layouts and adapters


@dataclass(frozen=True)
class Layout:
    """One accepted folder layout: where the data-set folder may sit below ROOT and what it holds.

    `needs` maps a role (train, query, gallery, list files...) to a path inside the data-set folder;
    a trailing '/' marks a folder.
    """

    folders: tuple[str, ...]
    needs: Mapping[str, str]
    used_by: str
    root_itself: bool = True  # ROOT may be the data-set folder itself

    def describe(self) -> str:
        where = (["ROOT"] if self.root_itself else []) + [f"ROOT/{f}" for f in self.folders]
        return f"{' | '.join(where)} holding {', '.join(self.needs.values())}  [{self.used_by}]"


@dataclass(frozen=True)
class Match:
    data_dir: Path
    layout: Layout
    paths: dict[str, Path]  # role -> resolved path


@dataclass(frozen=True)
class Adapter:
    """A benchmark: its accepted layouts, camera convention and parser.

    `parse(adapter, root, **options)` returns (data_dir, train, query, gallery) with raw training ids;
    calling the adapter relabels them and wraps everything in a `ReidDataset`.
    """

    name: str
    title: str
    layouts: tuple[Layout, ...]
    camera_note: str
    parse: Callable[..., Parsed]
    hint: str = ""  # regex on normalised folder names that identifies this benchmark (guessing NAME)
    sniff: Callable[[Match], bool] | None = None  # content test that identifies it (guessing NAME)
    options_help: str = ""
    fix: str = ""  # what to do when no layout matches (default: derived from the first layout)

    @property
    def options(self) -> dict[str, object]:
        params = inspect.signature(self.parse).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def __call__(self, root: str | os.PathLike, **options) -> ReidDataset:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for data set {self.name!r}; "
                             f"accepted: {accepted}")
        data_dir, train, query, gallery = self.parse(self, _as_root(root), **options)
        return ReidDataset(self.name, str(data_dir), relabel(train), query, gallery,
                           camera_note=self.camera_note)


DATASETS: Registry[Adapter] = Registry("data set")
_ORDER: list[str] = []  # registration order: the tie-break when guessing NAME


def _adapter(name: str, title: str, layouts: Sequence[Layout], camera_note: str, **extra):
    def register(parse):
        DATASETS.register(name)(Adapter(name, title, tuple(layouts), camera_note, parse, **extra))
        _ORDER.append(name)
        return parse

    return register


# ---------------------------------------------------------------------------------------------------
# Finding folders


def _as_root(root: str | os.PathLike) -> Path:
    return Path(root).expanduser().absolute()


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder` by name; none when it is missing or not a folder. A folder that cannot be
    listed raises PermissionError naming it: what it holds is unknown, not absent."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except PermissionError:
        raise
    except OSError:
        return []


def _raise(exc: OSError) -> None:
    raise exc


def _find(base: Path, rel: str) -> Path | None:
    """base/rel when it exists (a folder if rel ends with '/', else a file), any letter case."""
    path = base
    for part in PurePosixPath(rel).parts:
        child = path / part
        if not child.exists():
            same = [e for e in _entries(path) if e.name.lower() == part.lower()]
            if not same:
                return None
            child = Path(same[0].path)
        path = child
    return path if (path.is_dir() if rel.endswith("/") else path.is_file()) else None


def _listing(folder: Path, limit: int = _LISTED) -> str:
    if not folder.is_dir():
        return "(not a folder)"
    names = [e.name + ("/" if e.is_dir() else "") for e in _entries(folder)]
    if not names:
        return "(empty)"
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _candidates(root: Path, layout: Layout) -> Iterable[Path]:
    if layout.root_itself:
        yield root
    for folder in layout.folders:
        found = _find(root, folder + "/")
        if found is not None:
            yield found


def _matches(root: Path, layouts: Sequence[Layout]) -> list[Match]:
    """The first matching data-set folder of each layout that ROOT holds."""
    out = []
    for layout in layouts:
        for data_dir in _candidates(root, layout):
            paths = {role: _find(data_dir, rel) for role, rel in layout.needs.items()}
            if all(p is not None for p in paths.values()):
                out.append(Match(data_dir, layout, paths))
                break
    return out


def locate(root: Path, adapter: Adapter, layouts: Sequence[Layout] | None = None) -> Match:
    """The data-set folder under ROOT in the first of `layouts` that matches, or DatasetLayoutError."""
    layouts = adapter.layouts if layouts is None else tuple(layouts)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DatasetLayoutError(f"{adapter.title} ({adapter.name}): data root {root} {state}.\n"
                                 f"Fix: {_fix(adapter, layouts)}")
    found = _matches(root, layouts)
    if not found:
        raise DatasetLayoutError(_layout_message(root, adapter, layouts))
    return found[0]


def _fix(adapter: Adapter, layouts: Sequence[Layout]) -> str:
    if adapter.fix:
        return adapter.fix
    first = layouts[0]
    return (f"put {first.folders[0]}/ (holding {', '.join(first.needs.values())}) under ROOT, "
            f"or pass that folder itself as ROOT.")


def _layout_message(root: Path, adapter: Adapter, layouts: Sequence[Layout]) -> str:
    lines = [f"{adapter.title} ({adapter.name}) not found under {root}.",
             "Expected ROOT to be the data-set folder or to hold it, in one of these layouts:"]
    lines += [f"  - {layout.describe()}" for layout in layouts]
    lines.append(f"Found in {root}: {_listing(root)}")
    closest = _closest(root, layouts)
    if closest is not None:
        data_dir, missing = closest
        lines.append(f"Closest match: {data_dir} lacks {', '.join(missing)}; it holds: {_listing(data_dir)}")
    lines.append(f"Fix: {_fix(adapter, layouts)}")
    return "\n".join(lines)


def _closest(root: Path, layouts: Sequence[Layout]) -> tuple[Path, list[str]] | None:
    """The candidate folder holding most of what a layout needs (at least one item), and what it lacks."""
    best, best_present = None, 0
    for layout in layouts:
        for data_dir in _candidates(root, layout):
            missing = [rel for rel in layout.needs.values() if _find(data_dir, rel) is None]
            present = len(layout.needs) - len(missing)
            if present > best_present:
                best, best_present = (data_dir, missing), present
    return best


# ---------------------------------------------------------------------------------------------------
# Reading splits


def _image_files(folder: Path, recursive: bool = False) -> list[str]:
    """Sorted image paths in `folder` (and below it when recursive); hidden files such as ._x.jpg skipped.

    Plain strings, not Path objects: Market-1501 and MSMT17 hold tens of thousands of files.
    """
    files = []
    # onerror: os.walk skips folders it cannot list, which would read as "no images" instead of the cause
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        files += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".") and is_image_file(f)]
    if not files:
        below = " or its sub-folders" if recursive else ""
        raise DatasetLayoutError(
            f"{folder}{below} hold(s) no images ({', '.join(sorted(IMAGE_SUFFIXES))}); it holds: "
            f"{_listing(folder)}.\nFix: re-extract the data set so this folder holds its images.")
    return sorted(files)


_PID_CAM = re.compile(r"^(-?\d+)_c(\d+)")  # Market 0002_c1s1_000451_03.jpg, Duke 0001_c2_f0046985.jpg
_LEADING_PID = re.compile(r"^(\d+)")  # Occluded/Partial-REID 001_01.tif, Partial-iLIDS 001.jpg


def _records_from_names(folder: Path) -> list[Record]:
    """Market/Duke-style folder: id and camera from the file name; junk images (pid -1) dropped."""
    records = []
    for path in _image_files(folder):
        match = _PID_CAM.match(os.path.basename(path))
        if match is None or int(match[2]) < 1:
            raise DatasetLayoutError(
                f"{path}: the file name does not start with PID_cCAMERA (e.g. 0002_c1s1_000451_03.jpg or "
                f"0001_c2_f0046985.jpg, cameras numbered from 1).\n"
                f"Fix: remove files that are not part of the data set from {folder}.")
        pid, camid = int(match[1]), int(match[2]) - 1
        if pid != JUNK_PID:
            records.append(Record(path, pid, camid))
    return records


def _records_one_camera(folder: Path, camid: int) -> list[Record]:
    """Every image below `folder` (flat or in per-id sub-folders), id = leading digits of the file name."""
    records = []
    for path in _image_files(folder, recursive=True):
        match = _LEADING_PID.match(os.path.basename(path))
        if match is None:
            raise DatasetLayoutError(
                f"{path}: the file name does not start with the person id (e.g. 001_01.jpg or 001.jpg).\n"
                f"Fix: remove files that are not part of the data set from {folder}.")
        records.append(Record(path, int(match[1]), camid))
    return records


def _records_from_list(list_file: Path, image_dir: Path) -> list[Record]:
    """MSMT17 list file: lines 'PID_DIR/PID_INDEX_CAMERA_....jpg PID', paths relative to `image_dir`."""
    records = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        name_fields = PurePosixPath(fields[0]).name.split("_")
        if (len(fields) != 2 or not fields[1].isdigit() or len(name_fields) < 3
                or not name_fields[2].isdigit() or int(name_fields[2]) < 1):
            raise DatasetLayoutError(
                f"{list_file}, line {lineno}: expected 'DIR/PID_INDEX_CAMERA_....jpg PID' "
                f"(e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'), got {line!r}.\n"
                f"Fix: restore this list file from the MSMT17 release.")
        records.append(Record(os.path.join(image_dir, fields[0]), int(fields[1]), int(name_fields[2]) - 1))
    if not records:
        raise DatasetLayoutError(f"{list_file} lists no images.\nFix: restore it from the MSMT17 release.")
    return records


def relabel(records: Sequence[Record]) -> list[Record]:
    """Training ids -> 0..n-1 in sorted order of the raw ids (deterministic across runs and machines)."""
    label = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [replace(r, pid=label[r.pid]) for r in records]


# ---------------------------------------------------------------------------------------------------
# Adapters

_BBOX = {"train": "bounding_box_train/", "query": "query/", "gallery": "bounding_box_test/"}
_BBOX_NOTE = "camera ids from the file names"
_ONE_CAMERA_NOTE = ("single-camera benchmark: query ({query}) camid 0, gallery ({gallery}) camid 1, so the "
                    "evaluation keeps every true match; no training split (the community trains on "
                    "Market-1501 and tests here)")


def _parse_bbox(adapter: Adapter, root: Path) -> Parsed:
    found = locate(root, adapter)
    return found.data_dir, *(_records_from_names(found.paths[split]) for split in SPLITS)


def _parse_query_gallery(adapter: Adapter, root: Path) -> Parsed:
    found = locate(root, adapter)
    query = _records_one_camera(found.paths["query"], QUERY_CAMID)
    gallery = _records_one_camera(found.paths["gallery"], GALLERY_CAMID)
    return found.data_dir, [], query, gallery


def _first_image_name(found: Match, role: str) -> str:
    entries = (e.name for e in _entries(found.paths[role])
               if e.is_file() and is_image_file(e.name) and not e.name.startswith("."))
    return next(entries, "")


_adapter(
    "market1501", "Market-1501",
    [Layout(("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501", "Market-1501"), _BBOX,
            "BPBreID: Market-1501-v15.09.15; torchreid: market1501/Market-1501-v15.09.15; "
            "TransReID: market1501")],
    _BBOX_NOTE + " (c1..c6 -> 0..5); junk images (pid -1) dropped, distractors (pid 0) kept in the gallery",
    hint="market",
    sniff=lambda found: re.match(r"^-?\d+_c\d+s\d+_", _first_image_name(found, "query")) is not None,
)(_parse_bbox)

_adapter(
    "dukemtmc", "DukeMTMC-reID",
    [Layout(("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid", "dukemtmc"),
            _BBOX,
            "BPBreID: DukeMTMC-reID; torchreid: dukemtmc-reid/DukeMTMC-reID; TransReID: dukemtmcreid")],
    _BBOX_NOTE + " (c1..c8 -> 0..7)",
    hint="^duke",
)(_parse_bbox)

_adapter(
    "occluded_duke", "Occluded-Duke",
    [Layout(("Occluded_Duke", "Occluded-DukeMTMC", "Occluded_DukeMTMC", "Occluded-Duke"), _BBOX,
            "BPBreID, TransReID, PVPM: Occluded_Duke")],
    _BBOX_NOTE + " (c1..c8 -> 0..7); the usual same-camera filter applies",
    hint="occludedduke",
)(_parse_bbox)

_OCCLUDED_REID = {"query": "occluded_body_images/", "gallery": "whole_body_images/"}
_adapter(
    "occluded_reid", "Occluded-REID",
    [Layout(("Occluded_REID", "OccludedREID", "Occluded-REID"), _OCCLUDED_REID,
            "BPBreID, PVPM: Occluded_REID; images (.tif) in per-id sub-folders")],
    _ONE_CAMERA_NOTE.format(query="occluded_body_images", gallery="whole_body_images"),
    hint="occludedreid",
)(_parse_query_gallery)

_PARTIAL = {"query": "partial_body_images/", "gallery": "whole_body_images/"}
_adapter(
    "partial_reid", "Partial-REID",
    [Layout(("Partial_REID", "Partial-REID_Dataset", "PartialREID", "Partial-REID"), _PARTIAL,
            "BPBreID, PVPM: Partial_REID; original release: Partial-REID_Dataset; "
            "occluded_body_images/ is not part of the protocol")],
    _ONE_CAMERA_NOTE.format(query="partial_body_images", gallery="whole_body_images"),
    hint="partialreid",
)(_parse_query_gallery)

_ILIDS_FOLDERS = ("Partial_iLIDS", "Partial-iLIDS", "PartialiLIDS")
_adapter(
    "partial_ilids", "Partial-iLIDS",
    [Layout(_ILIDS_FOLDERS, {"query": "Probe/", "gallery": "Gallery/"}, "original release, fast-reid"),
     Layout(_ILIDS_FOLDERS, _PARTIAL, "BPBreID, PVPM")],
    _ONE_CAMERA_NOTE.format(query="Probe or partial_body_images", gallery="Gallery or whole_body_images")
    + "; the id is the file name (001.jpg)",
    hint="ilids",
    sniff=lambda found: _first_image_name(found, "query").split(".")[0].isdigit(),
)(_parse_query_gallery)


def _parse_p_dukemtmc(adapter: Adapter, root: Path) -> Parsed:
    found = locate(root, adapter)
    train = (_records_one_camera(found.paths["train_occluded"], QUERY_CAMID)
             + _records_one_camera(found.paths["train_whole"], GALLERY_CAMID))
    query = _records_one_camera(found.paths["query"], QUERY_CAMID)
    gallery = _records_one_camera(found.paths["gallery"], GALLERY_CAMID)
    return found.data_dir, train, query, gallery


_adapter(
    "p_dukemtmc", "P-DukeMTMC-reID",
    [Layout(("P-DukeMTMC-reID", "p_dukemtmc_reid", "P-DukeMTMC", "P_DukeMTMC", "p_dukemtmc"),
            {"train_occluded": "train/occluded_body_images/", "train_whole": "train/whole_body_images/",
             "query": "test/occluded_body_images/", "gallery": "test/whole_body_images/"},
            "BPBreID, PVPM, ICME 2018 release: P-DukeMTMC-reID; images in per-id sub-folders")],
    "occluded vs whole-body views as two cameras (BPBreID/PVPM convention): query "
    "(test/occluded_body_images) camid 0, gallery (test/whole_body_images) camid 1; training occluded "
    "images camid 0, whole-body images camid 1; the original Duke cameras are not used",
    hint="^pduke",
)(_parse_p_dukemtmc)


def _msmt17_layout(version: int, train: str, test: str, folders: tuple[str, ...], used_by: str) -> Layout:
    lists = {f"list_{s}": f"list_{s}.txt" for s in ("train", "val", "query", "gallery")}
    needs = {"train_dir": f"{train}/", "test_dir": f"{test}/", **lists}
    return Layout(folders, needs, f"V{version}: {used_by}")


_MSMT17_LAYOUTS = {
    1: _msmt17_layout(1, "train", "test", ("MSMT17_V1", "msmt17/MSMT17_V1", "MSMT17"),
                      "torchreid, BPBreID: msmt17/MSMT17_V1; TransReID: MSMT17"),
    2: _msmt17_layout(2, "mask_train_v2", "mask_test_v2", ("MSMT17_V2", "msmt17/MSMT17_V2"),
                      "torchreid, BPBreID: msmt17/MSMT17_V2"),
}


def _msmt17_version(version: object) -> int | None:
    text = str(version).lower().removeprefix("v") if version is not None else None
    if text not in (None, "1", "2"):
        raise ValueError(f"msmt17: version must be 1, 2 or None (autodetect), got {version!r}")
    return None if text is None else int(text)


def _parse_msmt17(adapter: Adapter, root: Path, *, version: int | str | None = None,
                  include_val: bool = True) -> Parsed:
    wanted = _msmt17_version(version)
    layouts = [_MSMT17_LAYOUTS[wanted]] if wanted else list(_MSMT17_LAYOUTS.values())
    found = _matches(root, layouts) if root.is_dir() else []
    if len(found) > 1:
        raise DatasetLayoutError(
            f"MSMT17 (msmt17): ROOT {root} holds both " + " and ".join(str(m.data_dir) for m in found)
            + ".\nFix: pass version=1 or version=2, or pass the folder of the version you want as ROOT.")
    found = found[0] if found else locate(root, adapter, layouts)  # locate raises the layout error
    paths = found.paths
    train = _records_from_list(paths["list_train"], paths["train_dir"])
    if include_val:
        train += _records_from_list(paths["list_val"], paths["train_dir"])
    query = _records_from_list(paths["list_query"], paths["test_dir"])
    gallery = _records_from_list(paths["list_gallery"], paths["test_dir"])
    return found.data_dir, train, query, gallery


_adapter(
    "msmt17", "MSMT17",
    list(_MSMT17_LAYOUTS.values()),
    "camera ids from the third file-name field (0000_000_01_... -> camera 01 -> 0; 15 cameras); training "
    "split = list_train + list_val (32,621 images, as in the paper and TransReID) unless include_val=False "
    "(torchreid's default)",
    hint="msmt",
    options_help="version=1|2 (default: autodetect), include_val=True|False",
)(_parse_msmt17)


def _parse_synthocc(adapter: Adapter, root: Path, *,
                    protocol: str | None = None) -> Parsed:
    # protocol=None: ROOT is a protocol folder, or the SynthOcc root holding the default protocol.
    # An explicit protocol must be ROOT/<protocol>, or ROOT itself when ROOT carries that name.
    folder = protocol or SYNTHOCC_PROTOCOLS[0]
    layout = Layout((folder,), _BBOX, "reidlib synth", root_itself=protocol is None or root.name == protocol)
    found = locate(root, adapter, [layout])
    return found.data_dir, *(_records_from_names(found.paths[split]) for split in SPLITS)


_adapter(
    "synthocc", "SynthOcc",
    [Layout(SYNTHOCC_PROTOCOLS, _BBOX,
            "`reidlib synth --out ROOT`: one folder per protocol, plus masks/parsing/ and metadata.csv")],
    _BBOX_NOTE + " (c1, c2, ... -> 0, 1, ...) as written by the generator; protocols: "
    + ", ".join(SYNTHOCC_PROTOCOLS),
    hint="synth",
    sniff=lambda found: (found.data_dir / "metadata.csv").is_file(),
    options_help="protocol=" + "|".join(SYNTHOCC_PROTOCOLS)
    + " (default: ROOT itself when it is a protocol folder, else occluded_duke)",
    fix="write it with `reidlib synth --out ROOT`, or pass protocol= one of the protocol folders ROOT "
        "holds, or pass a protocol folder itself as ROOT.",
)(_parse_synthocc)


# ---------------------------------------------------------------------------------------------------
# Parsing masks, image verification, the entry point


def parsing_mask_path(image_path: str | os.PathLike, data_dir: str | os.PathLike) -> Path | None:
    """Where the human-parsing label map of an image lives: DATA_DIR/masks/parsing/<path below DATA_DIR>.png
    (e.g. masks/parsing/query/0001_c2_f0012345.png). None for an image outside DATA_DIR."""
    mask = _mask_path(os.fspath(image_path), os.path.join(os.fspath(data_dir), ""))
    return None if mask is None else Path(mask)


def _mask_path(image_path: str, data_prefix: str) -> str | None:
    # String operations, not pathlib: called once per image of data sets with 100k images.
    if not image_path.startswith(data_prefix):
        return None
    below = os.path.splitext(image_path[len(data_prefix):])[0]
    return os.path.join(data_prefix, *PARSING_DIR, below + ".png")


def attach_parsing_masks(dataset: ReidDataset) -> ReidDataset:
    """Fill `Record.mask_path` wherever a label map exists at `parsing_mask_path`."""
    masks_root = os.path.join(dataset.root, *PARSING_DIR)
    existing = {os.path.join(d, f) for d, _, files in os.walk(masks_root) for f in files}  # one walk
    if not existing:
        return dataset
    prefix = os.path.join(dataset.root, "")

    def fill(records: list[Record]) -> list[Record]:
        out = []
        for r in records:
            mask = None if r.mask_path is not None else _mask_path(r.path, prefix)
            out.append(replace(r, mask_path=mask) if mask in existing else r)
        return out

    return replace(dataset, **{split: fill(dataset.split(split)) for split in SPLITS})


def _drop_corrupt(dataset: ReidDataset, on_corrupt: str) -> ReidDataset:
    failures = find_corrupt(r.path for split in SPLITS for r in dataset.split(split))
    if failures and on_corrupt == "error":
        raise CorruptImageError.from_failures(failures, f"{dataset.name} at {dataset.root}")
    kept = {split: [r for r in dataset.split(split) if r.path not in failures] for split in SPLITS}
    skipped = {split: len(dataset.split(split)) - len(kept[split]) for split in SPLITS}
    # Relabel again: dropping an identity's only training images must not leave a gap in 0..n-1.
    return replace(dataset, train=relabel(kept["train"]), query=kept["query"], gallery=kept["gallery"],
                   skipped=skipped)


def load_dataset(name: str, root: str | os.PathLike, *, on_corrupt: str = "error",
                 verify_images: bool = False, **options) -> ReidDataset:
    """Load benchmark `name` from `root` (see `describe_datasets()` for names, layouts and options).

    verify_images=True decodes every image up front; unreadable ones then raise CorruptImageError
    (on_corrupt="error", naming them) or are dropped and counted in `ReidDataset.skipped`
    (on_corrupt="skip", which always verifies: skipping needs to know which files are bad). Without
    verification a bad file surfaces when it is read (`read_image` raises CorruptImageError).
    """
    if on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    dataset = attach_parsing_masks(DATASETS.get(name)(root, **options))
    return _drop_corrupt(dataset, on_corrupt) if verify_images or on_corrupt == "skip" else dataset


# ---------------------------------------------------------------------------------------------------
# Guessing NAME, `reidlib datasets check` and `reidlib datasets list`


def _normalised_names(found: Match, root: Path) -> list[str]:
    """ROOT's own name and the folders between it and the data-set folder, lower case, letters/digits only."""
    parts = found.data_dir.parts[max(len(root.parts) - 1, 0):]
    return [re.sub(r"[^a-z0-9]", "", p.lower()) for p in parts]


def guess_dataset(root: str | os.PathLike) -> tuple[str, str]:
    """(name, reason) of the benchmark ROOT holds; DatasetLayoutError when none or several fit.

    Several benchmarks share a layout (Market-1501, Duke, Occluded-Duke and SynthOcc all use
    bounding_box_train/query/bounding_box_test), so among the layouts that match, content evidence
    (file-name style, SynthOcc's metadata.csv) beats folder names, which beat registration order.
    A failed content test rules a benchmark out (Duke-style names are not Market-1501).
    """
    root = _as_root(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"data root {root} does not exist or is not a folder.\n"
                                 f"Fix: pass the folder that holds the data set.")
    scored = []  # (score, order, name, match, reason)
    for order, name in enumerate(_ORDER):
        adapter = DATASETS.get(name)
        for found in _matches(root, adapter.layouts)[:1]:
            sniffed = None if adapter.sniff is None else adapter.sniff(found)
            named = any(re.search(adapter.hint, p) for p in _normalised_names(found, root))
            if sniffed:
                scored.append((2, order, name, found, f"its files look like {adapter.title}'s"))
            elif named:
                scored.append((1, order, name, found, f"folder name {found.data_dir.name!r}"))
            elif sniffed is None:  # a failed content test rules the benchmark out
                scored.append((0, order, name, found, f"layout {', '.join(found.layout.needs.values())}"
                                                      f"; could also be another data set"))
    if not scored:
        near = [(name, c) for name in _ORDER if (c := _closest(root, DATASETS.get(name).layouts))]
        near = sorted(near, key=lambda item: len(item[1][1]))[:3]
        partial = "".join(f"\n  {name}? {folder} lacks {', '.join(missing)}"
                          for name, (folder, missing) in near)
        raise DatasetLayoutError(
            f"no known data-set layout under {root}; it holds: {_listing(root)}.{partial}\n"
            f"Fix: pass the data-set folder (or its parent) and NAME; `reidlib datasets list` shows "
            f"every accepted layout.")
    # Evidence ranks benchmarks sharing one folder; positively identified ones in different folders
    # mean ROOT holds several data sets.
    candidates = [s for s in scored if s[0] > 0] or scored
    if len({s[3].data_dir for s in candidates}) > 1:
        listed = "; ".join(f"{name} at {found.data_dir}" for _, _, name, found, _ in candidates)
        raise DatasetLayoutError(f"{root} holds several data sets: {listed}.\n"
                                 f"Fix: pass NAME, or pass one data-set folder as ROOT.")
    _, _, name, _, reason = min(candidates, key=lambda s: (-s[0], s[1]))
    return name, reason


def _split_table(dataset: ReidDataset) -> str:
    header = f"{'split':<8}{'images':>9}{'identities':>12}{'cameras':>9}{'masks':>8}"
    rows = [header]
    for row in dataset.summary():
        masks = sum(r.mask_path is not None for r in dataset.split(row["split"]))
        rows.append(f"{row['split']:<8}{row['images']:>9}{row['identities']:>12}{row['cameras']:>9}{masks:>8}")
    return "\n".join(rows)


def check_dataset(root: str | os.PathLike, name: str | None = None, verify_images: bool = False,
                  out: TextIO | None = None) -> int:
    """`reidlib datasets check ROOT [NAME]`: print per-split counts and the camera convention.

    Exit code 0 when the data set loads (and, with verify_images, every image decodes), 1 when some
    images do not decode, 2 on a layout error or an unknown NAME.
    """
    out = out or sys.stdout
    try:
        if name is None:
            name, reason = guess_dataset(root)
            print(f"Guessed data set: {name} ({reason}); pass NAME to choose another.", file=out)
        dataset = load_dataset(name, root)
    except ValueError as exc:  # DatasetLayoutError, unknown NAME
        print(f"reidlib: error: {exc}", file=sys.stderr)
        return 2
    print(f"{DATASETS.get(name).title} ({name}) at {dataset.root}", file=out)
    print(_split_table(dataset), file=out)
    print(f"cameras: {dataset.camera_note}", file=out)
    if not verify_images:
        return 0
    records = [r for split in SPLITS for r in dataset.split(split)]
    failures = find_corrupt(r.path for r in records)
    if failures:
        print(CorruptImageError.from_failures(failures, name), file=out)
        return 1
    print(f"verified: all {len(records)} images decode", file=out)
    return 0


def describe_datasets() -> str:
    """`reidlib datasets list`: every data-set name, the layouts it accepts, options and camera ids."""
    lines = ["Data sets: reidlib.data.load_dataset(NAME, ROOT) / `reidlib datasets check ROOT [NAME]`.",
             "ROOT is the data-set folder itself or a folder holding it; folder names match in any case.",
             f"Parsing label maps are read from DATA_DIR/{'/'.join(PARSING_DIR)}/<image path below "
             "DATA_DIR>.png when present.",
             ""]
    for name in _ORDER:
        adapter = DATASETS.get(name)
        lines.append(f"{name}: {adapter.title}")
        lines += [f"  layout: {layout.describe()}" for layout in adapter.layouts]
        if adapter.options_help:
            lines.append(f"  options: {adapter.options_help}")
        lines.append(f"  cameras: {adapter.camera_note}")
    return "\n".join(lines)
