"""Evaluation pictures: precision-recall curves per class and a confusion matrix (matplotlib)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from d2seg.io.files import save_figure_atomic  # noqa: E402

RECALL = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall thresholds


def _save(fig, path: str, tight: bool = True) -> str:
    """``tight``: crop to the drawn content (costs a full extra layout pass per axes; panel grids
    place their margins themselves instead)."""
    save_figure_atomic(fig, path, dpi=110, **({"bbox_inches": "tight"} if tight else {}))
    return path


def _class_curves(precision: np.ndarray, k: int):
    """(P at IoU 0.5, P averaged over the 10 IoU thresholds) for class k, or None if no data."""
    p50 = precision[0, :, k, 0, -1]
    if (p50 < 0).all():
        return None
    all_t = precision[:, :, k, 0, -1]
    mean = np.where((all_t > -1).all(axis=0), all_t.mean(axis=0), np.nan)
    return np.clip(p50, 0, None), mean


def pr_curves(precision: np.ndarray, class_names: list[str], path: str, title: str = "") -> str:
    """Per-class precision-recall at IoU 0.5 (solid) and averaged over IoU 0.5:0.95 (dashed).

    Up to 10 classes share one plot; more get one small panel each, so every curve stays legible.
    """
    curves = [(name, _class_curves(precision, k)) for k, name in enumerate(class_names)]
    curves = [(name, c) for name, c in curves if c is not None]
    caption = f"{title} precision-recall (solid: IoU 0.5, dashed: mean over IoU 0.5:0.95)"
    if len(curves) <= 10:
        fig, ax = plt.subplots(figsize=(7, 5))
        colors = plt.get_cmap("tab10")(np.arange(10))
        for (name, (p50, mean)), color in zip(curves, colors):
            ax.plot(RECALL, p50, color=color, label=f"{name} (AP50 {100 * p50.mean():.1f})")
            ax.plot(RECALL, mean, color=color, linestyle="--", linewidth=0.8)
        _axes(ax)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title(caption, fontsize=9)
        return _save(fig, path)
    cols = 8
    rows = -(-len(curves) // cols)
    height = 1.8 * rows + 0.6
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, height), sharex=True, sharey=True,
                             squeeze=False)
    # fixed ticks and margins: automatic tick location and tight layout cost seconds per figure
    # with dozens of panels, and every panel has the same [0, 1] axes anyway
    first = axes.flat[0]
    first.set_xlim(0, 1)
    first.set_ylim(0, 1.02)
    first.set_xticks([0, 0.5, 1], ["0", ".5", "1"])
    first.set_yticks([0, 0.5, 1], ["0", ".5", "1"])
    for ax, (name, (p50, mean)) in zip(axes.flat, curves):
        ax.plot(RECALL, p50, color="tab:blue")
        ax.plot(RECALL, mean, color="tab:blue", linestyle="--", linewidth=0.8)
        ax.set_title(f"{name} ({100 * p50.mean():.0f})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(caption + "; panel title: class (AP50)", fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.25 / height, top=1 - 0.55 / height,
                        wspace=0.15, hspace=0.45)
    return _save(fig, path, tight=False)


def _axes(ax) -> None:
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def confusion_matrix_png(matrix: np.ndarray, names: list[str], path: str, title: str = "",
                         caption: str = "IoU >= 0.5, score >= 0.5") -> str:
    """The confusion matrix with counts in each cell; rows true, columns predicted."""
    n = len(names)
    side = min(1.0 + 0.6 * n, 14.0)
    fig, ax = plt.subplots(figsize=(side, side))
    fontsize = 8 if n <= 20 else 5
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} confusion ({caption})")
    if n <= 10:  # few cells: a tight bounding box is cheap and fits a title wider than the matrix
        return _save(fig, path)
    # margins for the class names, computed instead of a tight bounding box (which draws the
    # n x n cell texts a second time)
    label = 0.6 + 0.075 * (fontsize / 8) * max((len(str(x)) for x in names), default=1)
    width, height = side + label, side + label
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=label / width, bottom=label / height, right=1 - 0.15 / width,
                        top=1 - 0.45 / height)
    return _save(fig, path, tight=False)
