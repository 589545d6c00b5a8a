"""Notebook 04: Attribute-to-Delete's unlearning evaluation on the synthetic tasks (Sec. 5.1).

Cached like everything else and sharing notebook 01's tokenizer, base model and fine-tuned models:
:func:`population` (originals, oracles and subset-trained models over seeds),
:func:`fit_population_datamodel`, :func:`unlearning_runs` (every algorithm of
:mod:`untrac.unlearn.algorithms` at every budget), :func:`klom_frame` (KLoM from
:mod:`untrac.unlearn.klom`), :func:`untrac_comparison`; :func:`study` runs them all for a preset
(``untrac.preset("unlearning", scale)``, :class:`untrac.presets.UnlearningPreset`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from datasets import Dataset
from torch import nn

from .. import cache
from ..evaluate import correlation
from ..methods.result import Influence
from ..presets import UnlearningPreset
from ..parallel import prefetch
from ..training import Trained, leave_dataset_out, leave_dataset_out_calls, mixture, train
from ..unlearn import klom
from ..unlearn.algorithms import (
    ALGORITHMS, MATCHING, DeletionConfig, MatchTargets, compute_fraction, matched_examples, matched_values,
    retain_sample_indices, unlearn_trajectory,
)
from ..unlearn.datamodels import Datamodel, fit_datamodel, subsets_of_sizes
from ..progress import bar
from ..unlearn.margins import margins_from_logprobs, sequence_scores, split_tokens, token_scores

GROUPS = ("forget", "retain", "validation")


@dataclass
class Population:
    """Everything notebook 04 evaluates for one family: data, models over seeds, and their scores.

    ``scores[model_key][set_name] = (logprob, n_tokens)`` over *every* example of every set;
    ``token_scores[model_key][set_name]``: the log-probability of every target token of every example,
    flat (:func:`untrac.unlearn.margins.token_scores`; :meth:`tokens` splits it per example).
    ``eval_index[set_name]``: the examples of each set that KLoM (and the UnTrac comparison) evaluates.
    """

    preset: UnlearningPreset
    family: str
    pad_id: int
    train_sets: dict[str, Dataset]
    test_sets: dict[str, Dataset]
    originals: dict[int, Trained]
    oracles: dict[int, dict[str, Trained]]
    subset_models: list[tuple[tuple[str, ...], Trained]]
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    eval_index: dict[str, np.ndarray]
    token_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def train_names(self) -> list[str]:
        return list(self.train_sets)

    @property
    def sets(self) -> dict[str, Dataset]:
        return {**self.train_sets, **self.test_sets}

    def margins(self, trained: Trained, evaluated_only: bool = True) -> dict[str, np.ndarray]:
        """Margins of a population model per set (evaluated examples only, or all)."""
        out = {}
        for name, (lp, _) in self.scores[trained.key].items():
            m = margins_from_logprobs(lp)
            out[name] = m[self.eval_index[name]] if evaluated_only else m
        return out

    def tokens(self, trained: Trained) -> dict[str, np.ndarray]:
        """Per set, one array of target-token log-probabilities per example (all examples) of a population model."""
        return {name: split_tokens(flat, self.scores[trained.key][name][1])
                for name, flat in self.token_scores[trained.key].items()}

    def groups(self, per_set: Mapping[str, np.ndarray], forget: str) -> dict[str, np.ndarray]:
        """Per-set arrays of evaluated examples -> forget / retain / validation arrays (last axis)."""
        return {
            "forget": per_set[forget],
            "retain": np.concatenate([per_set[k] for k in self.train_sets if k != forget], axis=-1),
            "validation": np.concatenate([per_set[k] for k in self.test_sets], axis=-1),
        }

    def eval_sets(self) -> dict[str, Dataset]:
        return {k: ds.select(list(map(int, self.eval_index[k]))) for k, ds in self.sets.items()}


@cache.cached("scores", version=1)
def _scores(model: Trained, sets: Mapping[str, Dataset], pad_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(log p(y|x), target tokens)`` of every example of every set under a trained model."""
    return {k: sequence_scores(model.model, ds, pad_id) for k, ds in sets.items()}


