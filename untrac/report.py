"""Tables and figures into ``figures/``: seaborn plots (PNG + PDF), tables (CSV + Markdown).

Nothing here computes influence; it only shapes results of ``untrac.experiments`` for reading.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .evaluate import standardise
from .methods.result import Influence

sns.set_theme(style="whitegrid", context="notebook")


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
        fig.savefig(self.path(name, "pdf"), bbox_inches="tight")
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
    return cell.unstack(columns).reset_index()


def standardised_frame(runs: Mapping[str, Sequence[Mapping[str, Influence]]], test_index: int = 0) -> pd.DataFrame:
    """Tidy frame of z-scored influences (Table 2) for every family, run, method and training set."""
    rows = []
    for family, family_runs in runs.items():
        for r, results in enumerate(family_runs):
            for method, inf in results.items():
                z = standardise(inf.values[:, test_index])
                rows += [{"family": family, "run": r, "method": method, "train": t, "z": v} for t, v in zip(inf.train_names, z)]
    return pd.DataFrame(rows)


def trajectory_frame(runs: Mapping[str, Sequence[Mapping[str, Influence]]], methods: Sequence[str] = ("UnTrac", "UnTrac-Inv")) -> pd.DataFrame:
    """Tidy frame of influence over unlearning steps for every family, run and method (Fig. 2)."""
    frames = []
    for family, family_runs in runs.items():
        for r, results in enumerate(family_runs):
            for m in methods:
                if m in results and results[m].trajectory is not None:
                    frames.append(results[m].trajectory_frame().assign(family=family, run=r))
    return pd.concat(frames, ignore_index=True)


def plot_trajectories(frame: pd.DataFrame, value: str = "influence", hue: str = "train") -> plt.Figure:
    """Lines of ``value`` over unlearning steps, mean and 95% band over runs, method x family grid."""
    grid = sns.relplot(data=frame, x="step", y=value, hue=hue, row="method", col="family", kind="line",
                       errorbar=("ci", 95), height=2.8, aspect=1.4, facet_kws={"sharey": False, "sharex": False})
    grid.set_titles("{row_name} — {col_name}")
    grid.set_axis_labels("unlearning step", value)
    return grid.figure


def plot_standardised(frame: pd.DataFrame) -> plt.Figure:
    """Bars of z-scored influence of each training set, one panel per family, methods side by side."""
    grid = sns.catplot(data=frame, x="method", y="z", hue="train", col="family", kind="bar", errorbar="sd",
                       height=3.4, aspect=2.0)
    grid.set_xticklabels(rotation=30, ha="right")
    grid.set_axis_labels("", "standardised influence (z)")
    return grid.figure


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


def cost_frame(runs: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """What each method spent, per family and run (seconds, examples through forward/backward, peak memory)."""
    rows = []
    for family, family_runs in runs.items():
        for r, results in enumerate(family_runs):
            for method, inf in results.items():
                if inf.cost.seconds:
                    rows.append({"family": family, "run": r, "method": method, "seconds": inf.cost.seconds,
                                 "forward_examples": inf.cost.forward_examples,
                                 "backward_examples": inf.cost.backward_examples, "peak_memory_mb": inf.cost.peak_memory_mb})
    return pd.DataFrame(rows)
