"""How well a method's influences track the leave-dataset-out ground truth (paper Sec. 5).

* :func:`correlation` — Pearson / Spearman between a method's influences and the truth across
  the K training datasets, per test subset, averaged over subsets (13 ToxiGen groups, ...).
* :func:`standardise` — z-scores over the K datasets, per method (Table 2).
* :func:`summarise` — mean, std and 95% confidence interval over runs.
* :func:`claim_verdicts` — "UnTrac beats the baselines" decided by code: holds / fails / inconclusive.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .methods.result import Influence
from .truth import CEILING, NAME as TRUTH, mean_truth

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


def subset_correlation_frame(results: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """Pearson and Spearman with the truth per test subset: one row per (setting, test set, subset,
    run, method); NaN where a side is constant."""
    rows = []
    for setting, runs in results.items():
        for r, res in enumerate(runs):
            truth = res[TRUTH]
            values = {method: {kind: per_subset_correlation(inf, truth, kind) for kind in CORRELATIONS}
                      for method, inf in res.items() if method != TRUTH}
            for testset in testsets_of(truth):
                for method, v in values.items():
                    rows += [{"setting": setting, "testset": testset, "subset": name, "run": r, "method": method,
                              **{kind: float(c[s]) for kind, c in v.items()}}
                             for s, name in enumerate(truth.test_names) if name.split("/", 1)[0] == testset]
    return pd.DataFrame(rows)


def correlation_frame(results: Mapping[str, Sequence[Mapping[str, Influence]]]) -> pd.DataFrame:
    """Tables 3 and 5: Pearson and Spearman with the truth, averaged over a test set's subsets
    (:func:`correlation`). One row per (setting, test set, run, method)."""
    cells = subset_correlation_frame(results)
    keys = ["setting", "testset", "run", "method"]
    return cells.groupby(keys, sort=False)[list(CORRELATIONS)].mean().reset_index()


def seed_noise(truths: Sequence[Influence], columns: Sequence[int] | None = None) -> dict[str, float]:
    """How far a ground truth is above its training noise, from one truth per training seed.

    Over the test sets ``columns`` (default: all; each quantity is the mean over them, in nats):
    ``spread`` — std over the training sets of the mean truth; ``seed_sd`` — std over seeds of one
    seed's truth (mean over training sets): the noise of a single-model truth; ``truth_se`` =
    seed_sd / sqrt(seeds) and ``heldout_se`` = seed_sd / sqrt(seeds - 1): the noise of the mean over
    all seeds and over all but one (what a run on one seed's model is scored against); ``ratio``,
    ``ratio_heldout``, ``ratio_one_seed``: spread over each of them; ``above`` — share of test sets
    whose spread exceeds their held-out noise; ``agreement`` — mean over seeds of the Pearson
    correlation of one seed's truth with the other seeds' mean (the ceiling). NaN with one seed.

    The spread of a mean over few seeds is inflated by their noise (its variance across training sets
    is the true one plus the seed variance / seeds): ``spread_corrected`` removes that part per test
    set, ``sqrt(max(spread^2 - mean seed variance / seeds, 0))``, and ``ratio_corrected`` /
    ``ratio_one_seed_corrected`` use it. The uncorrected ratios overstate how far the truth is above
    its noise, most at few seeds.
    """
    stack = np.stack([t.values for t in truths])  # [seeds, K, S]
    cols = list(range(stack.shape[2])) if columns is None else list(columns)
    stack, n = stack[:, :, cols], len(truths)
    spread = stack.mean(0).std(0, ddof=1)
    if n < 2:
        nan = float("nan")
        return {"seeds": n, "spread": float(spread.mean()), "seed_sd": nan, "truth_se": nan, "heldout_se": nan,
                "ratio": nan, "ratio_heldout": nan, "ratio_one_seed": nan, "above": nan, "agreement": nan,
                "spread_corrected": nan, "ratio_corrected": nan, "ratio_one_seed_corrected": nan}
    sd = stack.std(0, ddof=1).mean(0)  # per test set
    corrected = float(np.sqrt(np.maximum(spread**2 - stack.var(0, ddof=1).mean(0) / n, 0.0)).mean())
    agreement = np.nanmean([per_subset_correlation(t, mean_truth([o for i, o in enumerate(truths) if i != k]))[cols]
                            for k, t in enumerate(truths)])
    m, sd_mean = float(spread.mean()), float(sd.mean())
    return {"seeds": n, "spread": m, "seed_sd": sd_mean, "truth_se": sd_mean / np.sqrt(n),
            "heldout_se": sd_mean / np.sqrt(n - 1), "ratio": m / (sd_mean / np.sqrt(n)),
            "ratio_heldout": m / (sd_mean / np.sqrt(n - 1)), "ratio_one_seed": m / sd_mean,
            "above": float(np.mean(spread > sd / np.sqrt(n - 1))), "agreement": float(agreement),
            "spread_corrected": corrected, "ratio_corrected": corrected / (sd_mean / np.sqrt(n)),
            "ratio_one_seed_corrected": corrected / sd_mean}


REFERENCES = ("Overlap (TF-IDF)", "Random")  # rows that ask no model


def claim_verdicts(cells: pd.DataFrame, value: str = "pearson", claimants: Sequence[str] = ("UnTrac", "UnTrac-Inv"),
                   level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> pd.DataFrame:
    """The paper's claim "UnTrac (-Inv) correlates with the truth better than the baselines", decided
    by code per setting and test set: holds / fails / inconclusive at a ``level`` bootstrap CI.

    ``cells``: :func:`subset_correlation_frame`. For each claimant, the difference of its ``value``
    from that of (a) the best model-based baseline (highest mean; every method but the claimants and
    :data:`REFERENCES`), (b) each reference row and (c) the ceiling row (:data:`untrac.truth.CEILING`,
    where present: one seed's exact truth; a claimant can at best tie it), per (run, test subset)
    cell; its mean gets a two-way bootstrap CI (runs and subsets resampled independently, ``n_boot``
    draws, ``seed``). "holds": the CI lies above 0; "fails": below; else "inconclusive". Where runs
    use different training seeds and are scored against the other seeds' truth (notebook 02), the CI
    covers training noise too; where they share one model and truth, only the sample and the subsets.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for (setting, testset), group in cells.groupby(["setting", "testset"], sort=False):
        table = group.pivot_table(index="run", columns=["method", "subset"], values=value, dropna=False)
        means = group.groupby("method", sort=False)[value].mean()
        baselines = [m for m in means.index if m not in claimants and m not in REFERENCES and m != CEILING]
        rivals = ([("best baseline", means[baselines].idxmax())] if baselines else []) + \
            [("reference", m) for m in REFERENCES if m in means.index] + \
            ([("ceiling", CEILING)] if CEILING in means.index else [])
        for claimant in [c for c in claimants if c in means.index]:
            for kind, rival in rivals:
                diff = (table[claimant] - table[rival]).to_numpy()  # [runs, subsets]
                versus = rival if kind == "ceiling" else f"{rival} ({kind})"
                rows.append({"setting": setting, "testset": testset, "method": claimant, "versus": versus,
                             **bootstrap_verdict(diff, rng, level, n_boot)})
    return pd.DataFrame(rows)


def bootstrap_verdict(diff: np.ndarray, rng: np.random.Generator, level: float = 0.95, n_boot: int = 4000) -> dict:
    """Mean of ``diff`` ([runs] or [runs, subsets]: a claimed advantage per cell), its two-way bootstrap
    CI (rows and columns resampled independently) and the verdict: "holds" when the CI lies above 0,
    "fails" below, else "inconclusive"."""
    diff = np.asarray(diff, dtype=float).reshape(len(diff), -1)
    r, s = diff.shape
    boot = np.array([np.nanmean(diff[rng.integers(0, r, r)][:, rng.integers(0, s, s)]) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boot, [alpha, 1 - alpha])
    return {"difference": float(np.nanmean(diff)), "ci_low": float(lo), "ci_high": float(hi),
            "verdict": "holds" if lo > 0 else "fails" if hi < 0 else "inconclusive"}


def ordering_verdicts(ours: pd.DataFrame, theirs: pd.DataFrame, column: str, value: str = "pearson",
                      min_gap: float = 0.05, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> pd.DataFrame:
    """The paper's orderings in a grid (Table 4), decided by code on ours.

    ``ours``: one row per (method, ``column``, run) with ``value``; ``theirs``: the paper's ``method``,
    ``column``, ``mean``. Per method, every claim "the paper's best column beats column c" whose paper
    gap is at least ``min_gap`` is tested on our runs: the per-run difference (same run = same sample
    and seed on both sides), a bootstrap CI over runs, and holds / fails / inconclusive
    (:func:`bootstrap_verdict`). The rule is fixed by the paper's numbers alone.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for method, paper in theirs.groupby("method", sort=False):
        if method not in set(ours["method"]):
            continue
        paper = paper.set_index(column)["mean"]
        best = paper.idxmax()
        table = ours[ours["method"] == method].pivot_table(index="run", columns=column, values=value)
        for other, gap in (paper[best] - paper).items():
            if other == best or gap < min_gap or best not in table or other not in table:
                continue
            rows.append({"method": method, "claim": f"{best:g} beats {other:g}" if isinstance(best, float)
                         else f"{best} beats {other}", "paper_difference": float(gap),
                         **bootstrap_verdict((table[best] - table[other]).to_numpy(), rng, level, n_boot)})
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