@cache.cached("scores", version=1)
def _token_scores(model: Trained, sets: Mapping[str, Dataset], pad_id: int) -> dict[str, np.ndarray]:
    """The log-probability of every target token of every set under a trained model, flat per set."""
    return {k: token_scores(model.model, ds, pad_id)[0] for k, ds in sets.items()}


def population(preset: UnlearningPreset, family: str, progress: bool = True) -> Population:
    """Train (or load) the originals, oracles and subset models of one family and score them.

    Uses notebook 01's tokenizer, pretrained base model and data of ``preset.run``: seed
    ``preset.run`` (and notebook 01's noise-floor seeds) load notebook 01's models from the cache.
    """
    from .setup import pretrained_base, project_tokenizer
    from .synthetic import synthetic_data

    syn = preset.synthetic
    tokenizer = project_tokenizer(syn.model, syn.tokenizer)
    base = pretrained_base(syn.model, syn.pretrain, tokenizer, progress)
    _, train_sets, test_sets = synthetic_data(syn, family, preset.run, tokenizer, base)
    return build_population(preset, family, base, train_sets, test_sets, tokenizer.pad_token_id, progress)


def build_population(preset: UnlearningPreset, family: str, base: nn.Module, train_sets: Mapping[str, Dataset],
                     test_sets: Mapping[str, Dataset], pad_id: int, progress: bool = True) -> Population:
    """:func:`population` from a given initial model and encoded data (every model cached by ``train``)."""
    syn = preset.synthetic
    train_sets, test_sets = dict(train_sets), dict(test_sets)
    originals: dict[int, Trained] = {}
    oracles: dict[int, dict[str, Trained]] = {}
    subsets = [(i, subset) for i, subset in enumerate(subsets_of_sizes(list(train_sets), preset.datamodel_sizes))
               if len(subset) != len(train_sets)]
    # every model of the population is independent of the others: train them in parallel workers first
    calls = [c for s in preset.seeds for c in leave_dataset_out_calls(base, train_sets, replace(syn.train, seed=s), pad_id)]
    calls += [(train, (base, {k: train_sets[k] for k in subset}, replace(syn.train, seed=preset.datamodel_seed + i), pad_id),
               {"progress": False}) for i, subset in subsets if 0 < len(subset) < len(train_sets) - 1]
    prefetch(calls, progress=progress, desc=f"population {family}")
    # seed ``run`` last: notebook 01 trains it first, so a concurrent notebook 01 has usually cached it by then
    for s in bar(sorted(preset.seeds, key=lambda x: x == preset.run), desc=f"originals and oracles {family}",
                  enabled=progress):
        originals[s], oracles[s] = leave_dataset_out(base, train_sets, replace(syn.train, seed=s), pad_id, progress=progress)
    originals = {s: originals[s] for s in preset.seeds}
    oracles = {s: oracles[s] for s in preset.seeds}
    subset_models = []
    for i, subset in enumerate(subsets_of_sizes(list(train_sets), preset.datamodel_sizes)):
        if len(subset) in (0, len(train_sets) - 1):
            raise ValueError("datamodel subsets must be non-empty and must not be leave-one-out sets "
                             "(those are the oracles the datamodel has to predict)")
        if len(subset) == len(train_sets):
            continue  # the originals are the full-data models
        cfg = replace(syn.train, seed=preset.datamodel_seed + i)
        subset_models.append((subset, train(base, {k: train_sets[k] for k in subset}, cfg, pad_id, progress=progress)))
    sets = {**train_sets, **test_sets}
    everyone = [*originals.values(), *(t for o in oracles.values() for t in o.values()), *(t for _, t in subset_models)]
    scores = {t.key: _scores(t, sets, pad_id) for t in bar(everyone, desc="scoring", enabled=progress)}
    tokens = {t.key: _token_scores(t, sets, pad_id) for t in everyone}
    rng = np.random.default_rng([preset.run, 7])
    eval_index = {}
    for k, ds in sets.items():
        n = len(ds)
        if preset.eval_per_set is None or preset.eval_per_set >= n:
            eval_index[k] = np.arange(n)
        else:
            eval_index[k] = np.sort(rng.choice(n, preset.eval_per_set, replace=False))
    return Population(preset, family, pad_id, train_sets, test_sets, originals, oracles, subset_models, scores, eval_index,
                      tokens)


