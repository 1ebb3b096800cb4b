"""SynthOcc: the embedded synthetic occluded-person benchmark (no network, deterministic from a seed).

    from reidlib.data import synthocc
    root = synthocc.ensure("demo")                # cached under $REIDLIB_CACHE/synthocc or ~/.cache/...
    synthocc.generate("/tmp/so", seed=1, size="ci", occlusion_ratio=(0.3, 0.6))

Layout of a generated set (each protocol is a Duke-layout data set, see reidlib/data/synth/protocols.py):

    <out_dir>/synthocc.json                      generation parameters, version, counts (written last)
    <out_dir>/identities.csv                     attributes and family of every pid
    <out_dir>/<protocol>/{bounding_box_train,query,bounding_box_test}/{pid:04d}_c{cam}_f{frame:07d}.jpg
    <out_dir>/<protocol>/masks/parsing/<split_dir>/<stem>.png   uint8 labels, see PARSING_LABELS
    <out_dir>/<protocol>/metadata.csv            per image: split, filename, pid, camid, scene, viewpoint,
                                                 occluder, position, target/occluded fraction, family,
                                                 vis_<part> and area_<part> for each body part
    <out_dir>/<protocol>/synthocc.json

`vis_<part>` is the part's visible pixels divided by its pixels in the same image without the occluder
(`area_<part>`; empty when the part is hidden by the body itself, e.g. the far arm in a side view). For
Partial-REID crops both are counted in the uncropped frame. Label 0 is background, occluders and handbags.
The whole set is built in a temporary folder beside `out_dir` and renamed into place when complete.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from reidlib.data.synth.options import (
    DEFAULTS,
    PRESETS,
    VERSION,
    jsonable,
    parameters_key,
    resolve_options,
    resolve_protocols,
)
from reidlib.data.synth.paste import occlude_photo
from reidlib.data.synth.protocols import PROTOCOLS, SPLIT_DIRS, STREAMS, Shot, plan
from reidlib.data.synth.render import PARSING_LABELS, PART_NAMES, World, passers_by, render
from reidlib.data.synth.sheet import colourise, contact_sheet, describe, protocol_root, read_metadata


# ---- writing -----------------------------------------------------------------------------------------------
def _is_synthocc_set(path: Path) -> bool:
    return (path / "synthocc.json").is_file()


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "synthocc.json").read_text())
    except (OSError, ValueError):
        return None


def _fmt(value) -> str:
    return "" if value != value else str(value)  # NaN (a part the body hides itself) -> empty cell


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(rows[0]) if rows else ["split", "filename"])
        writer.writerows([_fmt(v) for v in row.values()] for row in rows)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _relative_paths(shot: Shot) -> tuple[str, str]:
    """(image, parsing mask) paths of a shot inside a protocol folder."""
    split_dir = SPLIT_DIRS[shot.split]
    return f"{split_dir}/{shot.filename}", f"masks/parsing/{split_dir}/{shot.stem}.png"


def _save(proto_dir: str, shot: Shot, image: np.ndarray, label: np.ndarray, quality: int) -> None:
    image_rel, mask_rel = _relative_paths(shot)
    Image.fromarray(image).save(os.path.join(proto_dir, image_rel), quality=quality)
    Image.fromarray(label).save(os.path.join(proto_dir, mask_rel), compress_level=1)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    # disable=None: tqdm shows itself only on a terminal; delay: silent when generation is quick
    disable = None if enabled is None else not enabled
    return tqdm(total=total, desc="SynthOcc", unit="img", delay=1.0, disable=disable)


def _build(tmp: Path, seed: int, size: str, protocols: tuple[str, ...], opts: dict, key: str,
           progress: bool | None) -> None:
    """Render every shot once, with all the variants the protocols need, and write each variant into every
    protocol showing it (the first copy is written, the others are hard links)."""
    world = World.build(seed, opts)
    needs: dict[Shot, dict[str, list[str]]] = {}  # shot -> variant -> protocols showing it
    for proto in protocols:
        for entry in plan(proto, seed, opts):
            needs.setdefault(entry.shot, {}).setdefault(entry.variant, []).append(proto)
        for split_dir in SPLIT_DIRS.values():
            (tmp / proto / split_dir).mkdir(parents=True)
            (tmp / proto / "masks" / "parsing" / split_dir).mkdir(parents=True)
    rows: dict[str, list[dict]] = {p: [] for p in protocols}
    order = sorted(needs, key=lambda s: (STREAMS[s.stream], s.index))  # = each protocol's file order
    with _progress(len(order), progress) as bar:
        for shot in order:
            for variant, (image, label, row) in render(shot, world, needs[shot]).items():
                row = {"split": shot.split, "filename": shot.filename, **row}
                first, *others = needs[shot][variant]
                _save(os.path.join(tmp, first), shot, image, label, opts["jpeg_quality"])
                for proto in others:
                    for rel in _relative_paths(shot):
                        _link_or_copy(os.path.join(tmp, first, rel), os.path.join(tmp, proto, rel))
                for proto in needs[shot][variant]:
                    rows[proto].append(row)
            bar.update(1)
    counts = {p: {s: sum(r["split"] == s for r in rows[p]) for s in SPLIT_DIRS} for p in protocols}
    for proto in protocols:
        _write_csv(tmp / proto / "metadata.csv", rows[proto])
        _write_json(tmp / proto / "synthocc.json", _manifest(seed, size, (proto,), opts, key, counts, proto))
    _write_csv(tmp / "identities.csv", [i.to_row() for i in world.identities.values()])
    # last: the top-level manifest marks a complete set
    _write_json(tmp / "synthocc.json", _manifest(seed, size, protocols, opts, key, counts))


def _manifest(seed, size, protocols, opts, key, counts, protocol=None) -> dict:
    """synthocc.json: what determines the set (version, seed, size, options; `key` hashes them), what it
    holds, and no time stamp or path, so that the same parameters give byte-identical files."""
    out = {"generator": "reidlib.data.synthocc", "version": VERSION, "key": key, "seed": int(seed),
           "size": size, "protocols": list(protocols), "options": jsonable(opts),
           "parsing_labels": list(PARSING_LABELS), "split_dirs": SPLIT_DIRS,
           "counts": {p: counts[p] for p in protocols if p in counts}}
    if protocol is not None:
        out["protocol"] = protocol
    return out


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished set `tmp` to `out`. An empty folder there is replaced; an existing SynthOcc set is
    replaced when `overwrite`, else kept (and `tmp` discarded). Anything else is never touched."""
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif not _is_synthocc_set(out):
            raise FileExistsError(f"{out} exists and is not a SynthOcc set; give an empty or new folder")
        elif not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        else:
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(trash, out)  # put the old set back
                raise
            shutil.rmtree(trash, ignore_errors=True)
            return
    os.rename(tmp, out)


