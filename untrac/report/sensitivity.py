"""Section 6 (notebook 03): sensitivity: epoch curves, correlation vs how far unlearning moved the losses, tables beside the paper's."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullFormatter

from .style import ERR_KWS, _draw_paper, _extend_legend, _label, _name, _over, _pivot, _runs, annotate, paper_handle, themed


@themed
def plot_epoch_curves(frame: pd.DataFrame, value: str = "pearson", *, scale: str | None = None,
                      caption: str | None = None) -> plt.Figure:
    """Figure 3: correlation with the ground truth over unlearning epochs, per method and batch size."""
    grid = sns.relplot(data=frame, x="epoch", y=value, hue="batch", col="method", kind="line", marker="o",
                       errorbar=("ci", 95), seed=0, height=3.2, aspect=1.3, facet_kws={"sharex": False})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("unlearning epochs", f"{_name(value)} with ground truth")
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
    n = _runs(frame)
    text = (f"Lines: {'one run' if n in (None, 1) else f'mean over {n} runs'} of the {_name(value)} correlation with the "
            "leave-dataset-out ground truth after each amount of unlearning"
            + ("" if n in (None, 1) else "; bands: 95% bootstrap CI over runs")
            + ". Colours: the unlearning batch size ('whole set': the whole training sample for UnTrac, the whole "
            "test subset for UnTrac-Inv). The paper's Figure 3 is a plot only: no values to overlay.")
    return annotate(grid.figure, text, scale, caption)


@themed
def plot_correlation_vs_change(grids: Mapping[str, pd.DataFrame], truth_spread: float, value: str = "pearson", *,
                               scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """Every cell of the Sec. 6 grids on one axis: correlation with the truth against how far
    unlearning moved the losses (|mean change|, log scale), one point per run, beside the truth's
    spread across training sets (dashed, in the legend). Frames need ``method``, ``mean_change`` and ``value``."""
    frame = pd.concat([g.assign(grid=name) for name, g in grids.items()], ignore_index=True)
    frame = frame.assign(change=frame["mean_change"].abs().clip(lower=1e-6))
    grid = sns.relplot(data=frame, x="change", y=value, hue="grid", style="grid", col="method", kind="scatter",
                       height=3.4, aspect=1.25, s=40, alpha=0.8, facet_kws={"sharex": True})
    grid.set(xscale="log")
    lo = min(frame["change"].min(), truth_spread) / 3
    hi = max(frame["change"].max(), truth_spread) * 3
    decades = max(1, int(np.ceil(np.log10(hi / lo))))
    for ax in grid.axes.flat:
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=min(decades, 4) + 1))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(truth_spread, color="0.35", ls="--", lw=1.2)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("|mean loss change| (nats, log)", f"{_name(value)} with ground truth")
    grid.figure.subplots_adjust(wspace=0.12)
    spread_label = f"ground truth's spread\nacross corpora ({truth_spread:.3g} nats)"
    _extend_legend(grid, {spread_label: Line2D([], [], color="0.35", ls="--", lw=1.2)}, title="grid")
    runs = sorted({_runs(g) for g in grids.values() if _runs(g)})
    text = (f"One point per run and grid cell ({', '.join(grids)}"
            + (f"; {runs[0]} runs each" if len(runs) == 1 else "") + "): the correlation with the ground truth against how "
            "far unlearning moved the losses on average. Dashed: the ground truth's spread (std over corpora); a mean "
            "change far to its right is over-unlearning, far to its left the first-order regime (UnTrac ≈ GradDot, Eq. 9).")
    return annotate(grid.figure, text, scale, caption)


def paper_beside(ours: pd.DataFrame, theirs: pd.DataFrame, index: str, columns: str, value: str = "pearson") -> pd.DataFrame:
    """'ours (paper)' cells: our mean ± std (ddof=1) over runs beside the paper's mean ± std.

    Columns keep the order of ``ours`` (the grid's order), float labels printed as ``%g``.
    """
    mine = ours.groupby([index, columns], sort=False)[value].agg(["mean", "std"])
    paper = theirs.set_index([index, columns])
    cells = {k: f"{m:.3f} ± {s:.3f} ({paper.loc[k, 'mean']:.3f} ± {paper.loc[k, 'std']:.3f})" if k in paper.index
             else f"{m:.3f} ± {s:.3f}" for k, (m, s) in mine.iterrows()}
    series = pd.Series(cells)
    series.index.names = [index, columns]
    return _pivot(series, ours, columns)


@themed
def plot_beside_paper(ours: pd.DataFrame, theirs: pd.DataFrame, index: str, columns: str, value: str = "pearson", *,
                      paper_label: str = "paper, Table 4 (OPT-125M)", xlabel: str | None = None, scale: str | None = None,
                      caption: str | None = None) -> plt.Figure:
    """Table 4 as a figure: one panel per ``index`` (method), bars of our ``value`` (mean ± std over
    runs) per ``columns`` value, the paper's mean ± std (``theirs``: ``index``, ``columns``, ``mean``,
    ``std``) as black diamonds with whiskers beside the bar of the same column."""
    ours = ours.assign(_x=ours[columns].map(_label))
    order = list(dict.fromkeys(ours["_x"]))
    panels = list(dict.fromkeys(ours[index]))
    grid = sns.catplot(data=ours, x="_x", y=value, col=index, kind="bar", errorbar="sd", err_kws=ERR_KWS, order=order, col_order=panels,
                       height=3.2, aspect=1.3, color="tab:blue", width=0.6)
    grid.set_titles("{col_name}")
    grid.set_axis_labels(xlabel or columns, f"{_name(value)} with ground truth")
    theirs = theirs.assign(_x=theirs[columns].map(_label))
    drawn = False
    for panel, ax in grid.axes_dict.items():
        ax.axhline(0, color="black", lw=0.8)
        sub = theirs[(theirs[index] == panel) & theirs["_x"].isin(order)]
        points = [(order.index(x), m, s) for x, m, s in zip(sub["_x"], sub["mean"], sub["std"])]
        drawn |= _draw_paper(ax, points, paper_label) is not None
    n = _runs(ours)
    handles = {f"ours ({_over(n)})": Patch(color="tab:blue")}
    if drawn:
        handles[paper_label] = paper_handle(paper_label)
    _extend_legend(grid, handles, title="")
    text = (f"Bars: {_over(n)} of the {_name(value)} correlation with the leave-dataset-out ground truth."
            + (f" Black diamonds and whiskers: {paper_label}, mean ± std over 4 runs." if drawn else ""))
    return annotate(grid.figure, text, scale, caption)