def fit_population_datamodel(pop: Population, tokens: bool = False) -> Datamodel:
    """The linear datamodel of every example's margin (all examples of all sets, concatenated in
    ``pop.sets`` order), fitted on the originals (full data) and the subset-trained models; with
    ``tokens``, of every target token's log-probability instead (every token of every example, in the
    same order: Datamodel Matching's targets)."""
    models = [(tuple(pop.train_names), t) for t in pop.originals.values()] + list(pop.subset_models)
    if tokens:
        outputs = np.stack([np.concatenate([pop.token_scores[t.key][k] for k in pop.sets]) for _, t in models])
    else:
        outputs = np.stack([np.concatenate([margins_from_logprobs(pop.scores[t.key][k][0]) for k in pop.sets])
                            for _, t in models])
    return fit_datamodel(pop.train_names, [s for s, _ in models], outputs, pop.preset.ridge)


def _set_slices(pop: Population) -> dict[str, slice]:
    out, start = {}, 0
    for k, ds in pop.sets.items():
        out[k] = slice(start, start + len(ds))
        start += len(ds)
    return out


def datamodel_quality(pop: Population, dm: Datamodel) -> pd.DataFrame:
    """How well the datamodel predicts the oracles it never saw, per forget set and group.

    Compares the predicted margin change of removing the forget set (``-coef``) with the observed
    change (mean over seeds of oracle minus original margin), over evaluated examples: Pearson r,
    mean absolute error, and the mean absolute observed change (the scale to beat).
    """
    sl = _set_slices(pop)
    rows = []
    for k in pop.train_names:
        obs = {n: np.mean([pop.margins(pop.oracles[s][k])[n] - pop.margins(pop.originals[s])[n] for s in pop.originals], axis=0)
               for n in pop.sets}
        pred = {n: -dm.effect(k)[sl[n]][pop.eval_index[n]] for n in pop.sets}
        for g, (o, p) in {g: (pop.groups(obs, k)[g], pop.groups(pred, k)[g]) for g in GROUPS}.items():
            r = float(np.corrcoef(o, p)[0, 1]) if np.ptp(o) > 0 and np.ptp(p) > 0 else float("nan")
            rows.append({"family": pop.family, "forget": k, "group": g, "pearson": r,
                         "mae": float(np.mean(np.abs(o - p))), "mean_abs_change": float(np.mean(np.abs(o)))})
    return pd.DataFrame(rows)


@dataclass
class UnlearningRuns:
    """Scores of every unlearned model on the evaluated examples.

    ``scores[(label, forget, seed)][steps] = {set: logprob}`` where ``label`` names an algorithm at one
    learning rate (``algorithms[label]`` is the algorithm, ``configs[label]`` its config);
    ``dm_direct[(forget, seed)] = {set: margins}`` (the datamodel's predicted margins, no fine-tuning).
    """

    scores: dict[tuple[str, str, int], dict[int, dict[str, np.ndarray]]]
    dm_direct: dict[tuple[str, int], dict[str, np.ndarray]]
    algorithms: dict[str, str] = field(default_factory=dict)
    configs: dict[str, DeletionConfig] = field(default_factory=dict)


