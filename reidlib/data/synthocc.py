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
import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reidlib.config import ConfigError
from reidlib.data.synth.occluders import KIND_POSITIONS, OCCLUDER_KINDS, POSITIONS
from reidlib.data.synth.protocols import PROTOCOLS, SPLIT_DIRS, STREAMS, Shot, plan
from reidlib.data.synth.render import PARSING_LABELS, PART_NAMES, World, render

VERSION = 1  # bump whenever the pictures or the layout change: cached sets are regenerated
PRESETS: dict[str, dict] = {
    # tiny: every code path in tests, well under 3 s
    "ci": dict(
        height=64,
        width=32,
        num_train_ids=16,
        num_test_ids=8,
        num_cameras=4,
        train_per_id=(4, 4),
        query_per_id=(1, 2),
        gallery_per_id=(3, 3),
        reid_images_per_id=2,
    ),
    # the default: large enough that methods differ, generated in well under a minute on one core
    "demo": dict(
        height=128,
        width=64,
        num_train_ids=180,
        num_test_ids=100,
        num_cameras=6,
        train_per_id=(8, 12),
        query_per_id=(1, 3),
        gallery_per_id=(6, 10),
        reid_images_per_id=3,
    ),
    # larger and at the papers' resolution (Occluded-Duke has 702 train / 1,110 test identities)
    "paper": dict(
        height=256,
        width=128,
        num_train_ids=500,
        num_test_ids=500,
        num_cameras=8,
        train_per_id=(12, 20),
        query_per_id=(1, 3),
        gallery_per_id=(8, 12),
        reid_images_per_id=5,
    ),
}
DEFAULTS: dict = dict(
    occlusion_ratio=(0.2, 0.55),  # fraction of the body's pixels an occluder hides, drawn uniformly
    occlusion_positions=POSITIONS,  # where occluders enter from ("side" = left and right)
    occluder_kinds=OCCLUDER_KINDS,
    train_occluded=0.5,  # occluded_duke: share of occluded training images
    query_occluded=1.0,  # occluded_duke: share of occluded queries
    gallery_occluded=0.1,  # occluded_duke: share of occluded gallery images
    family_fraction=0.5,  # share of identities with look-alikes differing in one body region
    family_size=3,  # largest family
    partial_keep=(0.45, 0.8),  # partial_reid: share of the body's height (or width) a crop keeps
    camera_strength=1.0,  # 0: identical illumination in all cameras, 1: full differences
    jpeg_quality=92,
)
_INT_MIN = {
    "height": 32,
    "width": 16,
    "num_train_ids": 2,
    "num_test_ids": 1,
    "num_cameras": 2,
    "reid_images_per_id": 1,
    "family_size": 1,
}
_INT_RANGES = ("train_per_id", "query_per_id", "gallery_per_id")
_FRACTIONS = ("train_occluded", "query_occluded", "gallery_occluded", "family_fraction", "camera_strength")
_FRACTION_RANGES = ("occlusion_ratio", "partial_keep")
_CHOICES = {"occlusion_positions": POSITIONS, "occluder_kinds": OCCLUDER_KINDS}


# ---- options -----------------------------------------------------------------------------------------------
def _pair(name: str, value) -> tuple:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return tuple(value)
    raise ConfigError(f"synthocc option {name}={value!r}: give one number or a (low, high) pair")


def _number(name: str, value, integer: bool):
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or (not integer and not math.isfinite(value)):
        raise ConfigError(
            f"synthocc option {name}={value!r}: expected {'an integer' if integer else 'a number'}"
        )
    return int(value) if integer else float(value)