def generate(out_dir, seed: int = 0, size: str = "demo", protocols=None, progress: bool | None = None,
             overwrite: bool = True, **options) -> Path:
    """Write a SynthOcc set to `out_dir` and return its path. A SynthOcc set already there is replaced
    (`overwrite=False`: kept as it is); any other non-empty folder is an error.

    `size` is a preset (ci, demo, paper); `protocols` a subset of PROTOCOLS (default: all); `options`
    override the preset and DEFAULTS (see `resolve_options`). The set is built in a hidden temporary folder
    beside `out_dir` and renamed into place only when complete; on any error nothing is left behind.
    `progress`: None shows a tqdm bar on a terminal when it takes more than a second, True/False force it.
    """
    opts = resolve_options(size, **options)
    protos = resolve_protocols(protocols)
    seed = int(seed)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; give a folder for the SynthOcc set")
    if out.is_dir() and any(out.iterdir()) and not _is_synthocc_set(out):
        raise FileExistsError(f"{out} exists and is not a SynthOcc set; give an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build(tmp, seed, size, protos, opts, parameters_key(seed, size, protos, opts), progress)
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def default_cache_dir() -> Path:
    """$REIDLIB_CACHE/synthocc when REIDLIB_CACHE (reidlib's cache root) is set, else
    ~/.cache/reidlib/synthocc."""
    root = os.environ.get("REIDLIB_CACHE")
    return Path(root).expanduser() / "synthocc" if root else Path.home() / ".cache" / "reidlib" / "synthocc"


def is_complete(root, key: str | None = None) -> bool:
    """True when `root` holds a finished SynthOcc set of this VERSION (and with cache key `key`, if given)."""
    manifest = _read_manifest(Path(root))
    return bool(manifest) and manifest.get("version") == VERSION and key in (None, manifest.get("key"))


def ensure(size: str = "demo", seed: int = 0, cache_dir=None, protocols=None, progress: bool | None = None,
           **options) -> Path:
    """A SynthOcc set with these parameters from the cache, generated on first use.

    The folder name carries a hash of the parameters and VERSION, so changing any of them gives a new set."""
    opts = resolve_options(size, **options)
    protos = resolve_protocols(protocols)
    key = parameters_key(seed, size, protos, opts)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / f"{size}-seed{int(seed)}-{key[:12]}"
    if is_complete(path, key):
        return path.resolve()
    if path.is_dir() and not _is_synthocc_set(path):  # damaged cache entry (ours: it is named by our key)
        shutil.rmtree(path)
    # overwrite=False: when another process publishes the same set meanwhile, its copy is kept
    return generate(path, seed=seed, size=size, protocols=protos, progress=progress, overwrite=False,
                    **options)


# ---- occluders on a real data set's queries -------------------------------------------------------------
OCCLUDE_STREAM = 0x0C  # random stream of the pasted occluders, apart from the generator's streams
OCCLUDED_QUERIES_META = "occluded_queries.json"


def _parsing_labels(record, root) -> np.ndarray | None:
    """The record's parsing label map (SynthOcc's PARSING_LABELS), or None when the data set has none."""
    from reidlib.data.masks import expected_mask_paths

    found = [p for p in expected_mask_paths(record, root, "parsing") if p.is_file()]
    return np.asarray(Image.open(found[0])) if found else None


def _occlude_query(record, root, out: Path, rng, opts: dict, pedestrians) -> tuple[dict, object]:
    """Occlude one query: write its image (and occluded label map), return its metadata row and record."""
    name = Path(record.path).name
    image = np.asarray(Image.open(record.path).convert("RGB"))
    labels = _parsing_labels(record, root)
    occluded, label, fields, parts = occlude_photo(image, labels, rng, opts, pedestrians)
    Image.fromarray(occluded).save(out / "query" / name, quality=opts["jpeg_quality"])
    mask_path = None
    if labels is not None:
        mask_path = out / "masks" / "parsing" / "query" / f"{Path(name).stem}.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(mask_path, compress_level=1)
    row = {"split": "query", "filename": name, "pid": record.pid, "camid": record.camid, "scene": "",
           "viewpoint": "", **fields, "family": "", **parts}  # SynthOcc's column order
    moved = dataclasses.replace(record, path=str(out / "query" / name),
                                mask_path=None if mask_path is None else str(mask_path))
    return row, moved


def occlude_queries(dataset, out_root, seed: int = 0, fraction_range=DEFAULTS["occlusion_ratio"],
                    positions=DEFAULTS["occlusion_positions"], kinds=DEFAULTS["occluder_kinds"],
                    jpeg_quality: int = DEFAULTS["jpeg_quality"]):
    """SynthOcc's occluders (objects and pedestrians, placed and drawn by the generator's own code) over
    every query of a real data set, so that `reidlib.robustness` can bin its queries as it bins SynthOcc's.

    Writes into `out_root`: query/<file name> (the occluded copies, same names), metadata.csv in SynthOcc's
    format (split, filename, pid, camid, occluder, position, target / occluded fraction, vis_<part> and
    area_<part>; scene, viewpoint and family empty) and occluded_queries.json (the parameters). Where a
    query has a parsing label map (SynthOcc's labels, `reidlib.data.masks`), the occluded fraction is over
    the person's labelled pixels, the per-part columns are filled and the occluded map is written to
    masks/parsing/query/<stem>.png; without one the fraction is over the whole crop and parts are empty.
    Deterministic in (seed, options, query order). Returns `dataset` with these queries (same gallery)."""
    opts = resolve_options("ci", occlusion_ratio=fraction_range, occlusion_positions=positions,
                           occluder_kinds=kinds, jpeg_quality=jpeg_quality)
    names = [Path(r.path).name for r in dataset.query]
    if len(set(names)) < len(names):
        raise ValueError(f"{dataset.name}'s queries repeat file names; occlude_queries writes one folder")
    out = Path(out_root)
    if (out / "query").resolve() in {Path(r.path).resolve().parent for r in dataset.query}:
        raise ValueError(f"{out} holds the original queries; give another folder for the occluded copies")
    (out / "query").mkdir(parents=True, exist_ok=True)
    pedestrians, rows, records = passers_by(seed), [], []
    for i, record in enumerate(dataset.query):  # one random stream per query: any query reproduces alone
        rng = np.random.default_rng([seed, OCCLUDE_STREAM, i])
        row, moved = _occlude_query(record, dataset.root, out, rng, opts, pedestrians)
        rows.append(row)
        records.append(moved)
    _write_csv(out / "metadata.csv", rows)
    options = ("occlusion_ratio", "occlusion_positions", "occluder_kinds", "jpeg_quality")
    _write_json(out / OCCLUDED_QUERIES_META, {
        "generator": "reidlib.data.synthocc.occlude_queries", "version": VERSION, "seed": int(seed),
        "dataset": dataset.name, "queries": len(rows), "options": jsonable({k: opts[k] for k in options})})
    return dataclasses.replace(dataset, name=f"{dataset.name} (SynthOcc occluders)", query=records)


__all__ = [
    "VERSION", "PRESETS", "DEFAULTS", "PARSING_LABELS", "PART_NAMES", "PROTOCOLS", "SPLIT_DIRS",
    "generate", "ensure", "resolve_options", "resolve_protocols", "parameters_key", "default_cache_dir",
    "is_complete", "protocol_root", "read_metadata", "describe", "contact_sheet", "colourise",
    "occlude_queries",
]
