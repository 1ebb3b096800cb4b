"""The records every loader produces and every method consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Record:
    """One image. `pid` is relabelled 0..n-1 in the training split; raw ids in query/gallery."""

    path: str
    pid: int
    camid: int
    mask_path: str | None = None  # human-parsing label map, when the data set has one


@dataclass
class ReidDataset:
    """A benchmark: training, query and gallery splits plus what the evaluation protocol needs."""

    name: str
    root: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    camera_note: str = ""  # how camera ids were assigned (matters for single-camera benchmarks)
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable images skipped, per split

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def split(self, name: str) -> list[Record]:
        if name not in ("train", "query", "gallery"):
            raise ValueError(f"unknown split {name!r}; use train, query or gallery")
        return getattr(self, name)

    def summary(self) -> list[dict]:
        """Per split: images, identities, cameras (what `reidlib datasets check` prints)."""
        return [
            {
                "split": s,
                "images": len(self.split(s)),
                "identities": len({r.pid for r in self.split(s)}),
                "cameras": len({r.camid for r in self.split(s)}),
            }
            for s in ("train", "query", "gallery")
        ]