def resolve_options(size: str = "demo", **options) -> dict:
    """The full, validated option set: the `size` preset and DEFAULTS, overridden by `options`."""
    if size not in PRESETS:
        raise ConfigError(f"unknown SynthOcc size {size!r}; choose one of {', '.join(PRESETS)}")
    known = {**PRESETS[size], **DEFAULTS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown SynthOcc option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    opts = {**known, **options}
    for name, low in _INT_MIN.items():
        opts[name] = _number(name, opts[name], integer=True)
        if opts[name] < low:
            raise ConfigError(f"synthocc option {name}={opts[name]} is too small; use at least {low}")
    q = _number("jpeg_quality", opts["jpeg_quality"], integer=True)
    if not 1 <= q <= 100:
        raise ConfigError(f"synthocc option jpeg_quality={q} must lie in [1, 100]")
    for name in _INT_RANGES:
        lo, hi = (_number(name, v, integer=True) for v in _pair(name, opts[name]))
        if not 1 <= lo <= hi:
            raise ConfigError(f"synthocc option {name}=({lo}, {hi}): need 1 <= low <= high")
        opts[name] = (lo, hi)
    for name in _FRACTIONS:
        v = _number(name, opts[name], integer=False)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"synthocc option {name}={v} is out of [0, 1]")
        opts[name] = v
    for name in _FRACTION_RANGES:
        lo, hi = (_number(name, v, integer=False) for v in _pair(name, opts[name]))
        if not (0.0 <= lo <= hi <= 1.0):
            raise ConfigError(
                f"synthocc option {name}=({lo}, {hi}) is out of range: need 0 <= low <= high <= 1"
            )
        opts[name] = (lo, hi)
    if opts["partial_keep"][0] <= 0:
        raise ConfigError("synthocc option partial_keep must keep something: its low end must be > 0")
    for name, allowed in _CHOICES.items():
        values = [opts[name]] if isinstance(opts[name], str) else list(opts[name])
        if name == "occlusion_positions":  # "side" is shorthand for both sides
            values = [v for item in values for v in (("left", "right") if item == "side" else (item,))]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            extra = " or 'side'" if name == "occlusion_positions" else ""
            raise ConfigError(
                f"synthocc option {name}={opts[name]!r}: choose from {', '.join(allowed)}{extra}"
            )
        opts[name] = tuple(v for v in allowed if v in values)  # canonical order: same set, same hash
    if not any(p in KIND_POSITIONS[k] for p in opts["occlusion_positions"] for k in opts["occluder_kinds"]):
        fits = {k: KIND_POSITIONS[k] for k in opts["occluder_kinds"]}
        raise ConfigError(
            f"no occluder kind fits positions {opts['occlusion_positions']}: {fits}; add a position or a kind"
        )
    return opts


def resolve_protocols(protocols) -> tuple[str, ...]:
    if protocols is None:
        return PROTOCOLS
    chosen = [protocols] if isinstance(protocols, str) else list(protocols)
    bad = [p for p in chosen if p not in PROTOCOLS]
    if bad or not chosen:
        raise ConfigError(f"unknown SynthOcc protocol(s) {bad or chosen}; choose from {', '.join(PROTOCOLS)}")
    return tuple(p for p in PROTOCOLS if p in chosen)


