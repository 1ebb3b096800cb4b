"""Reading and looking at a SynthOcc set: protocol folders, metadata, a summary table, a contact sheet."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reidlib.data.synth.protocols import PROTOCOLS, SPLIT_DIRS


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
    manifest_path = root / "synthocc.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
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


# one colour per PARSING_LABELS entry: background, head, torso, arms (greens), legs (blues), feet (pinks)
PARSING_COLOURS = np.array([[0, 0, 0], [250, 220, 40], [220, 40, 40], [40, 170, 60], [140, 230, 90],
                            [40, 80, 220], [60, 200, 230], [200, 60, 200], [250, 150, 200]], np.uint8)


def colourise(label: np.ndarray) -> np.ndarray:
    """[H, W] parsing labels -> [H, W, 3] colours (PARSING_COLOURS, index = label)."""
    return PARSING_COLOURS[np.clip(label, 0, len(PARSING_COLOURS) - 1)]


def contact_sheet(root, n: int = 24, protocol: str = "occluded_duke", split: str | None = None,
                  columns: int = 8, zoom: int = 2, seed: int = 0) -> Image.Image:
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
        mask = proot / "masks" / "parsing" / split_dir / (Path(r["filename"]).stem + ".png")
        lab = np.asarray(Image.open(mask))
        pair = Image.fromarray(np.concatenate([img, colourise(lab)], axis=1))
        pair = pair.resize((pair.width * zoom, pair.height * zoom), Image.NEAREST)
        tile = Image.new("RGB", (pair.width, pair.height + 24), "white")
        tile.paste(pair, (0, 0))
        draw = ImageDraw.Draw(tile)
        occ = r["occluder"]
        if occ != "none":
            occ += f"@{r['position']} {float(r['occluded_fraction']):.2f}"
        caption = f"{r['pid']} c{r['camid']} {r['split']} {r['viewpoint']}"
        draw.text((2, pair.height + 1), caption, fill="black")
        draw.text((2, pair.height + 12), occ, fill="black")
        tiles.append(tile)
    cols = min(columns, len(tiles))
    th, tw = tiles[0].height, tiles[0].width
    sheet = Image.new("RGB", (cols * (tw + 4), math.ceil(len(tiles) / cols) * (th + 4)), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * (tw + 4), (k // cols) * (th + 4)))
    return sheet
