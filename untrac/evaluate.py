"""How well a method's influences track the leave-dataset-out ground truth (paper Sec. 5).

* :func:`correlation` — Pearson / Spearman between a method's influences and the truth across
  the K training datasets, per test subset, averaged over subsets (13 ToxiGen groups, ...).
* :func:`standardise` — z-scores over the K datasets, per method (Table 2).
* :func:`summarise` — mean, std and 95% confidence interval over runs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .methods.result import Influence

CORRELATIONS = ("pearson", "spearman")


def _check_aligned(estimate: Influence, truth: Influence) -> None:
    if estimate.train_names != truth.train_names or estimate.test_names != truth.test_names:
        raise ValueError(
            f"{estimate.method} and {truth.method} cover different datasets: "
            f"{estimate.train_names}/{estimate.test_names} vs {truth.train_names}/{truth.test_names}"
        )


def per_subset_correlation(estimate: Influence, truth: Influence, kind: str = "pearson") -> np.ndarray:
    """Correlation across the K training sets, one value per test subset (NaN if a side is constant)."""
    _check_aligned(estimate, truth)
    if kind not in CORRELATIONS:
        raise ValueError(f"kind must be one of {CORRELATIONS}")
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    out = []
    for s in range(len(truth.test_names)):
        a, b = estimate.values[:, s], truth.values[:, s]
        out.append(np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(fn(a, b)[0]))
    return np.array(out)


def correlation(estimate: Influence, truth: Influence, kind: str = "pearson") -> float:
    """Mean over test subsets of the per-subset correlation with the ground truth (NaN where every
    subset is undefined, e.g. at step 0 of a trajectory, where every influence is 0)."""
    values = per_subset_correlation(estimate, truth, kind)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def trajectory_correlation(estimate: Influence, truth: Influence, kind: str = "pearson") -> pd.DataFrame:
    """Correlation with the truth at every evaluation point of an unlearning trajectory (Fig. 3)."""
    if estimate.steps is None:
        raise ValueError(f"{estimate.method} has no trajectory")
    return pd.DataFrame({"step": estimate.steps, kind: [correlation(estimate.at_step(i), truth, kind) for i in range(len(estimate.steps))]})


def standardise(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """z-scores over the training datasets (Table 2): (x - mean) / std (population std)."""
    values = np.asarray(values, dtype=float)
    std = values.std(axis=axis, keepdims=True)
    return (values - values.mean(axis=axis, keepdims=True)) / np.where(std == 0, 1.0, std)


def summarise(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean, std (ddof=1), n and 95% CI half-width (Student t) of ``value`` over runs, grouped by ``by``."""
    def _agg(x: pd.Series) -> pd.Series:
        x = x.dropna()
        n = len(x)
        std = x.std(ddof=1) if n > 1 else np.nan
        half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
        return pd.Series({"mean": x.mean(), "std": std, "n": n, "ci95": half})

    return frame.groupby(list(by), sort=False)[value].apply(_agg).unstack().reset_index()


def correlation_table(runs: Sequence[Mapping[str, Influence]], truth_key: str = "Ground truth") -> pd.DataFrame:
    """Tidy frame of Pearson and Spearman per (run, method) from a list of {method: Influence} per run."""
    rows = []
    for r, results in enumerate(runs):
        truth = results[truth_key]
        for name, inf in results.items():
            if name == truth_key:
                continue
            rows.append({"run": r, "method": name, "pearson": correlation(inf, truth, "pearson"),
                         "spearman": correlation(inf, truth, "spearman")})
    return pd.DataFrame(rows)


def standardised_table(runs: Sequence[Mapping[str, Influence]], test: str | None = None) -> pd.DataFrame:
    """Table 2: per method, the z-scored influence of every training set (mean over runs).

    With several test subsets, ``test`` picks one (default: the first).
    """
    rows = []
    for r, results in enumerate(runs):
        for name, inf in results.items():
            s = 0 if test is None else inf.test_names.index(test)
            z = standardise(inf.values[:, s])
            rows += [{"run": r, "method": name, "train": t, "z": v} for t, v in zip(inf.train_names, z)]
    frame = pd.DataFrame(rows)
    return frame.groupby(["method", "train"], sort=False)["z"].mean().unstack("train").reset_index()
