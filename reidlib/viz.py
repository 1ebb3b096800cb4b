"""Figures drawn from trained models: heat maps, part scores, rankings, correlations; saved as PNG and PDF."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from reidlib.methods.base import IMAGENET_MEAN, IMAGENET_STD, Batch
from reidlib.paths import figures_dir
from reidlib.runs import atomic_write_bytes, plain_name, safe_path

MATCH_COLOUR, MISMATCH_COLOUR = "#2ca02c", "#d62728"
FIGURE_FORMATS = ("png", "pdf")


def save_figure(fig, paper: str, name: str, root: Path | None = None, dpi: int = 200) -> list[Path]:
    """Write figures/<paper>/<name>.png and .pdf (tight bounding box), each atomically, and return both
    paths; a paper or figure name that is not a plain name is refused before anything is written."""
    folder = figures_dir(paper, root)
    name = plain_name(name, "figure name")
    paths = [safe_path(folder, f"{name}.{fmt}") for fmt in FIGURE_FORMATS]
    for path in paths:
        rendered = io.BytesIO()
        fig.savefig(rendered, dpi=dpi, bbox_inches="tight", format=path.suffix[1:])
        atomic_write_bytes(path, rendered.getvalue())
    return paths


def image_figure(image, title: str = "", width: float = 10.0):
    """A PIL image or [H, W, 3] array as a figure (contact sheets)."""
    arr = np.asarray(image)
    fig, ax = plt.subplots(figsize=(width, width * arr.shape[0] / arr.shape[1]))
    ax.imshow(arr)
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


def to_display(images: torch.Tensor | Batch, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Normalised [N, 3, H, W] tensor -> [N, H, W, 3] floats in [0, 1] for imshow. A Batch brings its own
    normalisation (ViT / CLIP data are not normalised with ImageNet statistics)."""
    if isinstance(images, Batch):
        images, mean, std = images.images, images.norm_mean, images.norm_std
    m = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images.detach().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[N, h, w] or [N, K, h, w] maps -> the image size (bilinear), as numpy."""
    squeeze = maps.dim() == 3
    x = maps[:, None] if squeeze else maps
    x = F.interpolate(x.detach().float().cpu(), size=size, mode="bilinear", align_corners=False)
    return (x[:, 0] if squeeze else x).numpy()


def _normalise(heat: np.ndarray) -> np.ndarray:
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def overlay(ax, image: np.ndarray, heat: np.ndarray, cmap: str = "jet", alpha: float = 0.5,
            absolute: bool = False) -> None:
    """A map [H, W] over an image [H, W, 3] on one axis: min-max scaled, or on the absolute 0-1 scale
    (probabilities, masks, Grad-CAM) with `absolute`."""
    ax.imshow(image)
    if absolute:
        ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
    else:
        ax.imshow(_normalise(heat), cmap=cmap, alpha=alpha)


def frame(ax, colour, width: float = 3.0) -> None:
    """A coloured frame around an axis (match / mismatch, a score's colour), ticks hidden."""
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
    ax.set_xticks([])
    ax.set_yticks([])


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (an ipywidgets.Image's value); the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def heatmap_grid(images: torch.Tensor | Batch, maps: dict[str, torch.Tensor], alpha: float = 0.5,
                 cmap: str = "jet", mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Rows = images; columns = the image, then each named map [N, h, w] overlaid (min-max per image)."""
    pics = to_display(images, mean, std)
    n, h, w = pics.shape[:3]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols, 2.4 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(pics[i])
        for j, (title, m) in enumerate(maps.items(), start=1):
            overlay(axes[i, j], pics[i], upsample(m[i : i + 1], (h, w))[0], cmap, alpha)
            if i == 0:
                axes[i, j].set_title(title, fontsize=8)
    if n:
        axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def part_scores_grid(images: torch.Tensor | Batch, scores: torch.Tensor,
                     captions: Sequence[str] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     cmap: str = "RdYlGn"):
    """Horizontal-stripe part scores [N, K] written on their stripes (QPM Fig. 4 style)."""
    pics = to_display(images, mean, std)
    n, h, w = pics.shape[:3]
    k = scores.shape[1]
    colours = plt.get_cmap(cmap)
    fig, axes = plt.subplots(1, n, figsize=(1.5 * n, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(pics[i])
        edges = np.linspace(0, h, k + 1)
        for p in range(k):
            s = float(scores[i, p])
            ax.add_patch(plt.Rectangle((0, edges[p]), w - 1, edges[p + 1] - edges[p], fill=False,
                                       edgecolor=colours(s), linewidth=1.5))
            ax.text(w / 2, (edges[p] + edges[p + 1]) / 2, f"{s:.2f}", ha="center", va="center", fontsize=7,
                    color="white", bbox={"facecolor": colours(s), "alpha": 0.8, "pad": 1, "linewidth": 0})
        if captions is not None:
            ax.set_title(captions[i], fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


def part_maps_grid(images: torch.Tensor | Batch, maps: torch.Tensor, names: Sequence[str],
                   scores: torch.Tensor | None = None, captions: Sequence[str] | None = None,
                   score_name: str = "visibility", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   cmap: str = "magma", score_cmap: str = "RdYlGn"):
    """Rows = images; columns = the image, then each part's map [N, K, h, w] over it on an absolute 0-1
    scale (attention probabilities, not rescaled per image), framed and labelled by its score [N, K]
    (e.g. visibility: green = visible, red = not) when given."""
    pics = to_display(images, mean, std)
    n, h, w = pics.shape[:3]
    k = maps.shape[1]
    heat = upsample(maps, (h, w))                                               # [N, K, H, W]
    colours = plt.get_cmap(score_cmap)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.1 * (k + 1), 2.3 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(pics[i])
        axes[i, 0].set_title(captions[i] if captions else "image", fontsize=7)
        for p in range(k):
            ax = axes[i, p + 1]
            overlay(ax, pics[i], heat[i, p], cmap, alpha=0.6, absolute=True)
            title = names[p] if i == 0 else ""
            if scores is not None:
                s = float(scores[i, p])
                frame(ax, colours(s), 2.5)
                ax.set_xlabel(f"{score_name} {s:.2f}", fontsize=6, labelpad=1)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].axis("off")
    fig.tight_layout()
    return fig


def metric_lines(panels: dict[str, pd.DataFrame], metrics: Sequence[str] = ("Rank-1", "mAP")):
    """One panel per table {title: [methods x metrics] in %}: each metric as a line over the methods in
    table order (the papers' comparison charts, e.g. BPSEMA-ReID Figs. 5-8), with the values written on.
    Panels side by side keep reported and reproduced numbers apart (they are on different data)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, df) in zip(axes[0], panels.items(), strict=True):
        x = np.arange(len(df))
        for metric in metrics:
            values = df[metric].to_numpy(dtype=float)
            ax.plot(x, values, marker="o", label=metric)
            for xi, v in zip(x, values, strict=True):
                if np.isfinite(v):
                    ax.annotate(f"{v:.1f}", (xi, v), textcoords="offset points", xytext=(0, 4), ha="center",
                                fontsize=6)
        ax.set_xticks(x, [str(i) for i in df.index], rotation=45, ha="right", fontsize=7)
        ax.set(title=title, ylabel="%")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_ranking_row(axes: Sequence, query: np.ndarray, gallery: Sequence[np.ndarray],
                     matches: Sequence[bool], label: str = "query", numbered: bool = True) -> None:
    """One ranking list on a row of 1 + top axes: the query [H, W, 3], then its gallery images framed green
    (match) / red (not), numbered #1.. when `numbered`."""
    axes[0].imshow(query)
    axes[0].set_title(label, fontsize=7)
    axes[0].axis("off")
    for r, (ax, image, match) in enumerate(zip(axes[1:], gallery, matches, strict=True)):
        ax.imshow(image)
        frame(ax, MATCH_COLOUR if match else MISMATCH_COLOUR)
        if numbered:
            ax.set_title(f"#{r + 1}", fontsize=7)


def ranking_grid(query: np.ndarray | torch.Tensor, gallery: Sequence, matches: Sequence[Sequence[bool]],
                 row_labels: Sequence[str] | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Ranking lists: each row a query then its top-k gallery images, framed green (match) / red (not)."""
    q = to_display(query, mean, std) if isinstance(query, torch.Tensor) else query
    n, top = len(q), len(matches[0])
    fig, axes = plt.subplots(n, top + 1, figsize=(1.0 * (top + 1), 2.1 * n), squeeze=False)
    for i in range(n):
        g = to_display(gallery[i], mean, std) if isinstance(gallery[i], torch.Tensor) else gallery[i]
        draw_ranking_row(axes[i], q[i], g, matches[i], row_labels[i] if row_labels else "query", i == 0)
    fig.tight_layout()
    return fig


def correlation_heatmap(matrices: dict[str, np.ndarray | torch.Tensor], labels: Sequence[str],
                        vmin: float = 0.0, vmax: float = 1.0):
    """Labelled correlation matrices side by side, one panel per {title: [H, H]} (e.g. the attention
    heads' cross-correlation without and with DPM's HEM, its Fig. 3(a) and Fig. 4), on one colour scale."""
    import seaborn as sns

    side = 0.45 * len(labels) + 1.5
    fig, axes = plt.subplots(1, len(matrices), figsize=(side * len(matrices) + 1, side), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], matrices.items(), strict=True):
        m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
        sns.heatmap(m, vmin=vmin, vmax=vmax, cmap="coolwarm", xticklabels=labels, yticklabels=labels,
                    annot=len(labels) <= 12, fmt=".2f", square=True, ax=ax, cbar_kws={"shrink": 0.7})
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def curves(df: pd.DataFrame, xlabel: str, ylabel: str, title: str = ""):
    """Each column of df as a line over its index (e.g. a quantity per ViT block for several models)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    for name in df.columns:
        ax.plot(df.index, df[name].to_numpy(dtype=float), marker="o", ms=3, label=str(name))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def leaderboard_bars(board: pd.DataFrame, metric: str = "mAP", spread: str | None = None):
    """Methods as horizontal bars of `metric` (best on top); where `spread` (a max - min over seeds) is
    known, a whisker of that length centred on the bar's end shows how far a second seed could move it."""
    ordered = board.sort_values(metric)
    fig, ax = plt.subplots(figsize=(5.2, 0.35 * len(ordered) + 1.0))
    errors = None
    if spread is not None and spread in ordered:
        errors = ordered[spread].astype(float).fillna(0.0).to_numpy() / 2
    ax.barh(ordered.index.astype(str), ordered[metric].astype(float), xerr=errors, capsize=3,
            color="tab:blue", alpha=0.8)
    ax.set(xlabel=f"{metric} (%)" + (" (whisker: seed spread)" if errors is not None else ""))
    fig.tight_layout()
    return fig


def method_maps_grid(images: torch.Tensor | Batch, maps: dict[str, dict[str, torch.Tensor]],
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, cmap: str = "jet"):
    """Rows = methods; for each image, one column per kind of map ({method: {kind: [N, h, w]}}, e.g. its
    Grad-CAM and its own attention), each map min-max scaled over the image (maps of any resolution)."""
    pics = to_display(images, mean, std)
    n, h, w = pics.shape[:3]
    kinds = max((list(m) for m in maps.values()), key=len)
    cols = n * len(kinds)
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.0 * cols, 1.9 * len(maps)), squeeze=False)
    for r, (method, by_kind) in enumerate(maps.items()):
        for i in range(n):
            for k, kind in enumerate(kinds):
                ax = axes[r, i * len(kinds) + k]
                if kind in by_kind:
                    overlay(ax, pics[i], upsample(by_kind[kind][i : i + 1], (h, w))[0], cmap)
                if r == 0:
                    ax.set_title(kind, fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[r, 0].set_ylabel(method, fontsize=8)
    fig.tight_layout()
    return fig