def unlearning_runs(pop: Population, dm: Datamodel, algorithms: Sequence[str] = ALGORITHMS[1:],
                    progress: bool = True) -> UnlearningRuns:
    """Unlearn every training set from every original with every algorithm, over the budgets.

    Oracle Matching for the original of seed ``s`` matches the oracle of the same seed (the model
    retraining would have produced), token by token; Datamodel Matching matches the original's token
    log-probabilities minus the forget set's coefficient in a datamodel of token log-probabilities
    (``dm``, the margin datamodel, gives DM-Direct). Every learning rate of ``preset.lrs`` is a
    separate variant. Cached per (algorithm, learning rate, forget set, seed).
    """
    preset = pop.preset
    sl = _set_slices(pop)
    eval_sets = pop.eval_sets()
    counts = {n: pop.scores[pop.originals[next(iter(pop.originals))].key][n][1] for n in pop.sets}
    token_dm, token_sl, start = None, {}, 0
    for n in pop.sets:
        token_sl[n] = slice(start, start + int(counts[n].sum()))
        start = token_sl[n].stop
    out: dict[tuple[str, str, int], dict[int, dict[str, np.ndarray]]] = {}
    direct = {}
    variants = preset.variants(algorithms)
    jobs = [(v, k, s) for s in pop.originals for k in pop.train_names for v in variants]
    for (label, a, config), k, s in bar(jobs, desc=f"unlearning {pop.family}", enabled=progress):
        original = pop.originals[s]
        forget, retain = pop.train_sets[k], mixture(pop.train_sets, exclude=k)
        targets = None
        if a in MATCHING:
            ridx = retain_sample_indices(len(retain), config.retain_sample, config.seed + pop.train_names.index(k))
            source = pop.oracles[s][k] if a == "oracle matching" else original
            target = matched_values(pop.tokens(source), k, ridx, pop.train_names)
            if a == "datamodel matching":
                token_dm = token_dm or fit_population_datamodel(pop, tokens=True)
                effect = {n: split_tokens(token_dm.effect(k)[token_sl[n]], counts[n]) for n in pop.train_names}
                target = target - matched_values(effect, k, ridx, pop.train_names)
            targets = MatchTargets(matched_examples(forget, retain, ridx), target)
        key = cache.fingerprint("unlearning", a, original.key, k, config, list(preset.budgets), dict(eval_sets),
                                None if targets is None else ("tokens", targets.flat()), dict(pop.train_sets))

        def compute() -> dict[int, dict[str, np.ndarray]]:
            res = {}
            for steps, model in unlearn_trajectory(a, original.model, forget, retain, preset.budgets, pop.pad_id,
                                                   config, targets):
                res[steps] = {n: sequence_scores(model, ds, pop.pad_id)[0] for n, ds in eval_sets.items()}
            return res

        out[(label, k, s)] = cache.memoise("unlearning", key, compute)
    for s, original in pop.originals.items():
        m = pop.margins(original)
        for k in pop.train_names:
            direct[(k, s)] = {n: m[n] - dm.effect(k)[sl[n]][pop.eval_index[n]] for n in pop.sets}
    return UnlearningRuns(out, direct, {v[0]: v[1] for v in variants}, {v[0]: v[2] for v in variants})


def klom_frame(pop: Population, runs: UnlearningRuns) -> pd.DataFrame:
    """Tidy KLoM percentiles: one row per (forget set, algorithm, steps, group).

    Includes "do nothing" (the originals, compute 0), "DM-Direct" (the datamodel's predicted
    margins, no fine-tuning, compute 0) and every algorithm at every budget.
    """
    preset = pop.preset
    train_cfg = preset.synthetic.train
    rows = []

    def add(k: str, algorithm: str, steps: int, per_seed: list[dict[str, np.ndarray]], fraction: float) -> None:
        for g, values in _klom_values(pop, k, per_seed).items():
            rows.append({"family": pop.family, "forget": k, "algorithm": algorithm, "steps": steps,
                         "fraction": fraction, "group": g, "n": values.size, **klom.percentiles(values)})

    for k in pop.train_names:
        add(k, "do nothing", 0, _unlearned_margins(pop, runs, k, "do nothing", 0), 0.0)
        add(k, "DM-Direct", 0, _unlearned_margins(pop, runs, k, "DM-Direct", 0), 0.0)
        for label, a in runs.algorithms.items():
            bs = runs.configs[label].batch_size
            for steps in preset.budgets:
                add(k, label, steps, _unlearned_margins(pop, runs, k, label, steps), compute_fraction(a, steps, bs, train_cfg))
    return pd.DataFrame(rows)