def parameters_key(seed: int, size: str, protocols, opts: dict) -> str:
    """Hash of everything that determines the files (including VERSION): the cache key."""
    blob = json.dumps(
        {
            "version": VERSION,
            "seed": int(seed),
            "size": size,
            "protocols": list(protocols),
            "options": _jsonable(opts),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _jsonable(opts: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


# ---- writing -----------------------------------------------------------------------------------------------
def _is_synthocc_set(path: Path) -> bool:
    return (path / "synthocc.json").is_file()


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "synthocc.json").read_text())
    except (OSError, ValueError):
        return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["split", "filename"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save(proto_dir: Path, shot: Shot, image: np.ndarray, label: np.ndarray, quality: int) -> None:
    split_dir = SPLIT_DIRS[shot.split]
    Image.fromarray(image).save(proto_dir / split_dir / shot.filename, quality=quality)
    Image.fromarray(label).save(proto_dir / _mask_rel(shot), compress_level=1)


def _mask_rel(shot: Shot) -> Path:
    return Path("masks") / "parsing" / SPLIT_DIRS[shot.split] / f"{shot.stem}.png"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    # disable=None: tqdm shows itself only on a terminal; delay: silent when generation is quick
    return tqdm(
        total=total, desc="SynthOcc", unit="img", delay=1.0, disable=None if enabled is None else not enabled
    )


def _build(
    tmp: Path, seed: int, size: str, protocols: tuple[str, ...], opts: dict, key: str, progress: bool | None
) -> None:
    """Render every shot once, with all the variants the protocols need, and write each variant into every
    protocol showing it (the first copy is written, the others are hard links)."""
    world = World.build(seed, opts)
    plans = {p: plan(p, seed, opts) for p in protocols}
    needs: dict[Shot, dict[str, list[str]]] = {}  # shot -> variant -> protocols, in stream order
    for proto, entries in plans.items():
        for e in entries:
            needs.setdefault(e.shot, {}).setdefault(e.variant, []).append(proto)
    for proto in protocols:
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
                _save(tmp / first, shot, image, label, opts["jpeg_quality"])
                for proto in others:
                    for rel in (Path(SPLIT_DIRS[shot.split]) / shot.filename, _mask_rel(shot)):
                        _link_or_copy(tmp / first / rel, tmp / proto / rel)
                for proto in needs[shot][variant]:
                    rows[proto].append(row)
            bar.update(1)
    counts = {p: {s: sum(r["split"] == s for r in rows[p]) for s in SPLIT_DIRS} for p in protocols}
    for proto in protocols:
        _write_csv(tmp / proto / "metadata.csv", rows[proto])
        _write_json(tmp / proto / "synthocc.json", _manifest(seed, size, (proto,), opts, key, counts, proto))
    _write_csv(tmp / "identities.csv", [i.to_row() for i in world.identities.values()])
    _write_json(
        tmp / "synthocc.json", _manifest(seed, size, protocols, opts, key, counts)
    )  # last: marks completion


def _manifest(seed, size, protocols, opts, key, counts, protocol=None) -> dict:
    out = {
        "generator": "reidlib.data.synthocc",
        "version": VERSION,
        "key": key,
        "seed": int(seed),
        "size": size,
        "protocols": list(protocols),
        "options": _jsonable(opts),
        "parsing_labels": list(PARSING_LABELS),
        "split_dirs": SPLIT_DIRS,
        "counts": {p: counts[p] for p in protocols if p in counts},
    }
    if protocol is not None:
        out["protocol"] = protocol
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished set `tmp` to `out`, replacing an older SynthOcc set or an empty folder there."""
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif _is_synthocc_set(out):
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            try:
                os.rename(tmp, out)
            finally:
                shutil.rmtree(trash, ignore_errors=True)
            return
        else:
            raise FileExistsError(f"{out} exists and is not a SynthOcc set; give an empty or new folder")
    os.rename(tmp, out)


def generate(
    out_dir, seed: int = 0, size: str = "demo", protocols=None, progress: bool | None = None, **options
) -> Path:
    """Write a SynthOcc set to `out_dir` (replacing an older SynthOcc set there) and return its path.

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
        _publish(tmp, out)
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
    return (
        bool(manifest) and manifest.get("version") == VERSION and (key is None or manifest.get("key") == key)
    )


def ensure(
    size: str = "demo", seed: int = 0, cache_dir=None, protocols=None, progress: bool | None = None, **options
) -> Path:
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
    try:
        return generate(path, seed=seed, size=size, protocols=protos, progress=progress, **options)
    except OSError:
        if is_complete(path, key):  # another process published the same set meanwhile
            return path.resolve()
        raise


# ---- reading and looking -----------------------------------------------------------------------------------
def protocol_root(root, protocol: str = "occluded_duke") -> Path:
    """The protocol folder of a set (accepts the set root or the protocol folder itself)."""
    root = Path(root)
    if (root / "metadata.csv").is_file():
        return root
    if (root / protocol / "metadata.csv").is_file():
        return root / protocol
    raise FileNotFoundError(
        f"no SynthOcc protocol {protocol!r} under {root}; generate one with `reidlib synth --out {root}`"
    )


def read_metadata(root, protocol: str = "occluded_duke"):
    """metadata.csv of one protocol as a pandas DataFrame (vis_* of self-hidden parts are NaN)."""
    import pandas as pd

    return pd.read_csv(protocol_root(root, protocol) / "metadata.csv")


def describe(root) -> str:
    """Per protocol and split: images, identities, cameras and the share of occluded (or cropped) images."""
    root = Path(root)
    manifest = _read_manifest(root) or {}
    lines = [f"{'protocol':<14} {'split':<8} {'images':>6} {'ids':>5} {'cams':>4} {'occluded':>8}"]
    for proto in manifest.get("protocols", [p for p in PROTOCOLS if (root / p).is_dir()]):
        with open(root / proto / "metadata.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        for split in SPLIT_DIRS:
            part = [r for r in rows if r["split"] == split]
            occluded = sum(r["occluder"] != "none" for r in part) / max(len(part), 1)
            lines.append(
                f"{proto:<14} {split:<8} {len(part):>6} {len({r['pid'] for r in part}):>5} "
                f"{len({r['camid'] for r in part}):>4} {occluded:>8.0%}"
            )
    return "\n".join(lines)


PARSING_COLOURS = np.array(
    [
        [0, 0, 0],
        [250, 220, 40],
        [220, 40, 40],
        [40, 170, 60],
        [140, 230, 90],
        [40, 80, 220],
        [60, 200, 230],
        [200, 60, 200],
        [250, 150, 200],
    ],
    np.uint8,
)


def colourise(label: np.ndarray) -> np.ndarray:
    """[H, W] parsing labels -> [H, W, 3] colours (PARSING_COLOURS, index = label)."""
    return PARSING_COLOURS[np.clip(label, 0, len(PARSING_COLOURS) - 1)]


def contact_sheet(
    root,
    n: int = 24,
    protocol: str = "occluded_duke",
    split: str | None = None,
    columns: int = 8,
    zoom: int = 2,
    seed: int = 0,
) -> Image.Image:
    """A grid of `n` images, each beside its parsing map, captioned pid/camera/occluder (a visual check)."""
    proot = protocol_root(root, protocol)
    with open(proot / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if split is None or r["split"] == split]
    if not rows:
        raise FileNotFoundError(f"no images in {proot} (split={split!r})")
    pick = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    tiles = []
    for i in sorted(pick):
        r = rows[i]
        split_dir = SPLIT_DIRS[r["split"]]
        img = np.asarray(Image.open(proot / split_dir / r["filename"]).convert("RGB"))
        lab = np.asarray(
            Image.open(proot / "masks" / "parsing" / split_dir / (Path(r["filename"]).stem + ".png"))
        )
        pair = Image.fromarray(np.concatenate([img, colourise(lab)], axis=1))
        pair = pair.resize((pair.width * zoom, pair.height * zoom), Image.NEAREST)
        tile = Image.new("RGB", (pair.width, pair.height + 24), "white")
        tile.paste(pair, (0, 0))
        draw = ImageDraw.Draw(tile)
        occ = r["occluder"]
        if occ != "none":
            occ += f"@{r['position']} {float(r['occluded_fraction']):.2f}"
        draw.text(
            (2, pair.height + 1), f"{r['pid']} c{r['camid']} {r['split']} {r['viewpoint']}", fill="black"
        )
        draw.text((2, pair.height + 12), occ, fill="black")
        tiles.append(tile)
    cols = min(columns, len(tiles))
    th, tw = tiles[0].height, tiles[0].width
    sheet = Image.new("RGB", (cols * (tw + 4), math.ceil(len(tiles) / cols) * (th + 4)), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * (tw + 4), (k // cols) * (th + 4)))
    return sheet


__all__ = [
    "VERSION",
    "PRESETS",
    "DEFAULTS",
    "PARSING_LABELS",
    "PART_NAMES",
    "PROTOCOLS",
    "SPLIT_DIRS",
    "generate",
    "ensure",
    "resolve_options",
    "resolve_protocols",
    "parameters_key",
    "default_cache_dir",
    "is_complete",
    "protocol_root",
    "read_metadata",
    "describe",
    "contact_sheet",
    "colourise",
]
