"""Two reference rows at no cost: what a correlation with the truth is worth when no model is asked.

* **Overlap (TF-IDF)**: how alike the *text* of training set k and test set s is, ignoring the
  model: the cosine of their TF-IDF vectors over token ids. Each set is one document of raw token
  counts (every token of every example); the idf is taken over the K training sets, smoothed as in
  scikit-learn, ``ln((1 + K) / (1 + df)) + 1``; the test set's vector uses the same idf. If this
  row scores like UnTrac, the leave-dataset-out truth may mostly measure shared vocabulary.
* **Random**: standard normal scores drawn from ``seed`` (the run): a method that knows nothing.
  Its correlations average 0; their spread over runs is what chance alone gives on K points.

Neither reads the model, so both cost no forward or backward pass.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from .registry import Method, Problem
from .result import Cost, Influence, measure


@dataclass(frozen=True)
class OverlapSettings:
    """Overlap (TF-IDF) has no settings: the weighting is fixed (see the module docstring)."""


@dataclass(frozen=True)
class RandomSettings:
    """Random: the scores are standard normal draws from ``seed``."""

    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"RandomSettings.seed must be an int >= 0, not {self.seed!r}")


def _ids(ds: Dataset) -> np.ndarray:
    """Every token id of every example of ``ds``, flat."""
    return np.fromiter((t for example in ds["input_ids"] for t in example), dtype=np.int64)


def _counts(ids: list[np.ndarray], vocab: int) -> np.ndarray:
    return np.stack([np.bincount(a, minlength=vocab)[:vocab] for a in ids]).astype(float) if ids else np.zeros((0, vocab))


def token_counts(sets: Mapping[str, Dataset], vocab: int) -> np.ndarray:
    """``[len(sets), vocab]``: how often each token id occurs in each set (all tokens of all examples)."""
    return _counts([_ids(ds) for ds in sets.values()], vocab)


def tfidf_cosine(train_counts: np.ndarray, test_counts: np.ndarray) -> np.ndarray:
    """``[K, S]`` cosines of TF-IDF vectors; the idf over the K training documents (smoothed)."""
    k = len(train_counts)
    df = (train_counts > 0).sum(0)
    idf = np.log((1 + k) / (1 + df)) + 1
    a, b = train_counts * idf, test_counts * idf
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    return np.divide(a @ b.T, norms, out=np.zeros((len(a), len(b))), where=norms > 0)


def _overlap(problem: Problem, settings: OverlapSettings) -> Influence:
    cost = Cost()
    with measure(cost):
        train = [_ids(ds) for ds in problem.train_sets.values()]
        test = [_ids(ds) for ds in problem.test_sets.values()]
        # ids no set uses are zero columns: they change neither the idf of the others nor any cosine
        vocab = 1 + max((int(a.max()) for a in train + test if a.size), default=0)
        values = tfidf_cosine(_counts(train, vocab), _counts(test, vocab))
    return problem.influence("Overlap (TF-IDF)", values, cost, settings)


def _random(problem: Problem, settings: RandomSettings) -> Influence:
    cost = Cost()
    with measure(cost):
        values = np.random.default_rng(settings.seed).standard_normal((len(problem.train_sets), len(problem.test_sets)))
    return problem.influence("Random", values, cost, settings)


METHODS = (
    Method("Overlap (TF-IDF)", OverlapSettings(), _overlap, order=80,
           summary="cosine of the training and test sets' TF-IDF token vectors: text overlap, no model"),
    Method("Random", RandomSettings(), _random, order=90,
           summary="standard normal scores from the run's seed: the chance level of a correlation"),
)
