"""Data: real benchmark layouts, the SynthOcc generator, parsing masks, sampling and transforms.

`load_dataset(name, root)` is the stable entry point; adapters register themselves in `formats.py`.
"""

from reidlib.data.records import Record, ReidDataset

__all__ = ["Record", "ReidDataset", "load_dataset", "DATASETS"]


def __getattr__(name):  # lazy: importing reidlib.data must not import PIL-heavy adapters eagerly
    if name in ("load_dataset", "DATASETS"):
        from reidlib.data import formats

        return getattr(formats, name)
    raise AttributeError(name)
