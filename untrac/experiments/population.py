"""Notebook 04's populations: the originals, oracles and subset-trained models of one synthetic family
over training seeds, their scores (per example and per target token), and the linear datamodels fitted
on them (:func:`fit_population_datamodel`, :func:`datamodel_quality`). :mod:`.unlearning` unlearns from
them and scores the result.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from datasets import Dataset
from torch import nn

from .. import cache
from ..presets import UnlearningPreset
from ..parallel import prefetch
from ..progress import bar
from ..training import Trained, leave_dataset_out, leave_dataset_out_calls, train
from ..unlearn.datamodels import Datamodel, fit_datamodel, subsets_of_sizes
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
    ``preset.run`` (and notebook 01's noise-floor seeds) load notebook 01's models from the cache
    where the two synthetic presets agree (at ``mini`` notebook 04 fine-tunes 8 epochs, notebook 01 one).
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
    prefetch([(fn, (t, sets, pad_id), {}) for t in everyone for fn in (_scores, _token_scores) if not fn.is_cached(t, sets, pad_id)],
             progress=progress, desc=f"scoring {family}")
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


def set_slices(pop: Population, tokens: bool = False) -> dict[str, slice]:
    """Where each set's examples (or, with ``tokens``, its examples' target tokens) sit in the
    concatenation over ``pop.sets`` that the datamodels are fitted on."""
    first = pop.originals[next(iter(pop.originals))].key
    out, start = {}, 0
    for k, ds in pop.sets.items():
        size = int(pop.scores[first][k][1].sum()) if tokens else len(ds)
        out[k] = slice(start, start + size)
        start += size
    return out


def datamodel_quality(pop: Population, dm: Datamodel) -> pd.DataFrame:
    """How well the datamodel predicts the oracles it never saw, per forget set and group.

    Compares the predicted margin change of removing the forget set (``-coef``) with the observed
    change (mean over seeds of oracle minus original margin), over evaluated examples: Pearson r,
    mean absolute error, and the mean absolute observed change (the scale to beat).
    """
    sl = set_slices(pop)
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


__all__ = [
    "GROUPS", "Population", "build_population", "datamodel_quality", "fit_population_datamodel", "population",
    "set_slices",
]
