"""How well a method's influences track the leave-dataset-out ground truth (paper Sec. 5).

* :func:`correlation` — Pearson / Spearman between a method's influences and the truth across
  the K training datasets, per test subset, averaged over subsets (13 ToxiGen groups, ...).
* :func:`standardise` — z-scores over the K datasets, per method (Table 2).
* :func:`summarise` — mean, std and 95% confidence interval over runs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .methods.result import Influence
from .truth import NAME as TRUTH

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


def correlation_table(runs: Sequence[Mapping[str, Influence]], truth_key: str = TRUTH) -> pd.DataFrame:
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


# ----------------------------------------------------------------------------- tidy frames of results
# ``results`` are ``{group: [run results]}`` with ``{method: Influence}`` per run (group: a synthetic
# family, a corpora setting).

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


def cost_frame(runs: Mapping[str, Sequence[Mapping[str, Influence]]], group: str = "family",
               exclude: Sequence[str] = ()) -> pd.DataFrame:
    """What each method spent, per ``group`` (synthetic family, corpora setting) and run: seconds,
    examples through forward/backward, peak memory. Methods in ``exclude`` and unmeasured results
    (zero seconds) are left out."""
    rows = []
    for name, group_runs in runs.items():
        for r, results in enumerate(group_runs):
            for method, inf in results.items():
                if inf.cost.seconds and method not in exclude:
                    rows.append({group: name, "run": r, "method": method, "seconds": inf.cost.seconds,
                                 "forward_examples": inf.cost.forward_examples,
                                 "backward_examples": inf.cost.backward_examples, "peak_memory_mb": inf.cost.peak_memory_mb})
    return pd.DataFrame(rows)


def select_testset(influence: Influence, testset: str) -> Influence:
    """The columns of ``influence`` that belong to one test set (trajectory included)."""
    cols = [i for i, name in enumerate(influence.test_names) if name.split("/", 1)[0] == testset]
    if not cols:
        raise ValueError(f"{influence.method} has no subsets of test set {testset!r}")
    traj = None if influence.trajectory is None else influence.trajectory[:, :, cols]
    return dataclasses.replace(influence, test_names=[influence.test_names[i] for i in cols],
                               values=influence.values[:, cols], trajectory=traj)


def testsets_of(influence: Influence) -> list[str]:
    return list(dict.fromkeys(name.split("/", 1)[0] for name in influence.test_names))


def correlation_frame(results: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """Tables 3 and 5: Pearson and Spearman with the truth, averaged over a test set's subsets.

    One row per (setting, test set, run, method).
    """
    rows = []
    for setting, runs in results.items():
        for r, res in enumerate(runs):
            truth = res[TRUTH]
            for testset in testsets_of(truth):
                t = select_testset(truth, testset)
                for method, inf in res.items():
                    if method == TRUTH:
                        continue
                    est = select_testset(inf, testset)
                    rows.append({"setting": setting, "testset": testset, "run": r, "method": method,
                                 "pearson": correlation(est, t, "pearson"), "spearman": correlation(est, t, "spearman")})
    return pd.DataFrame(rows)


def influence_frame(results: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """Per-corpus influence, z-scored over the corpora per test subset, then averaged over subsets.

    One row per (setting, test set, run, method, corpus); ``raw`` is the unstandardised mean.
    """
    rows = []
    for setting, runs in results.items():
        for r, res in enumerate(runs):
            for method, inf in res.items():
                for testset in testsets_of(inf):
                    sel = select_testset(inf, testset).values
                    z, raw = standardise(sel, axis=0).mean(1), sel.mean(1)
                    rows += [{"setting": setting, "testset": testset, "run": r, "method": method, "corpus": c,
                              "z": zv, "raw": rv} for c, zv, rv in zip(inf.train_names, z, raw)]
    return pd.DataFrame(rows)
