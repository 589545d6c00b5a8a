"""Tables and figures into ``figures/``: seaborn plots (PNG + PDF), tables (CSV + Markdown).

Nothing here computes influence; it only shapes results of ``untrac.experiments`` for reading.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def themed(plot: Callable[..., Any]) -> Callable[..., Any]:
    """Draw ``plot`` in the package's seaborn theme, without touching the global one."""

    @functools.wraps(plot)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"), sns.color_palette("deep"):
            return plot(*args, **kwargs)

    return inner


@dataclass(frozen=True)
class Output:
    """Where a notebook writes: ``<directory>/<prefix>_<name>.{png,pdf,csv,md}``."""

    directory: Path
    prefix: str

    def path(self, name: str, suffix: str) -> Path:
        directory = Path(self.directory)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{self.prefix}_{name}.{suffix}"

    def table(self, frame: pd.DataFrame, name: str, floatfmt: str = ".3f") -> pd.DataFrame:
        """Write ``frame`` as CSV and Markdown; return it for display."""
        frame.to_csv(self.path(name, "csv"), index=False)
        self.path(name, "md").write_text(_markdown(frame, floatfmt) + "\n")
        return frame

    def figure(self, fig: plt.Figure, name: str) -> plt.Figure:
        """Write ``fig`` as PNG (150 dpi) and PDF; return it for display."""
        fig.savefig(self.path(name, "png"), dpi=150, bbox_inches="tight")
        fig.savefig(self.path(name, "pdf"), bbox_inches="tight", metadata={"CreationDate": None})  # byte-reproducible
        return fig


