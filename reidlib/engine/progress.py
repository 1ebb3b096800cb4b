"""Progress output: tqdm bars when a person watches (terminal or JupyterLab), one line per epoch in
batch jobs (CI, papermill, logs).

`progress` argument / REIDLIB_PROGRESS environment variable: "bars", "lines", "off" or "auto".
"auto" picks lines when CI or REIDLIB_BATCH is set or no terminal/notebook front-end is attached.
Papermill kernels look like interactive notebooks, so `reidlib reproduce` sets REIDLIB_BATCH=1 for them.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

MODES = ("auto", "bars", "lines", "off")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def _in_notebook_kernel() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def resolve_mode(progress: str | bool | None = "auto") -> str:
    """bars | lines | off. Booleans: True = auto, False/None = off."""
    if progress is None or progress is False:
        return "off"
    mode = "auto" if progress is True else str(progress)
    if mode not in MODES:
        raise ValueError(f"progress={progress!r}; use one of {list(MODES)}")
    if mode == "auto":
        mode = os.environ.get("REIDLIB_PROGRESS", "auto")
        if mode not in MODES:
            raise ValueError(f"REIDLIB_PROGRESS={mode!r}; use one of {list(MODES)}")
    if mode != "auto":
        return mode
    if any(_truthy(os.environ.get(name)) for name in ("CI", "REIDLIB_BATCH")):
        return "lines"
    if _in_notebook_kernel() or sys.stderr.isatty():
        return "bars"
    return "lines"


def format_terms(terms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in terms.items())


def epoch_line(epoch: int, epochs: int, loss: float, terms: dict[str, float], lr: float,
               images_per_s: float) -> str:
    """`epoch 3/10 loss 1.234 (ce 0.9, tri 0.3) lr 3.5e-04 412 img/s`"""
    parts = f" ({format_terms(terms)})" if len(terms) > 1 else ""
    return f"epoch {epoch}/{epochs} loss {loss:.4g}{parts} lr {lr:.2e} {images_per_s:.0f} img/s"


def eval_line(epoch: int, metrics: dict[str, float]) -> str:
    """`eval after epoch 10: mAP 41.2%, rank1 60.3%, mINP 12.0%` (metrics are fractions)."""
    shown = ", ".join(f"{k} {100 * metrics[k]:.1f}%" for k in ("mAP", "rank1", "mINP") if k in metrics)
    return f"eval after epoch {epoch}: {shown}"


class Progress:
    """Reports one run's training. Rank != 0 processes get mode "off"."""

    def __init__(self, mode: str, epochs: int, stream: TextIO | None = None, desc: str = "train"):
        self.mode, self.epochs, self.desc = mode, epochs, desc
        self.stream = stream
        self._bar = None

    def _print(self, text: str) -> None:
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, file=self.stream or sys.stdout, flush=True)

    def message(self, text: str) -> None:
        self._print(text)

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.mode == "bars":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=steps, desc=f"{self.desc} epoch {epoch}/{self.epochs}", leave=False)

    def step(self, loss: float, lr: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}", refresh=False)

    def end_epoch(self, record: dict) -> None:
        self._close_bar()
        self._print(epoch_line(record["epoch"], self.epochs, record["loss"], record["terms"], record["lr"],
                               record["images_per_s"]))

    def evaluation(self, epoch: int, metrics: dict[str, float]) -> None:
        self._print(eval_line(epoch, metrics))

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()


__all__ = ["MODES", "resolve_mode", "epoch_line", "eval_line", "Progress"]
