"""The reliability diagram: accuracy against confidence per score bin, before and after temperature scaling."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def reliability_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """One panel per ``(title, count, accuracy, confidence)``: equal-width bins of the top-1 score.

    Bars are each bin's accuracy; the gap to the diagonal (drawn in red from the bin's mean
    confidence) is what ECE averages. Empty bins draw nothing.
    """
    fig = Figure(figsize=(4.5 * len(panels), 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for column, (title, count, accuracy, confidence) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), column)
        bins = len(count)
        centres = (np.arange(bins) + 0.5) / bins
        filled = count > 0
        ax.bar(centres[filled], accuracy[filled], width=1 / bins, edgecolor="black", color="tab:blue",
               label="accuracy")
        low = np.minimum(accuracy[filled], confidence[filled])
        ax.bar(centres[filled], np.abs(confidence[filled] - accuracy[filled]), bottom=low, width=1 / bins,
               color="none", edgecolor="tab:red", hatch="//", label="gap to the mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 score)", ylabel="accuracy", title=title)
        ax.legend(loc="upper left")
    return fig
