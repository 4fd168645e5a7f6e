"""Evaluation figures: ROC curves and a grid of best and worst cases (image, anomaly map, mask).

Pure drawing: callers hand in arrays, these functions write one PNG each (atomically) with the
Agg backend, so they work on headless machines. Nothing here computes a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nsgan.common.atomic import atomic_write


@dataclass
class Case:
    """One row of the cases grid: an image (H, W, C) in [0, 1], its map (H, W), mask (H, W) or None."""

    title: str
    image: np.ndarray
    map: np.ndarray
    mask: np.ndarray | None


def _figure(*args, **kwargs):
    import matplotlib  # deferred: ~1 s to import, and only the figures need it

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(*args, **kwargs)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt  # deferred, as in _figure

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def plot_roc(path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
             max_fpr_mark: float | None = None, title: str = "ROC") -> Path:
    """ROC curves, one per entry `label -> (fpr, tpr, auc)`; a dotted line at `max_fpr_mark` (AUPRO's limit)."""
    plt, fig = _figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="chance")
    if max_fpr_mark is not None:
        ax.axvline(max_fpr_mark, color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(path))


def _display(img: np.ndarray, max_side: int = 512) -> np.ndarray:
    """Block-subsample big arrays so a gigapixel case still draws quickly."""
    step = max(1, int(np.ceil(max(img.shape[:2]) / max_side)))
    return img[::step, ::step]


def plot_cases(path: str | Path, cases: list[Case], title: str = "") -> Path:
    """A grid with one row per case: image | anomaly map (shared colour scale) | ground-truth mask."""
    if not cases:
        raise ValueError("plot_cases needs at least one case")
    vmax = max(float(np.max(c.map)) for c in cases) or 1.0
    plt, fig = _figure(figsize=(7.5, 2.4 * len(cases)), layout="constrained")
    axes = fig.subplots(len(cases), 3, squeeze=False)
    for row, case in zip(axes, cases):
        img = _display(case.image)
        row[0].imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(case.title, fontsize=7, loc="left")
        im = row[1].imshow(_display(case.map), cmap="inferno", vmin=0, vmax=vmax)
        row[1].set_title("anomaly map", fontsize=7)
        if case.mask is not None:
            row[2].imshow(_display(case.mask), cmap="gray", vmin=0, vmax=1)
            row[2].set_title("ground truth", fontsize=7)
        else:
            row[2].text(0.5, 0.5, "no mask", ha="center", va="center", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 2].tolist(), shrink=0.5, label="anomaly map")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


def plot_experiment(path: str | Path, rows: list[dict], metrics=("image_auroc", "pixel_auroc", "aupro")) -> Path:
    """One panel per metric: the figure against ε, a line per (protocol, γ, penalty form); γ = 0 dashed."""
    plt, fig = _figure(figsize=(4.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    protocols = sorted({r["protocol"] for r in rows})
    colours = {p: f"C{i}" for i, p in enumerate(protocols)}
    for ax, metric in zip(axes, metrics):
        for (proto, gamma, form) in sorted({(r["protocol"], r["gamma"], r.get("penalty", "tile")) for r in rows}):
            pts = sorted((r["eps"], r[metric]) for r in rows
                         if r["protocol"] == proto and r["gamma"] == gamma and r.get("penalty", "tile") == form
                         and r.get(metric) is not None)
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "--" if gamma == 0 else {"tile": "-", "patch_mask": "-.", "patch_mil": ":"}.get(form, "-")
            ax.plot(xs, ys, marker="o", color=colours[proto], linestyle=style,
                    label=f"{proto} γ={gamma:g}" + ("" if form == "tile" else f" {form}"))
        ax.set(xlabel="ε (hidden defects in train/good)", title=metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, Path(path))
