"""SynthOcc protocols: which identity is shot by which camera, in which split, occluded or not.

Every protocol folder is a Duke-layout data set (`bounding_box_train/`, `query/`, `bounding_box_test/`).
Training identities (pids 1..T) and test identities (T+1..T+N) never mix; an identity keeps its pid and its
look in every protocol. Camera ids in file names are 1-based.

Pictures come from two streams of shots, and protocols are *variants* of those shots, so that one drawing
serves several protocols and the protocols are paired image by image:
- the "duke" stream (train, query, gallery over all cameras):
  occluded_duke shows part of the training images, every query and a few gallery images with an occluder
  (Occluded-Duke); holistic shows the very same shots without any occluder (a Market-1501-like source);
- the "reid" stream (query and gallery of the test identities, labelled camera 1 and camera 2 whatever
  camera drew them, as Occluded-REID and Partial-REID do):
  occluded_reid shows the queries with an occluder, partial_reid the same queries cropped to a partial body
  and resized back to full size; both galleries are the holistic pictures. Both ship the holistic training
  split, the usual "train on a holistic data set" setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROTOCOLS = ("occluded_duke", "holistic", "occluded_reid", "partial_reid")
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
STREAMS = {"duke": 1, "reid": 2}  # ids of the random streams
VARIANTS = ("clean", "occluded", "partial")
REID_QUERY_CAM, REID_GALLERY_CAM = 1, 2


@dataclass(frozen=True)
class Shot:
    """One picture of one identity, before any occluder or crop."""

    stream: str  # "duke" | "reid"
    split: str  # train | query | gallery
    index: int  # position in the stream; also the frame number in the file name
    pid: int
    camid: int  # camera id written in the file name
    scene: int  # camera whose background and illumination are used
    occluded: bool  # shown with an occluder in occluded_duke / occluded_reid

    @property
    def stem(self) -> str:
        return f"{self.pid:04d}_c{self.camid}_f{self.index:07d}"

    @property
    def filename(self) -> str:
        return self.stem + ".jpg"


@dataclass(frozen=True)
class Entry:
    """One image of one protocol: a shot and the variant of it the protocol shows."""

    shot: Shot
    variant: str  # clean | occluded | partial


def _counts(rng: np.random.Generator, lohi: tuple[int, int], n: int) -> np.ndarray:
    return rng.integers(lohi[0], lohi[1] + 1, size=n)


def _spread_cameras(rng: np.random.Generator, n: int, num_cams: int) -> list[int]:
    """n camera ids (1-based) using at least two cameras when n >= 2 (a re-id needs a second view)."""
    cams = [int(c) for c in rng.integers(1, num_cams + 1, size=n)]
    if n >= 2 and num_cams >= 2 and len(set(cams)) == 1:
        cams[-1] = cams[0] % num_cams + 1
    return cams


def duke_stream(seed: int, opts: dict) -> list[Shot]:
    """Training shots, then query and gallery shots; each query has a gallery match in another camera."""
    rng = np.random.default_rng([seed, STREAMS["duke"], 0])
    ncam, shots = opts["num_cameras"], []

    def add(split: str, pid: int, cam: int, occluded_p: float) -> None:
        shots.append(Shot("duke", split, len(shots) + 1, pid, cam, cam, bool(rng.random() < occluded_p)))

    train_pids = range(1, opts["num_train_ids"] + 1)
    for pid, n in zip(train_pids, _counts(rng, opts["train_per_id"], len(train_pids)), strict=True):
        for cam in _spread_cameras(rng, int(n), ncam):
            add("train", pid, cam, opts["train_occluded"])
    first = opts["num_train_ids"] + 1
    for pid in range(first, first + opts["num_test_ids"]):
        nq = int(_counts(rng, opts["query_per_id"], 1)[0])
        ng = int(_counts(rng, opts["gallery_per_id"], 1)[0])
        q_cams = [int(c) for c in rng.integers(1, ncam + 1, size=nq)]
        g_cams = _spread_cameras(rng, ng, ncam)
        for qc in q_cams:
            if all(gc == qc for gc in g_cams):
                g_cams[0] = qc % ncam + 1
        for cam in q_cams:
            add("query", pid, cam, opts["query_occluded"])
        for cam in g_cams:
            add("gallery", pid, cam, opts["gallery_occluded"])
    return shots


def reid_stream(seed: int, opts: dict, first_index: int) -> list[Shot]:
    """Per test identity, `reid_images_per_id` queries (camera 1) and gallery images (camera 2); the scenes
    come from any camera. Frame numbers continue after the duke stream's, so names never collide."""
    rng = np.random.default_rng([seed, STREAMS["reid"], 0])
    shots: list[Shot] = []
    first, n = opts["num_train_ids"] + 1, opts["reid_images_per_id"]
    for pid in range(first, first + opts["num_test_ids"]):
        for split, camid in (("query", REID_QUERY_CAM), ("gallery", REID_GALLERY_CAM)):
            for scene in rng.integers(1, opts["num_cameras"] + 1, size=n):
                shots.append(
                    Shot(
                        "reid",
                        split,
                        first_index + len(shots),
                        pid,
                        camid,
                        int(scene),
                        occluded=split == "query",
                    )
                )
    return shots


def plan(protocol: str, seed: int, opts: dict) -> list[Entry]:
    """Every image of `protocol` in file order, deterministic in (seed, options)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown SynthOcc protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    duke = duke_stream(seed, opts)
    if protocol == "occluded_duke":
        return [Entry(s, "occluded" if s.occluded else "clean") for s in duke]
    if protocol == "holistic":
        return [Entry(s, "clean") for s in duke]
    train = [Entry(s, "clean") for s in duke if s.split == "train"]
    query_variant = "occluded" if protocol == "occluded_reid" else "partial"
    reid = reid_stream(seed, opts, len(duke) + 1)
    return train + [Entry(s, query_variant if s.split == "query" else "clean") for s in reid]