def _unlearned_margins(pop: Population, runs: UnlearningRuns, k: str, label: str, steps: int) -> list[dict[str, np.ndarray]]:
    """Per seed, the margins (evaluated examples, per set) after unlearning ``k`` with ``label`` for ``steps``."""
    seeds = list(pop.originals)
    if label == "do nothing":
        return [pop.margins(pop.originals[s]) for s in seeds]
    if label == "DM-Direct":
        return [runs.dm_direct[(k, s)] for s in seeds]
    return [{n: margins_from_logprobs(lp) for n, lp in runs.scores[(label, k, s)][steps].items()} for s in seeds]


def _klom_values(pop: Population, k: str, per_seed: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """KLoM of every evaluated example per group, unlearned models (one per seed) against the oracles of ``k``."""
    oracle = [pop.margins(pop.oracles[s][k]) for s in pop.originals]
    U = pop.groups({n: np.stack([m[n] for m in per_seed]) for n in pop.sets}, k)
    O = pop.groups({n: np.stack([m[n] for m in oracle]) for n in pop.sets}, k)
    return {g: klom.klom(U[g], O[g], pop.preset.bins, pop.preset.floor) for g in GROUPS}


KLOM_CLAIMS = (  # Attribute-to-Delete's findings on KLoM (its blog post and paper), tested by klom_verdicts
    "matching beats every baseline",  # "DMM performs much better than all existing baselines (KLoM score is lower)"
    "baselines are worse than doing nothing",  # "Many existing baselines ... are worse than doing-nothing"
)


def klom_verdicts(pop: Population, runs: UnlearningRuns, steps: int | None = None, level: float = 0.95,
                  n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Attribute-to-Delete's claims (:data:`KLOM_CLAIMS`) decided by code at budget ``steps`` (default:
    the preset's reporting budget), per group of examples.

    "matching beats every baseline": each matching method (Oracle, Datamodel) against doing nothing and
    every gradient-based variant (each learning rate of gradient ascent and ascent+descent). "baselines
    are worse than doing nothing": each gradient-based variant against doing nothing. ``difference`` is the
    claimed advantage in mean KLoM (comparator minus claimant for "beats", variant minus doing nothing for
    "worse"), over a [forget sets x examples] grid; the CI resamples forget sets and examples
    (:func:`untrac.evaluate.bootstrap_verdict`): holds above 0, fails below, else inconclusive.
    """
    from ..evaluate import bootstrap_verdict

    steps = pop.preset.report_steps if steps is None else steps
    rng = np.random.default_rng(seed)
    labels = ["do nothing", *runs.algorithms]
    grid: dict[str, dict[str, np.ndarray]] = {}
    for label in labels:
        per_k = [_klom_values(pop, k, _unlearned_margins(pop, runs, k, label, steps)) for k in pop.train_names]
        grid[label] = {}
        for g in GROUPS:
            width = max(v[g].size for v in per_k)
            grid[label][g] = np.stack([np.pad(v[g].astype(float), (0, width - v[g].size), constant_values=np.nan)
                                       for v in per_k])
    matching = [l for l in runs.algorithms if runs.algorithms[l] in MATCHING]
    baselines = [l for l in runs.algorithms if runs.algorithms[l] in ("gradient ascent", "ascent+descent")]
    pairs = [(KLOM_CLAIMS[0], m, c, "beats") for m in matching for c in ["do nothing", *baselines]]
    pairs += [(KLOM_CLAIMS[1], c, "do nothing", "worse") for c in baselines]
    rows = []
    for claim, method, comparator, kind in pairs:
        for g in GROUPS:
            a, b = grid[method][g], grid[comparator][g]
            diff = b - a if kind == "beats" else a - b
            rows.append({"family": pop.family, "claim": claim, "method": method, "comparator": comparator, "group": g,
                         "steps": steps, **bootstrap_verdict(diff, rng, level, n_boot)})
    return pd.DataFrame(rows)


def klom_table(frame: pd.DataFrame, steps: int | None = None) -> pd.DataFrame:
    """Wide table: one row per (family, forget, algorithm) at ``steps`` (plus the zero-cost rows),
    columns ``<group>_p50 / _p95 / _p99``."""
    sel = frame if steps is None else frame[(frame["steps"] == steps) | (frame["steps"] == 0)]
    wide = sel.pivot_table(index=["family", "forget", "algorithm", "steps", "fraction"], columns="group",
                           values=["p50", "p95", "p99"], sort=False)
    wide.columns = [f"{g}_{p}" for p, g in wide.columns]
    cols = [f"{g}_{p}" for g in GROUPS for p in ("p50", "p95", "p99") if f"{g}_{p}" in wide.columns]
    order = {a: i for i, a in enumerate(dict.fromkeys(frame["algorithm"]))}  # the frame's (insertion) order
    out = wide[cols].reset_index()
    return out.sort_values(["family", "forget", "algorithm"], key=lambda c: c.map(order) if c.name == "algorithm" else c,
                           kind="stable").reset_index(drop=True)


def klom_noise_floor(preset: UnlearningPreset) -> dict[str, float]:
    """KLoM percentiles of a perfect unlearner at this preset's number of seeds and bins (:func:`untrac.unlearn.klom.noise_floor`)."""
    return klom.noise_floor(len(preset.seeds), preset.bins, preset.floor)


def untrac_comparison(pop: Population, runs: UnlearningRuns) -> pd.DataFrame:
    """UnTrac's attribution with each unlearner in place of gradient ascent, against the ground truth.

    For seed ``s``, algorithm ``a`` and budget ``b``: influence of training set ``k`` =
    L(test, unlearned) - L(test, original) (Eq. 2), correlated across the K training sets with
    the leave-dataset-out truth L(test, oracle_{s,k}) - L(test, original_s) (Eq. 1). The row
    "ground truth (other seed)" correlates seed ``s``'s truth with every other seed's: the ceiling
    set by training noise.
    """

    names, tests = pop.train_names, list(pop.test_sets)
    test_idx = {n: pop.eval_index[n] for n in tests}
    counts = {n: pop.scores[pop.originals[next(iter(pop.originals))].key][n][1][test_idx[n]] for n in tests}

    def loss(lp_by_set: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array([float(np.mean(-lp_by_set[n] / counts[n])) for n in tests])

    def full(t: Trained) -> dict[str, np.ndarray]:
        return {n: pop.scores[t.key][n][0][test_idx[n]] for n in tests}

    truth = {}
    for s, orig in pop.originals.items():
        base = loss(full(orig))
        truth[s] = Influence("Ground truth", names, tests, np.stack([loss(full(pop.oracles[s][k])) - base for k in names]))
    rows = []
    train_cfg = pop.preset.synthetic.train
    for s, orig in pop.originals.items():
        base = loss(full(orig))
        for label, a in runs.algorithms.items():
            bs = runs.configs[label].batch_size
            for steps in pop.preset.budgets:
                values = np.stack([loss(runs.scores[(label, k, s)][steps]) - base for k in names])
                inf = Influence(f"UnTrac ({label})", names, tests, values)
                rows.append({"family": pop.family, "seed": s, "method": f"UnTrac ({label})", "steps": steps,
                             "fraction": compute_fraction(a, steps, bs, train_cfg),
                             "pearson": correlation(inf, truth[s], "pearson"),
                             "spearman": correlation(inf, truth[s], "spearman")})
        others = [t for ss, t in truth.items() if ss != s]
        if others:
            rows.append({"family": pop.family, "seed": s, "method": "ground truth (other seed)", "steps": 0,
                         "fraction": 1.0,
                         "pearson": float(np.nanmean([correlation(t, truth[s], "pearson") for t in others])),
                         "spearman": float(np.nanmean([correlation(t, truth[s], "spearman") for t in others]))})
    return pd.DataFrame(rows)


def klom_overview(frame: pd.DataFrame) -> pd.DataFrame:
    """KLoM percentiles averaged over forget sets (and families), per algorithm, budget and group:
    the numbers of the KLoM-against-compute figure."""
    g = frame.groupby(["algorithm", "steps", "fraction", "group"], sort=False)[["p50", "p95", "p99"]].mean().reset_index()
    wide = g.pivot_table(index=["algorithm", "steps", "fraction"], columns="group", values=["p50", "p95", "p99"], sort=False)
    wide.columns = [f"{grp}_{p}" for p, grp in wide.columns]
    cols = [f"{grp}_{p}" for grp in GROUPS for p in ("p50", "p95", "p99") if f"{grp}_{p}" in wide.columns]
    return wide[cols].reset_index()


@dataclass
class Study:
    """Notebook 04's whole computation for every family of a preset (see :func:`study`)."""

    preset: UnlearningPreset
    populations: dict[str, Population]
    datamodels: dict[str, Datamodel]
    runs: dict[str, UnlearningRuns]

    def klom_frame(self) -> pd.DataFrame:
        return pd.concat([klom_frame(self.populations[f], self.runs[f]) for f in self.populations], ignore_index=True)

    def datamodel_quality(self) -> pd.DataFrame:
        return pd.concat([datamodel_quality(self.populations[f], self.datamodels[f]) for f in self.populations],
                         ignore_index=True)

    def untrac_comparison(self) -> pd.DataFrame:
        return pd.concat([untrac_comparison(self.populations[f], self.runs[f]) for f in self.populations],
                         ignore_index=True)

    def noise_floor(self) -> dict[str, float]:
        return klom_noise_floor(self.preset)

    def klom_verdicts(self) -> pd.DataFrame:
        return pd.concat([klom_verdicts(self.populations[f], self.runs[f]) for f in self.populations], ignore_index=True)

    def models_trained(self) -> pd.DataFrame:
        """What the study trained, per family: originals, oracles, subset models, and their cost."""
        rows = []
        for f, pop in self.populations.items():
            kinds = {"original": list(pop.originals.values()),
                     "oracle": [t for o in pop.oracles.values() for t in o.values()],
                     "datamodel subset": [t for _, t in pop.subset_models]}
            for kind, models in kinds.items():
                rows.append({"family": f, "kind": kind, "models": len(models),
                             "train_seconds": float(sum(t.log.get("seconds", 0.0) for t in models))})
        return pd.DataFrame(rows)


def study(preset: UnlearningPreset, algorithms: Sequence[str] = ALGORITHMS[1:], progress: bool = True) -> Study:
    """Populations, datamodels and unlearning runs of every family (all cached)."""
    pops, dms, runs = {}, {}, {}
    for f in preset.families:
        pops[f] = population(preset, f, progress)
        dms[f] = fit_population_datamodel(pops[f])
        runs[f] = unlearning_runs(pops[f], dms[f], algorithms, progress)
    return Study(preset, pops, dms, runs)


__all__ = [
    "GROUPS", "KLOM_CLAIMS", "Population", "Study", "UnlearningRuns", "build_population", "datamodel_quality",
    "fit_population_datamodel", "klom_frame", "klom_noise_floor", "klom_overview", "klom_table", "klom_verdicts",
    "population",
    "study", "unlearning_runs", "untrac_comparison",
]
