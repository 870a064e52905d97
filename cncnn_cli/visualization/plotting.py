"""Every picture cncnn draws: attention maps (the paper's Figure 3), training curves, confusion matrices,
the gallery of mistakes.

Figures are built with matplotlib's object API (``Figure`` on an Agg canvas), never pyplot:
no global figure registry to leak memory across hundreds of images, no display needed,
and nothing here touches torch — callers pass numpy arrays.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from cncnn_cli.utils.atomic import atomic_write

HEATMAP = "inferno"  # perceptually uniform; bright = attended, as in the paper's "bright white parts"
OVERLAY_ALPHA = 0.6
#: Above this many classes, tick labels would overlap into a black bar.
MAX_LABELLED_CLASSES = 40
#: Up to this many classes, each cell shows its value.
MAX_ANNOTATED_CLASSES = 12
LEVEL_NAMES = {5: "high", 4: "mid", 3: "low"}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def heatmap(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``C×h×w`` feature map or ``h×w`` mask → ``H×W`` in [0, 1] at ``size=(H, W)``.

    Channels are reduced by their L2 norm (where the features are strong, whatever their
    sign), upsampled bilinearly and stretched to [0, 1] per map; a constant map is all zeros.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 3:
        values = np.sqrt((values ** 2).sum(0))
    upsampled = np.asarray(Image.fromarray(values, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
    low, high = float(upsampled.min()), float(upsampled.max())
    if high - low < 1e-12:
        return np.zeros(size, dtype=np.float32)
    return (upsampled - low) / (high - low)


def attention_figure(image_uint8_hwc: np.ndarray, attended_maps: Sequence[np.ndarray],
                     spatial_masks: Sequence[np.ndarray], title: str) -> Figure:
    """The input beside the LH pathway's outputs, high level to low (A5, A4, A3), and its masks.

    ``attended_maps`` and ``spatial_masks`` are ordered as the model returns them, low to
    high (level 3, 4, 5): ``C×h×w`` attended features and ``1×h×w`` (or ``h×w``) masks of
    one image. Each map is normalized on its own, so the colours compare places within a
    panel, not panels; the panel titles give each mask's raw range.
    """
    image = np.asarray(image_uint8_hwc)
    size = image.shape[:2]
    # Heatmaps go over a grey copy: a red crown under a colour map would read as attention.
    grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    fig = _new_figure(14.0, 7.0)
    grid = fig.add_gridspec(2, 4, width_ratios=(2, 1, 1, 1))
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(image)
    ax.set_title("input (as the model sees it)", fontsize=12)
    ax.set_axis_off()
    rows = (("A", attended_maps, "attended features $A_{l}$"), ("SA", spatial_masks, "spatial mask $SA_{l}$"))
    for row, (prefix, maps, row_label) in enumerate(rows):
        for col, level in enumerate((5, 4, 3)):
            values = np.asarray(maps[level - 3], dtype=np.float32)
            ax = fig.add_subplot(grid[row, col + 1])
            ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
            ax.imshow(heatmap(values, size), cmap=HEATMAP, vmin=0.0, vmax=1.0, alpha=OVERLAY_ALPHA)
            label = f"{prefix}{level} ({LEVEL_NAMES[level]})"
            if prefix == "SA":
                label += f"\nσ ∈ [{values.min():.2f}, {values.max():.2f}]"
            ax.set_title(label, fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(row_label, fontsize=11)
    colorbar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=HEATMAP), ax=fig.axes[1:], shrink=0.8,
                            pad=0.02)
    colorbar.set_label("activation, normalized per map", fontsize=10)
    fig.suptitle(title, fontsize=14, fontweight="bold")
    return fig


#: The curves panels: title, y scale, and the (history key, colour, legend label) lines drawn in it.
CURVE_PANELS = (
    ("training loss", "linear", (("loss", "tab:red", None),)),
    ("top-1 accuracy (%)", "linear", (("top1", "tab:blue", None),)),
    ("learning rate", "log", (("lr", "tab:green", "new layers"), ("backbone_lr", "tab:olive", "backbone"))),
)


def curves_figure(metrics: dict) -> Figure:
    """Loss, top-1 and learning rate per epoch from a ``metrics.json`` document; the best epoch marked.

    Epochs without ``top1`` (validation every N epochs) are skipped in that panel only;
    the learning rate is on a log scale (warm-up and cosine decay span decades), with the
    backbone's own rate beside the new layers' when the history records both.
    """
    history = sorted(metrics.get("history") or [], key=lambda entry: entry["epoch"])
    best = metrics.get("best") or {}
    fig = _new_figure(15.0, 4.8)
    axes = fig.subplots(1, len(CURVE_PANELS))
    for ax, (title, scale, lines) in zip(axes, CURVE_PANELS):
        drawn = 0
        for key, colour, label in lines:
            points = [(e["epoch"], e[key]) for e in history if _finite(e.get(key), positive=scale == "log")]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o" if len(points) <= 30 else None, markersize=4, linewidth=1.8,
                        color=colour, label=label)
                drawn += 1
        if drawn:
            ax.set_yscale(scale)
        else:
            ax.text(0.5, 0.5, f"no {title.removesuffix(' (%)')} recorded", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
            ax.set_yticks([])
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if history:
            first, last = history[0]["epoch"], history[-1]["epoch"]
            pad = max(0.5, 0.03 * (last - first))
            ax.set_xlim(first - pad, last + pad)
        ax.grid(True, alpha=0.3, which="both" if scale == "log" else "major")
        if "epoch" in best:
            ax.axvline(best["epoch"], color="tab:orange", linestyle="--", linewidth=1.2, label="best epoch")
        if drawn > 1:
            ax.legend(loc="lower left")
    if _finite(best.get("top1")) and "epoch" in best:
        axes[1].plot([best["epoch"]], [best["top1"]], marker="*", markersize=16, color="tab:orange",
                     linestyle="none", clip_on=False, label=f"best {best['top1']:.2f}%")
        axes[1].legend(loc="lower right")
    split = (metrics.get("last") or {}).get("split", "test")
    axes[1].set_title(f"top-1 accuracy on {split} (%)", fontsize=12)
    fig.suptitle(_curves_title(history, metrics.get("last") or {}, best, metrics.get("test_at_best_val") or {}),
                 fontsize=13, fontweight="bold")
    return fig


def _curves_title(history: list[dict], last: dict, best: dict, tested: dict) -> str:
    parts = [f"{len(history)} epoch{'s' if len(history) != 1 else ''}"]
    if _finite(last.get("top1")):
        parts.append(f"last (epoch {last.get('epoch', '?')}): top-1 {last['top1']:.2f}%")
    if _finite(best.get("top1")):
        chosen = f", selected on {best['selected_on']}" if best.get("selected_on") else ""
        parts.append(f"best (epoch {best.get('epoch', '?')}{chosen}): top-1 {best['top1']:.2f}%")
    if _finite(tested.get("top1")):
        parts.append(f"test at that checkpoint: top-1 {tested['top1']:.2f}%")
    return "training curves — " + " · ".join(parts)


def _finite(value: object, positive: bool = False) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 or not positive)


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "confusion matrix") -> Figure:
    """A row-normalized ``K×K`` confusion matrix (rows: true class, columns: predicted).

    Class names label the axes up to 40 classes; above, they would overlap into a black
    bar, so the axes give class indices (a 200-class matrix still shows its diagonal and
    the confused blocks). Cells carry their value up to 12 classes. The title adds the
    mean class accuracy (mean of the diagonal over classes present).
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not fit {len(class_names)} class names")
    k = counts.shape[0]
    totals = counts.sum(1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = float(np.clip(4.0 + 0.22 * k, 7.0, 16.0))
    fig = _new_figure(side + 1.5, side)
    ax = fig.add_subplot()
    # A square-root colour scale keeps the few-percent confusions between similar classes visible.
    shown = ax.imshow(normalized, cmap="Blues", norm=PowerNorm(0.5, 0.0, 1.0), interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class")
    if k <= MAX_LABELLED_CLASSES:
        fontsize = 10 if k <= 15 else 7
        ax.set_xticks(range(k), labels=class_names, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(k), labels=class_names, fontsize=fontsize)
        axis_note = ""
    else:
        axis_note = " (index)"  # matplotlib's own ticks then give class indices
    if k <= MAX_ANNOTATED_CLASSES:
        for (row, col), value in np.ndenumerate(normalized):
            if value > 0:
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if value > 0.3 else "black")
    ax.set_xlabel(f"predicted class{axis_note}", fontsize=12)
    ax.set_ylabel(f"true class{axis_note}", fontsize=12)
    mean_accuracy = 100.0 * float(np.diag(normalized)[totals[:, 0] > 0].mean()) if (totals > 0).any() else 0.0
    ax.set_title(f"{title} — {k} classes, mean class accuracy {mean_accuracy:.2f}%", fontsize=13)
    return fig


def errors_figure(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None], titles: Sequence[str],
                  title: str, columns: int = 4) -> Figure:
    """A grid of mistakes: each image as the model saw it, captioned with the true and the predicted
    class, and beside it the low-level spatial mask over a grey copy (the Figure-3 view) when the
    model has one. The colour image stays whole because colour often tells fine-grained classes apart.

    ``images`` are ``H×W×3`` uint8; ``masks`` are ``h×w`` (or ``1×h×w``) or None for models
    without attention maps, which get the images alone.
    """
    count = len(images)
    if not count:
        raise ValueError("errors_figure needs at least one image")
    panels = 1 if all(mask is None for mask in masks) else 2
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    width = max(2.6 * columns * panels, 8.0)
    fig = _new_figure(width, 3.1 * rows + 0.8)
    grid = fig.add_gridspec(rows, columns * panels)
    for index, (image, mask, caption) in enumerate(zip(images, masks, titles)):
        row, col = divmod(index, columns)
        image = np.asarray(image)
        ax = fig.add_subplot(grid[row, col * panels])
        ax.imshow(image)
        ax.set_title(caption, fontsize=9, loc="left")
        _frame(ax, "tab:red")
        if panels == 2 and mask is not None:
            ax = fig.add_subplot(grid[row, col * panels + 1])
            grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
            ax.imshow(heatmap(np.asarray(mask, dtype=np.float32).squeeze(), image.shape[:2]), cmap=HEATMAP,
                      vmin=0.0, vmax=1.0, alpha=OVERLAY_ALPHA)
            ax.set_title("spatial mask SA3", fontsize=9, loc="left", color="dimgray")
            _frame(ax, "lightgray")
    fig.suptitle("\n".join(textwrap.wrap(title, width=int(width * 9))), fontsize=12, fontweight="bold")
    return fig


def _frame(ax, colour: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
