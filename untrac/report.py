"""Tables and figures into ``figures/``: seaborn plots (PNG + PDF), tables (CSV + Markdown).

Nothing here computes influence; it only shapes results of ``untrac.experiments`` for reading.

Every figure stands alone:

* a **caption** under it says what the marks are — how many runs or seeds, what the bars, whiskers,
  lines and bands show, and the sign convention where it matters;
* a **scale stamp** in its top-right corner names the scale it was computed at (``scale: smoke``, in
  red, with "pipeline check, not results"), so a smoke run's figure can never pass for a mini run's.
  Pass ``scale=`` to a plot function, or give :class:`Output` a ``scale`` and it stamps every figure
  it writes;
* where the paper reports the plotted numbers (Table 2, Tables 3 and 5, Table 4: :mod:`untrac.paper`),
  they are drawn beside ours as **black diamonds** (with the paper's std as whiskers where it has one).

The texts carry ``gid`` s (:data:`CAPTION_GID`, :data:`SCALE_GID`, and :data:`PAPER_GID` on the
paper's markers), so :func:`figure_texts` and tests can find them.
"""
from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import ScaledTranslation

from . import paper as paper_values

CAPTION_GID = "untrac-caption"
SCALE_GID = "untrac-scale"
PAPER_GID = "untrac-paper"
PAPER_STYLE = {"marker": "D", "markersize": 6, "color": "black", "markerfacecolor": "black", "markeredgecolor": "white",
               "linestyle": "none", "zorder": 6}
BAR_WIDTH = 0.8  # seaborn's default width of a group of dodged bars


def themed(plot: Callable[..., Any]) -> Callable[..., Any]:
    """Draw ``plot`` in the package's seaborn theme, without touching the global one."""

    @functools.wraps(plot)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"), sns.color_palette("deep"):
            return plot(*args, **kwargs)

    return inner


# ----------------------------------------------------------------------------------------------
# Captions, scale stamps, the paper's markers
# ----------------------------------------------------------------------------------------------

def scale_label(scale: str) -> str:
    """The stamp's text: ``scale: mini``; a smoke run says that its numbers are not results."""
    return f"scale: {scale}" + (" (pipeline check, not results)" if scale == "smoke" else "")


def _renderer(fig: plt.Figure) -> Any:
    try:
        return fig.canvas.get_renderer()
    except AttributeError:  # a canvas without its own renderer (e.g. a vector backend)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        return FigureCanvasAgg(fig).get_renderer()