def _markdown(frame: pd.DataFrame, floatfmt: str) -> str:
    cols = list(frame.columns)
    def fmt(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, (float, np.floating)) and np.isfinite(v) else ("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def mean_std(frame: pd.DataFrame, index: str | Sequence[str], columns: str, value: str, digits: int = 3) -> pd.DataFrame:
    """A pivot of ``value`` as 'mean ± std' strings over runs (the paper's table style)."""
    g = frame.groupby([*([index] if isinstance(index, str) else index), columns], sort=False)[value]
    cell = g.agg(lambda x: f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else f"{x.mean():.{digits}f}")
    return _pivot(cell, frame, columns)


def _pivot(cells: pd.Series, frame: pd.DataFrame, columns: str) -> pd.DataFrame:
    """``cells`` (indexed by row keys + ``columns``) as a table whose columns keep ``frame``'s order
    of first appearance (the grid's order, not sorted); float labels print as ``%g``."""
    table = cells.unstack(columns)
    table = table[[c for c in frame[columns].unique() if c in table.columns]]
    table.columns = [f"{c:g}" if isinstance(c, float) else c for c in table.columns]
    return table.reset_index()


@themed
def plot_trajectories(frame: pd.DataFrame, value: str = "influence", hue: str = "train") -> plt.Figure:
    """Lines of ``value`` over unlearning steps, mean and 95% band over runs, method x family grid."""
    grid = sns.relplot(data=frame, x="step", y=value, hue=hue, row="method", col="family", kind="line",
                       errorbar=("ci", 95), seed=0, height=2.8, aspect=1.4, facet_kws={"sharey": False, "sharex": False})
    grid.set_titles("{row_name} — {col_name}")
    grid.set_axis_labels("unlearning step", value)
    return grid.figure


@themed
def plot_standardised(frame: pd.DataFrame) -> plt.Figure:
    """Bars of z-scored influence of each training set, one panel per family, methods side by side."""
    grid = sns.catplot(data=frame, x="method", y="z", hue="train", col="family", kind="bar", errorbar="sd",
                       height=3.4, aspect=2.0)
    grid.set_xticklabels(rotation=30, ha="right")
    grid.set_axis_labels("", "standardised influence (z)")
    return grid.figure


@themed
def plot_correlations(frame: pd.DataFrame, value: str = "pearson", col: str | None = None) -> plt.Figure:
    """Correlation with the ground truth per method (mean and sd over runs)."""
    grid = sns.catplot(data=frame, x="method", y=value, col=col, kind="bar", errorbar="sd", height=3.2, aspect=1.8)
    grid.set_xticklabels(rotation=30, ha="right")
    grid.set_axis_labels("", f"{value} with ground truth")
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
    return grid.figure


def example_rows(sets: Mapping[str, Mapping[str, object]], per_subset: int = 1) -> pd.DataFrame:
    """Table 1: the first ``per_subset`` examples of every subset of every family (prompt -> target)."""
    rows = []
    for family, parts in sets.items():
        for subset, ds in parts.items():
            for i in range(min(per_subset, len(ds))):
                rows.append({"family": family, "subset": subset, "input": ds[i]["prompt"], "output": ds[i]["target"].strip()})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Section 5.2 (notebook 02): pretraining corpora
# ----------------------------------------------------------------------------------------------

TABLE35_COLUMNS = ["toxigen/equal", "winobias/equal", "truthfulqa/equal",
                   "toxigen/different", "winobias/different", "truthfulqa/different"]


def corpora_table(corr: pd.DataFrame, value: str = "pearson", digits: int = 3) -> pd.DataFrame:
    """Table 3/5 layout: one row per method, columns ``<testset>/<setting>``, cells 'mean ± std' over runs."""
    frame = corr.assign(column=corr["testset"] + "/" + corr["setting"])
    table = mean_std(frame, "method", "column", value, digits)
    cols = [c for c in TABLE35_COLUMNS if c in table.columns] + [c for c in table.columns if c not in TABLE35_COLUMNS and c != "method"]
    return table[["method", *cols]]


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Interleave our cells with the paper's: for every column ``c``, ``c`` then ``c (paper)``."""
    merged = ours.merge(paper, on="method", how="outer", suffixes=("", " (paper)"), sort=False)
    cols = ["method"]
    for c in ours.columns[1:]:
        cols += [c] + ([f"{c} (paper)"] if f"{c} (paper)" in merged.columns else [])
    order = {m: i for i, m in enumerate(dict.fromkeys([*ours["method"], *paper["method"]]))}
    return merged[cols].sort_values("method", key=lambda s: s.map(order)).reset_index(drop=True)


@themed
def plot_noise_floor(frame: pd.DataFrame) -> plt.Figure:
    """Bars: spread of the ground truth across corpora vs the change a new training seed makes."""
    long = frame.melt(id_vars=["testset"], value_vars=["corpus_spread", "seed_change"], var_name="quantity", value_name="nats")
    long["quantity"] = long["quantity"].map({"corpus_spread": "std over corpora of LDO influence",
                                             "seed_change": "|Δ test loss| from another training seed"})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=long, x="testset", y="nats", hue="quantity", ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("nats (mean over subsets)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


@themed
def plot_ground_truth_variants(frame: pd.DataFrame) -> plt.Figure:
    """Figure 4: leave-dataset-out influence per corpus (mean and sd over test subsets), both variants."""
    frame = frame.assign(label=frame["corpus"] + "\n(" + (100 * frame["share"]).round(0).astype(int).astype(str) + "%)")
    grid = sns.catplot(data=frame, x="label", y="influence", col="variant", kind="bar", errorbar="sd",
                       height=3.4, aspect=1.6, sharey=False, color="tab:blue")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", "ground-truth influence (nats)")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=90, labelsize="small")
        ax.axhline(0, color="black", lw=0.8)
    return grid.figure


@themed
def plot_corpus_influence(frame: pd.DataFrame, value: str = "z") -> plt.Figure:
    """Heatmaps of per-corpus influence (mean over runs): methods x corpora, one panel per test set and setting."""
    settings = list(dict.fromkeys(frame["setting"]))
    testsets = list(dict.fromkeys(frame["testset"]))
    methods = list(dict.fromkeys(frame["method"]))
    corpora = list(dict.fromkeys(frame["corpus"]))
    fig, axes = plt.subplots(len(testsets), len(settings), figsize=(6.2 * len(settings), 2.9 * len(testsets)), squeeze=False)
    for i, testset in enumerate(testsets):
        for j, setting in enumerate(settings):
            sub = frame[(frame["testset"] == testset) & (frame["setting"] == setting)]
            mat = sub.groupby(["method", "corpus"], sort=False)[value].mean().unstack("corpus").reindex(index=methods, columns=corpora)
            sns.heatmap(mat, ax=axes[i, j], cmap="RdBu_r", center=0, annot=True, fmt=".1f", annot_kws={"size": 7},
                        cbar=False, vmin=-2, vmax=2)
            axes[i, j].set_title(f"{testset} — {setting} sizes")
            axes[i, j].set_xlabel("")
            axes[i, j].set_ylabel("")
            axes[i, j].tick_params(axis="x", labelrotation=45, labelsize="small")
            for t in axes[i, j].get_xticklabels():
                t.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


@themed
def plot_cost_accuracy(frame: pd.DataFrame, value: str = "pearson") -> plt.Figure:
    """Mean correlation with the ground truth against seconds per run, one point per method and setting."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.scatterplot(data=frame, x="seconds", y=value, hue="method", style="setting", s=80, ax=ax)
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("seconds per run (log)")
    ax.set_ylabel(f"mean {value} with ground truth")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


@themed
def plot_corpora_correlations(corr: pd.DataFrame, value: str = "pearson") -> plt.Figure:
    """Correlation with the ground truth per method (mean and sd over runs), by test set and setting."""
    grid = sns.catplot(data=corr, x="method", y=value, hue="setting", col="testset", kind="bar", errorbar="sd",
                       height=3.2, aspect=1.3)
    grid.set_xticklabels(rotation=40, ha="right")
    grid.set_axis_labels("", f"{value} with ground truth")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
    return grid.figure


@themed
def plot_epoch_curves(frame: pd.DataFrame, value: str = "pearson") -> plt.Figure:
    """Figure 3: correlation with the ground truth over unlearning epochs, per method and batch size."""
    grid = sns.relplot(data=frame, x="epoch", y=value, hue="batch", col="method", kind="line", marker="o",
                       errorbar=("ci", 95), seed=0, height=3.2, aspect=1.3, facet_kws={"sharex": False})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("unlearning epochs", f"{value} with ground truth")
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
    return grid.figure


@themed
def plot_correlation_vs_change(grids: Mapping[str, pd.DataFrame], truth_spread: float, value: str = "pearson") -> plt.Figure:
    """Every cell of the Sec. 6 grids on one axis: correlation with the truth against how far
    unlearning moved the losses (|mean change|, log scale), one point per run, beside the truth's
    spread across training sets (dashed). Frames need ``method``, ``mean_change`` and ``value``."""
    frame = pd.concat([g.assign(grid=name) for name, g in grids.items()], ignore_index=True)
    frame = frame.assign(change=frame["mean_change"].abs().clip(lower=1e-6))
    grid = sns.relplot(data=frame, x="change", y=value, hue="grid", style="grid", col="method", kind="scatter",
                       height=3.2, aspect=1.3, s=40, alpha=0.8)
    grid.set(xscale="log")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("|mean loss change| after unlearning (nats)", f"{value} with ground truth")
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(truth_spread, color="grey", ls="--", lw=1)
    return grid.figure


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
def plot_klom(frame: pd.DataFrame, floor: Mapping[str, float] | None = None, percentiles: Sequence[str] = ("p50", "p95"),
              band: bool = False) -> plt.Figure:
    """KLoM against compute (fraction of retraining): one panel per percentile x group, one line
    per algorithm (mean over forget sets and families; ``band``: their min-max); dashed: the noise floor."""
    long = frame.melt(id_vars=["family", "forget", "algorithm", "steps", "fraction", "group"], value_vars=list(percentiles),
                      var_name="percentile", value_name="KLoM")
    grid = sns.relplot(data=long, x="fraction", y="KLoM", hue="algorithm", style="algorithm", row="percentile", col="group",
                       kind="line", markers=True, dashes=False, errorbar=("pi", 100) if band else None, height=2.8, aspect=1.3,
                       facet_kws={"sharey": "row"})
    grid.set_titles("{col_name} — {row_name}")
    grid.set_axis_labels("compute (fraction of retraining)", "KLoM")
    if floor is not None:
        for (pct, _), ax in grid.axes_dict.items():
            if pct in floor:
                ax.axhline(floor[pct], color="grey", ls="--", lw=1)
    return grid.figure
