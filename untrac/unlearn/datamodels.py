"""Linear datamodels of margins over which training datasets a model saw (Datamodel Matching).

Per example, a linear model of its margin on the 0/1 indicator of which of the K training datasets
a model trained on, fitted over models trained on subsets of the training datasets
(:func:`fit_datamodel`). Its coefficient of a dataset is the predicted effect of training on it:
Datamodel Matching unlearns towards ``current margins - coefficient`` (:meth:`Datamodel.removal_targets`).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def indicators(train_names: Sequence[str], subsets: Sequence[Iterable[str]]) -> np.ndarray:
    """``[n_models, K]`` 0/1 matrix: which of the K training datasets each model saw."""
    names = list(train_names)
    out = np.zeros((len(subsets), len(names)))
    for i, subset in enumerate(subsets):
        for s in subset:
            if s not in names:
                raise ValueError(f"unknown training set {s!r}; training sets are {names}")
            out[i, names.index(s)] = 1.0
    return out


@dataclass
class Datamodel:
    """Per example ``j``: ``output_j(S) ~ intercept_j + sum_k coef_jk 1[k in S]`` (a linear datamodel)."""

    train_names: list[str]
    intercept: np.ndarray  # [n_examples]
    coef: np.ndarray  # [n_examples, K]
    residual_std: np.ndarray | None = None  # [n_examples], in-sample

    def predict(self, included: Iterable[str]) -> np.ndarray:
        """Predicted outputs of a model trained on the datasets ``included``."""
        return self.intercept + self.coef @ indicators(self.train_names, [list(included)])[0]

    def effect(self, name: str) -> np.ndarray:
        """Predicted change of every output from training on ``name`` (its coefficient)."""
        return self.coef[:, self.train_names.index(name)]

    def removal_targets(self, current: np.ndarray, forget: str) -> np.ndarray:
        """Datamodel Matching targets: a full-data model's outputs ``current`` minus the forget set's effect."""
        return np.asarray(current, dtype=np.float64) - self.effect(forget)

    def subset(self, index: Sequence[int] | np.ndarray) -> "Datamodel":
        """The datamodel of the examples at ``index``."""
        idx = np.asarray(index)
        rs = None if self.residual_std is None else self.residual_std[idx]
        return Datamodel(self.train_names, self.intercept[idx], self.coef[idx], rs)


def fit_datamodel(train_names: Sequence[str], subsets: Sequence[Iterable[str]], outputs: np.ndarray,
                  ridge: float = 0.0) -> Datamodel:
    """Least-squares fit of a linear datamodel for every example at once.

    ``subsets[i]`` are the training datasets model ``i`` saw; ``outputs`` is ``[n_models,
    n_examples]`` (margins). ``ridge`` > 0 penalises the coefficients (not the intercept); with
    ``ridge=0`` the design must identify every coefficient (rank K + 1).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    X = np.column_stack([np.ones(len(subsets)), indicators(train_names, subsets)])
    if outputs.shape[0] != X.shape[0]:
        raise ValueError(f"{X.shape[0]} subsets but outputs of {outputs.shape[0]} models")
    if ridge > 0:
        penalty = ridge * np.eye(X.shape[1])
        penalty[0, 0] = 0.0
        theta = np.linalg.solve(X.T @ X + penalty, X.T @ outputs)
    else:
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise ValueError("the subsets do not identify a coefficient per training set (rank-deficient "
                             "design): add subsets, or use ridge > 0")
        theta = np.linalg.lstsq(X, outputs, rcond=None)[0]
    resid = outputs - X @ theta
    dof = max(1, X.shape[0] - X.shape[1])
    return Datamodel(list(train_names), theta[0], theta[1:].T, np.sqrt((resid**2).sum(0) / dof))


def subsets_of_sizes(train_names: Sequence[str], sizes: Iterable[int]) -> list[tuple[str, ...]]:
    """Every subset of the training sets with a size in ``sizes`` (e.g. (2,): the half-subsets)."""
    names = list(train_names)
    return [c for s in sorted(set(sizes)) for c in itertools.combinations(names, s)]


__all__ = ["Datamodel", "fit_datamodel", "indicators", "subsets_of_sizes"]