def _content(fig: plt.Figure) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of everything drawn so far, in figure fractions (may lie outside 0-1)."""
    box = fig.get_tightbbox(_renderer(fig))
    w, h = fig.get_size_inches()
    return box.x0 / w, box.y0 / h, box.x1 / w, box.y1 / h


def _with_gid(fig: plt.Figure, gid: str) -> list[Any]:
    return [t for t in fig.texts if t.get_gid() == gid]


def figure_texts(fig: plt.Figure) -> list[str]:
    """Every text of ``fig``: figure texts (caption, stamp), titles, labels, tick labels, legends."""
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    out += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return [t for t in out if t]


def add_caption(fig: plt.Figure, text: str, width: int | None = None) -> plt.Figure:
    """Write ``text`` under everything drawn on ``fig`` (wrapped to the figure's width)."""
    x0, y0, x1, _ = _content(fig)
    if width is None:
        width = max(60, int((x1 - x0) * fig.get_figwidth() * 15))
    wrapped = "\n".join(textwrap.fill(p, width) for p in text.split("\n"))
    shift = ScaledTranslation(0, -4 / 72, fig.dpi_scale_trans)
    fig.text(x0, y0, wrapped, ha="left", va="top", fontsize=9, color="0.2", transform=fig.transFigure + shift,
             gid=CAPTION_GID)
    return fig


def stamp(fig: plt.Figure, scale: str | None) -> plt.Figure:
    """Write the scale in the top-right corner, above everything drawn (once; ``None``: nothing)."""
    if scale is None or _with_gid(fig, SCALE_GID):
        return fig
    _, _, x1, y1 = _content(fig)
    shift = ScaledTranslation(0, 3 / 72, fig.dpi_scale_trans)
    fig.text(x1, y1, scale_label(scale), ha="right", va="bottom", fontsize=10, fontweight="bold",
             color="tab:red" if scale == "smoke" else "0.35", transform=fig.transFigure + shift, gid=SCALE_GID)
    return fig


def annotate(fig: plt.Figure, text: str, scale: str | None = None, extra: str | None = None) -> plt.Figure:
    """Caption (``text``, then ``extra``) under the figure and the scale stamp above it."""
    add_caption(fig, text if not extra else f"{text}\n{extra}")
    return stamp(fig, scale)


def _runs(frame: pd.DataFrame, column: str = "run") -> int | None:
    return int(frame[column].nunique()) if column in frame.columns else None


def _over(n: int | None, what: str = "runs") -> str:
    """'mean ± std over 4 runs' / 'one run, no error bars'."""
    if n is None:
        return "mean ± std"
    if n == 1:
        return f"one {what[:-1]} (no error bars)"
    return f"mean ± std over {n} {what}"


def _offsets(n_hue: int, width: float = BAR_WIDTH) -> list[float]:
    """Centres of ``n_hue`` dodged bars around a category's position (seaborn's layout)."""
    step = width / n_hue
    return [-width / 2 + step * (j + 0.5) for j in range(n_hue)]


def _draw_paper(ax: plt.Axes, points: Sequence[tuple[float, float, float | None]], label: str) -> Line2D | None:
    """Black diamonds at ``(x, mean)`` with the paper's std as whiskers where given."""
    if not points:
        return None
    xs, ys, es = (np.array([p[i] if p[i] is not None else np.nan for p in points], dtype=float) for i in range(3))
    if np.isfinite(es).any():
        ax.errorbar(xs, ys, yerr=np.nan_to_num(es), fmt="none", ecolor="black", elinewidth=1, capsize=3, zorder=5)
    (line,) = ax.plot(xs, ys, label=label, gid=PAPER_GID, **PAPER_STYLE)
    return line


def paper_handle(label: str) -> Line2D:
    return Line2D([], [], label=label, **PAPER_STYLE)


def _extend_legend(grid: sns.FacetGrid, extra: Mapping[str, Any], title: str | None = None) -> None:
    """Re-draw the grid's legend with ``extra`` handles after its own."""
    old = grid.legend
    data: dict[str, Any] = {}
    if old is not None:
        data = {t.get_text(): h for t, h in zip(old.texts, old.legend_handles)}
        if title is None:
            title = old.get_title().get_text()
        old.remove()
        grid._legend = None
    data.update(extra)
    grid.add_legend(legend_data=data, label_order=list(data), title=title)


def _name(value: str) -> str:
    """Axis wording of a column: ``pearson`` -> ``Pearson``."""
    return {"pearson": "Pearson", "spearman": "Spearman"}.get(value, value)


ERR_KWS = {"color": "0.45", "linewidth": 1.6}  # our whiskers grey, the paper's black with caps


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


@dataclass(frozen=True)
class Output:
    """Where a notebook writes: ``<directory>/<prefix>_<name>.{png,pdf,csv,md}``.

    With a ``scale``, every figure written is stamped with it (if its plot call did not already).
    """

    directory: Path
    prefix: str
    scale: str | None = None

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
        """Write ``fig`` as PNG (150 dpi) and PDF (stamped with the scale); return it for display."""
        stamp(fig, self.scale)
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


# ----------------------------------------------------------------------------------------------
# Section 5.1 (notebooks 00, 01): synthetic tasks
# ----------------------------------------------------------------------------------------------

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
def plot_noise_floor(frame: pd.DataFrame, *, scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """Bars: spread of the ground truth across corpora vs the change a new training seed makes."""
    long = frame.melt(id_vars=["testset"], value_vars=["corpus_spread", "seed_change"], var_name="quantity", value_name="nats")
    long["quantity"] = long["quantity"].map({"corpus_spread": "std over corpora of LDO influence",
                                             "seed_change": "|Δ test loss| from another training seed"})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=long, x="testset", y="nats", hue="quantity", ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("nats (mean over subsets)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    text = ("Per test set, both averaged over its subsets: how much the leave-dataset-out (LDO) ground truth varies "
            "across the corpora, against how much the test loss moves when the base model is retrained with another "
            "data-order seed. The truth can only be traced where the first bar clearly exceeds the second.")
    return annotate(fig, text, scale, caption)


@themed
def plot_ground_truth_variants(frame: pd.DataFrame, *, scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """Figure 4: leave-dataset-out influence per corpus (mean and sd over test subsets), both variants."""
    frame = frame.assign(label=frame["corpus"] + "\n(" + (100 * frame["share"]).round(0).astype(int).astype(str) + "%)")
    grid = sns.catplot(data=frame, x="label", y="influence", col="variant", kind="bar", errorbar="sd",
                       height=3.4, aspect=1.6, sharey=False, color="tab:blue")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", "ground-truth influence (nats)")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=90, labelsize="small")
        ax.axhline(0, color="black", lw=0.8)
    n = _runs(frame, "subset")
    text = (f"Bars: {_over(n, 'test subsets')} of the rise of the test loss when each corpus is left out of training "
            "(label: its share of the training blocks). Left: the counterfactual trains on everything else once "
            "(fewer steps without a large corpus); right: it trains for the same number of steps (Eq. 1).")
    return annotate(grid.figure, text, scale, caption)


@themed
def plot_corpus_influence(frame: pd.DataFrame, value: str = "z", *, scale: str | None = None,
                          caption: str | None = None) -> plt.Figure:
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
    n = _runs(frame)
    text = (f"Cells: influence of each corpus, z-scored over the corpora per test subset, averaged over the subsets and "
            f"{'one run' if n in (None, 1) else f'{n} runs'}. Red: removing the corpus raises the test loss (it helped); "
            "blue: lowers it. A method agrees with the ground truth (its own row) when its row has the same colours. "
            "Colours saturate at ±2.")
    return annotate(fig, text, scale, caption)


@themed
def plot_cost_accuracy(frame: pd.DataFrame, value: str = "pearson", *, scale: str | None = None,
                       caption: str | None = None) -> plt.Figure:
    """Mean correlation with the ground truth against seconds per run, one point per method and setting."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.scatterplot(data=frame, x="seconds", y=value, hue="method", style="setting", s=80, ax=ax)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("seconds per run (log)")
    ax.set_ylabel(f"mean {_name(value)} with ground truth")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    text = (f"One point per method and corpus-size setting: wall time of the attribution per run (trained models "
            f"excluded; machine-dependent) against the {_name(value)} correlation with the ground truth, averaged over test "
            "sets and runs.")
    return annotate(fig, text, scale, caption)


def _paper_corpora(value: str) -> pd.DataFrame:
    """Tables 3 (Pearson) / 5 (Spearman) long: method, testset, setting, mean, std."""
    mean, std = {"pearson": (paper_values.TABLE3, paper_values.TABLE3_STD),
                 "spearman": (paper_values.TABLE5, paper_values.TABLE5_STD)}[value]
    long = mean.melt(id_vars="method", var_name="column", value_name="mean").merge(
        std.melt(id_vars="method", var_name="column", value_name="std"), on=["method", "column"])
    long[["testset", "setting"]] = long["column"].str.split("/", n=1, expand=True)
    return long


@themed
def plot_corpora_correlations(corr: pd.DataFrame, value: str = "pearson", *, paper: bool = True, scale: str | None = None,
                              caption: str | None = None) -> plt.Figure:
    """Correlation with the ground truth per method (mean and sd over runs), by test set and setting;
    black diamonds with whiskers: the paper's Table 3 (Pearson) or Table 5 (Spearman), mean ± std."""
    methods = list(dict.fromkeys(corr["method"]))
    settings = list(dict.fromkeys(corr["setting"]))
    testsets = list(dict.fromkeys(corr["testset"]))
    grid = sns.catplot(data=corr, x="method", y=value, hue="setting", col="testset", kind="bar", errorbar="sd", err_kws=ERR_KWS,
                       order=methods, hue_order=settings, col_order=testsets, height=3.2, aspect=1.3)
    grid.set_xticklabels(rotation=40, ha="right")
    grid.set_axis_labels("", f"{_name(value)} with ground truth")
    grid.set_titles("{col_name}")
    table = {"pearson": "Table 3", "spearman": "Table 5"}.get(value)
    drawn = False
    offsets = _offsets(len(settings))
    for testset, ax in grid.axes_dict.items():
        ax.axhline(0, color="black", lw=0.8)
        if paper and table:
            theirs = _paper_corpora(value)
            sub = theirs[(theirs["testset"] == testset) & theirs["method"].isin(methods) & theirs["setting"].isin(settings)]
            points = [(methods.index(m) + offsets[settings.index(s)], v, e)
                      for m, s, v, e in zip(sub["method"], sub["setting"], sub["mean"], sub["std"])]
            drawn |= _draw_paper(ax, points, f"paper, {table}") is not None
    if drawn:
        _extend_legend(grid, {f"paper, {table} (OPT-125M)": paper_handle(f"paper, {table}")})
    text = (f"Bars: {_over(_runs(corr))} of the {_name(value)} correlation with the leave-dataset-out ground truth across the "
            "corpora, averaged over each test set's subsets; colours: equal or different corpus sizes.")
    extra = (f"Black diamonds and whiskers: the paper's {table} (OPT-125M on the real corpora, mean ± std over 4 runs), "
             "beside the bar of the same setting." if drawn else None)
    return annotate(grid.figure, text, scale, "\n".join(filter(None, [extra, caption])) or None)


# ----------------------------------------------------------------------------------------------
# Section 6 (notebook 03): sensitivity
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Attribute-to-Delete (notebook 04): unlearning quality
# ----------------------------------------------------------------------------------------------

def _algorithm_family(label: str) -> str:
    return label.split(" (lr ", 1)[0]


def best_variants(frame: pd.DataFrame, percentiles: Sequence[str] = ("p50", "p95")) -> dict[str, str]:
    """For every algorithm swept over learning rates (labels ``"<algorithm> (lr <lr>)"``), the label
    of the variant with the lowest KLoM averaged over the ``percentiles``, groups, forget sets and
    budgets; algorithms with one variant map to themselves."""
    score = frame.groupby("algorithm", sort=False)[list(percentiles)].mean().mean(axis=1)
    best: dict[str, str] = {}
    for label, s in score.items():
        fam = _algorithm_family(label)
        if fam not in best or s < score[best[fam]]:
            best[fam] = label
    return best


@themed
def plot_klom(frame: pd.DataFrame, floor: Mapping[str, float] | None = None, percentiles: Sequence[str] = ("p50", "p95"),
              band: bool = False, *, best_lr: bool = True, models_per_side: int | None = None, scale: str | None = None,
              caption: str | None = None) -> plt.Figure:
    """KLoM against compute (fraction of retraining): one panel per percentile x group, one line
    per algorithm (mean over forget sets and families; ``band``: their min-max); dashed: the noise floor.

    ``best_lr``: an algorithm swept over learning rates is drawn once, at its best learning rate
    (:func:`best_variants`, named in the legend); every variant is in the tables. A panel where every
    algorithm scores the same is marked as such (it cannot tell them apart)."""
    labels = pd.Series(list(dict.fromkeys(frame["algorithm"])))
    swept = labels.map(_algorithm_family).value_counts()
    chosen = best_variants(frame, percentiles) if best_lr else {a: a for a in dict.fromkeys(frame["algorithm"])}
    keep = frame[frame["algorithm"].isin(chosen.values())]
    names = {label: (f"{fam} (best: lr {label.split(' (lr ', 1)[1].rstrip(')')} of {swept[fam]})" if label != fam else fam)
             for fam, label in chosen.items()}
    keep = keep.assign(algorithm=keep["algorithm"].map(names))
    long = keep.melt(id_vars=["family", "forget", "algorithm", "steps", "fraction", "group"], value_vars=list(percentiles),
                     var_name="percentile", value_name="KLoM")
    grid = sns.relplot(data=long, x="fraction", y="KLoM", hue="algorithm", style="algorithm", row="percentile", col="group",
                       kind="line", markers=True, dashes=False, errorbar=("pi", 100) if band else None, height=2.8, aspect=1.3,
                       facet_kws={"sharey": "row"})
    grid.set_titles("{col_name} examples — {row_name}")
    grid.set_axis_labels("compute (% of retraining)", "KLoM")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:g}%"))
    flat = []
    for (pct, group), ax in grid.axes_dict.items():
        ys = long[(long["percentile"] == pct) & (long["group"] == group)]["KLoM"].to_numpy()
        if ys.size and np.ptp(ys) < 1e-9:
            flat.append(f"{group} {pct}")
            ax.text(0.5, 0.45, f"every algorithm scores {ys[0]:.1f}:\nthis panel cannot tell them apart",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.25",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"})
        if floor is not None and pct in floor:
            ax.axhline(floor[pct], color="grey", ls="--", lw=1)
    extra = {}
    if floor is not None:
        extra["noise floor (a perfect unlearner)"] = Line2D([], [], color="grey", ls="--", lw=1)
    _extend_legend(grid, extra, title="algorithm")
    n_forget = frame.groupby("family")["forget"].nunique()
    fams = ", ".join(map(str, n_forget.index))
    text = (f"Lines: KLoM percentiles (over the forget / retain / validation examples) of each unlearning algorithm "
            f"against compute, mean over the {int(n_forget.sum())} forget sets (family {fams})"
            + ("; bands: their min-max" if band else "")
            + (f"; margins from {models_per_side} models per side (unlearned vs retrained)" if models_per_side else "")
            + ". Lower is better; points at compute 0: doing nothing and DM-Direct."
            + (" Algorithms swept over learning rates are drawn at their best rate." if best_lr and (swept > 1).any() else "")
            + (" Dashed: the noise floor, what two samples of the same distribution score." if floor is not None else "")
            + (f" Flat panels ({', '.join(flat)}): every algorithm at the same value." if flat else ""))
    return annotate(grid.figure, text, scale, caption)
