"""Reading and checking image files, with errors that name the file and say what to do.

`read_image` is what the DataLoader dataset calls: a bad file raises `CorruptImageError` with its path
instead of an opaque PIL trace from inside a worker. `find_corrupt` is the up-front check behind
`load_dataset(..., verify_images=True)` and `reidlib datasets check --verify`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

# File suffixes the data set adapters treat as images (Occluded-REID ships .tif).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# What PIL raises on unreadable, truncated or malformed files (UnidentifiedImageError is an OSError;
# several plugins raise SyntaxError, struct.error or EOFError on broken headers).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)

_FIX = ("re-extract or re-download the file, or load the data set with verify_images=True and "
        "on_corrupt='skip' to drop unreadable images")
_MAX_LISTED = 10


class CorruptImageError(ValueError):
    """One or more image files cannot be decoded. `paths` holds every offending file.

    The constructor takes the message first so the exception survives the round trip a DataLoader
    worker makes (torch re-raises it in the main process as `type(exc)(message)`).
    """

    def __init__(self, message: str, paths: Sequence[str] = ()):
        super().__init__(message)
        self.paths = tuple(str(p) for p in paths)

    def __reduce__(self):  # keep `paths` when pickled across processes
        return type(self), (str(self), self.paths)

    @classmethod
    def from_failures(cls, failures: Mapping[str, str], what: str = "") -> CorruptImageError:
        """Build the error for {path: reason}, listing the first few files."""
        listed = [f"  {path}: {reason}" for path, reason in list(failures.items())[:_MAX_LISTED]]
        if len(failures) > _MAX_LISTED:
            listed.append(f"  ... and {len(failures) - _MAX_LISTED} more")
        where = f" in {what}" if what else ""
        message = f"{len(failures)} unreadable image(s){where}:\n" + "\n".join(listed) + f"\nFix: {_FIX}."
        return cls(message, list(failures))


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` fully and return it as an RGB image, or raise CorruptImageError naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except _READ_ERRORS as exc:
        message = f"cannot read image {path}: {_reason(exc)}. Fix: {_FIX}."
        raise CorruptImageError(message, [str(path)]) from exc


def check_image(path: str | os.PathLike) -> str | None:
    """None when `path` decodes, else a one-line reason.

    `verify()` catches broken headers and PNG checksums but does not decode JPEG data, so the file
    is reopened and decoded at reduced scale (`draft`; JPEG only), which still reads every byte and
    so detects truncation.
    """
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.draft("RGB", (1, 1))
            img.load()
    except _READ_ERRORS as exc:
        return _reason(exc)
    return None


def find_corrupt(paths: Iterable[str | os.PathLike], workers: int | None = None) -> dict[str, str]:
    """{path: reason} for every file in `paths` that does not decode, in input order.

    Decoding releases the GIL, so a small thread pool overlaps file reads and decoding.
    """
    paths = [str(p) for p in paths]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = pool.map(check_image, paths)
        return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason is not None}


def is_image_file(path: str | os.PathLike) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
