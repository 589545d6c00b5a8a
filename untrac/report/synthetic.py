"""Section 5.1 (notebooks 00, 01): synthetic tasks: trajectories, standardised influence, correlations."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .. import paper as paper_values

from .style import ERR_KWS, _draw_paper, _extend_legend, _name, _offsets, _over, _runs, annotate, paper_handle, themed


@themed
def plot_trajectories(frame: pd.DataFrame, value: str = "influence", hue: str = "train", *, scale: str | None = None,
                      caption: str | None = None) -> plt.Figure:
    """Lines of ``value`` over unlearning steps, mean and 95% band over runs, method x family grid."""
    grid = sns.relplot(data=frame, x="step", y=value, hue=hue, row="method", col="family", kind="line",
                       errorbar=("ci", 95), seed=0, height=2.8, aspect=1.4, facet_kws={"sharey": False, "sharex": False})
    grid.set_titles("{row_name} — family {col_name}")
    grid.set_axis_labels("unlearning step", f"{value} (nats)" if value == "influence" else value)
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
    n = _runs(frame)
    lines = ("one run" if n == 1 else f"mean over {n} runs, band: 95% bootstrap CI over runs" if n else "mean, band: 95% CI")
    text = (f"Lines: {lines}. UnTrac: change of the test loss after unlearning each training set so far; "
            "UnTrac-Inv: change of each training set's loss after unlearning the test set so far. "
            "Positive: the training set helped the test set (removing it raises the test loss). "
            "Step 0 is the trained model (influence 0).")
    return annotate(grid.figure, text, scale, caption)


def _paper_table2(paper: bool | pd.DataFrame) -> pd.DataFrame | None:
    if paper is False or paper is None:
        return None
    table = paper_values.TABLE2 if paper is True else paper
    return table.melt(id_vars=["family", "method"], var_name="train", value_name="z")


@themed
def plot_standardised(frame: pd.DataFrame, *, paper: bool | pd.DataFrame = True, scale: str | None = None,
                      caption: str | None = None) -> plt.Figure:
    """Bars of z-scored influence of each training set, one panel per family, methods side by side;
    black diamonds: the paper's Table 2 where it has the row (``paper``: a frame like
    :data:`untrac.paper.TABLE2`, or ``False`` for none)."""
    methods = list(dict.fromkeys(frame["method"]))
    trains = list(dict.fromkeys(frame["train"]))
    families = list(dict.fromkeys(frame["family"]))
    grid = sns.catplot(data=frame, x="method", y="z", hue="train", col="family", kind="bar", errorbar="sd", err_kws=ERR_KWS,
                       order=methods, hue_order=trains, col_order=families, height=3.4, aspect=2.0)
    grid.set_titles("family {col_name}")
    grid.set_xticklabels(rotation=30, ha="right")
    grid.set_axis_labels("", "standardised influence (z)")
    theirs = _paper_table2(paper)
    drawn = False
    offsets = _offsets(len(trains))
    for family, ax in grid.axes_dict.items():
        ax.axhline(0, color="black", lw=0.8)
        if theirs is not None:
            sub = theirs[(theirs["family"] == family) & theirs["method"].isin(methods) & theirs["train"].isin(trains)]
            points = [(methods.index(m) + offsets[trains.index(t)], z, None) for m, t, z in zip(sub["method"], sub["train"], sub["z"])]
            drawn |= _draw_paper(ax, points, "paper (T5-XL)") is not None
    label = "paper, Table 2 (T5-XL)"
    if drawn:
        _extend_legend(grid, {label: paper_handle(label)})
    text = (f"Bars: {_over(_runs(frame))} of the influence of each training set on the test set, z-scored over the "
            "training sets within each run. Positive: removing the set raises the test loss more than average.")
    extra = "Black diamonds: the paper's Table 2 (T5-XL), for the rows it reports." if drawn else None
    return annotate(grid.figure, text, scale, "\n".join(filter(None, [extra, caption])) or None)


@themed
def plot_correlations(frame: pd.DataFrame, value: str = "pearson", col: str | None = None, *, scale: str | None = None,
                      caption: str | None = None) -> plt.Figure:
    """Correlation with the ground truth per method (mean and sd over runs)."""
    grid = sns.catplot(data=frame, x="method", y=value, col=col, kind="bar", errorbar="sd", height=3.2, aspect=1.8)
    grid.set_xticklabels(rotation=30, ha="right")
    grid.set_axis_labels("", f"{_name(value)} with ground truth")
    if col is not None:
        grid.set_titles(f"{col} {{col_name}}")
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(-1.05, lo), max(1.05, hi))
    text = (f"Bars: {_over(_runs(frame))} of the {_name(value)} correlation between each method's influences and the "
            "leave-dataset-out ground truth, across the training sets. 1: the same ranking and spacing as the truth; "
            "0: unrelated; negative: reversed.")
    return annotate(grid.figure, text, scale, caption)


@themed
def plot_correlation_over_steps(frame: pd.DataFrame, value: str = "pearson", reference: Mapping[str, float] | None = None,
                                *, scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """Correlation with the ground truth at every evaluation step of an unlearning trajectory, one
    line per ``method`` (``frame``: ``step``, ``value`` and optionally ``method``, as from
    :func:`untrac.evaluate.trajectory_correlation`); ``reference``: horizontal lines (e.g. GradDot's
    value, the first-order limit of UnTrac, Eq. 9)."""
    frame = (frame if "method" in frame.columns else frame.assign(method="UnTrac")).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.lineplot(data=frame, x="step", y=value, hue="method", marker="o", errorbar=None, ax=ax)
    for i, (name, v) in enumerate((reference or {}).items()):
        ax.axhline(v, color="0.4", ls=(0, (2, 2 + i)), lw=1.2, label=f"{name} (no unlearning steps)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("unlearning step")
    ax.set_ylabel(f"{_name(value)} with ground truth")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    runs = _runs(frame)
    text = (f"Lines: the {_name(value)} correlation with the leave-dataset-out truth of the influences measured after each "
            f"number of unlearning steps ({'one run' if runs in (None, 1) else f'mean over {runs} runs'}); undefined "
            "at step 0, where every influence is 0."
            + (" Dotted: methods that take no steps, for reference." if reference else ""))
    return annotate(fig, text, scale, caption)


def example_rows(sets: Mapping[str, Mapping[str, object]], per_subset: int = 1) -> pd.DataFrame:
    """Table 1: the first ``per_subset`` examples of every subset of every family (prompt -> target)."""
    rows = []
    for family, parts in sets.items():
        for subset, ds in parts.items():
            for i in range(min(per_subset, len(ds))):
                rows.append({"family": family, "subset": subset, "input": ds[i]["prompt"], "output": ds[i]["target"].strip()})
    return pd.DataFrame(rows)
