"""KLoM — KL divergence Of Margins (Attribute-to-Delete; SPEC section 5).

For one evaluation example, KLoM compares two *distributions over training randomness* of its
margin: the margins it gets from N unlearned models (each unlearned from a differently seeded
original model) and from N oracles (models retrained without the forget set, different seeds).
Both samples are binned into ``bins`` equal-width bins over their *shared* range (the min and max
of the two samples together, after clipping to ``[-clip, clip]``), the empirical bin
probabilities P (unlearned) and Q (oracle) are formed, oracle bins that are empty where P is not
are floored at ``floor`` (then Q is renormalised), and

    KLoM = KL(P || Q) = sum_b P_b log(P_b / Q_b)

(the direction and the defaults 20 bins / floor 1e-5 / clip 100 of the reference implementation,
``data-unlearning-bench``). Identical samples give exactly 0; samples whose histograms do not
overlap give ``log(1 / floor) - H(P)`` (up to 11.5 with the default floor), the ceiling of the metric.

KLoM is reported as percentiles (median, 95th, 99th) over the forget, retain and validation
examples separately. With few models per side (N of 3-8, as on CPU) the histogram is coarse:
use few bins (about N/2) and compare against :func:`noise_floor`, the KLoM that two independent
N-model samples of the *same* distribution get (what a perfect unlearner scores).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

PERCENTILES = (50, 95, 99)


def _as_models_by_examples(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be [n_models, n_examples] (or [n_models]); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite margins")
    return x


def klom(unlearned: np.ndarray, oracles: np.ndarray, bins: int = 20, floor: float = 1e-5,
         clip: float = 100.0) -> np.ndarray:
    """KLoM of every example: KL(unlearned margin histogram || oracle margin histogram).

    ``unlearned`` is ``[N_u, n_examples]`` and ``oracles`` ``[N_o, n_examples]`` (``N_u`` and
    ``N_o`` may differ; a 1-D array is one example). Returns ``[n_examples]`` (float, >= 0).
    """
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    if not 0 < floor < 1:
        raise ValueError(f"floor must be in (0, 1), got {floor}")
    p = np.clip(_as_models_by_examples(unlearned, "unlearned"), -clip, clip)
    q = np.clip(_as_models_by_examples(oracles, "oracles"), -clip, clip)
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"unlearned covers {p.shape[1]} examples, oracles {q.shape[1]}")
    lo = np.minimum(p.min(0), q.min(0))
    hi = np.maximum(p.max(0), q.max(0))
    width = np.where(hi > lo, hi - lo, 1.0)  # all values equal: one occupied bin, KL = 0

    def histogram(x: np.ndarray) -> np.ndarray:
        # bin index in [0, bins-1]; the maximum falls into the last bin (closed right edge)
        idx = np.clip(np.floor((x - lo) / width * bins).astype(int), 0, bins - 1)
        counts = np.zeros((x.shape[1], bins))
        np.add.at(counts, (np.broadcast_to(np.arange(x.shape[1]), x.shape), idx), 1.0)
        return counts / x.shape[0]

    P, Q = histogram(p), histogram(q)
    Q = np.where(P > 0, np.maximum(Q, floor), Q)  # floor only where it matters: P > 0 but Q empty
    Q /= Q.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(P > 0, P * np.log(P / Q), 0.0)
    return np.maximum(terms.sum(1), 0.0)


def binned_kl(p_samples: Sequence[float], q_samples: Sequence[float], bins: int = 20, floor: float = 1e-5,
              clip: float = 100.0) -> float:
    """KL(P || Q) between the shared-range histograms of two 1-D samples (one example's KLoM)."""
    return float(klom(np.asarray(p_samples, float)[:, None], np.asarray(q_samples, float)[:, None], bins, floor, clip)[0])


def percentiles(values: np.ndarray, q: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of a KLoM vector (NaN if empty)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {f"p{int(x)}": float("nan") for x in q}
    return {f"p{int(x)}": float(np.percentile(values, x)) for x in q}


def summary(groups: Mapping[str, np.ndarray], q: Sequence[float] = PERCENTILES) -> pd.DataFrame:
    """One row per group (forget / retain / validation): number of examples and KLoM percentiles."""
    return pd.DataFrame([{"group": g, "n": int(np.asarray(v).size), **percentiles(v, q)} for g, v in groups.items()])


def noise_floor(n_models: int, bins: int = 20, floor: float = 1e-5, n_examples: int = 2000, seed: int = 0,
                q: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """KLoM percentiles between two independent ``n_models``-samples of the same Gaussian.

    The score of a perfect unlearner (its models are draws from the oracle distribution) under
    the same number of models and bins: KLoM values at or below it are indistinguishable from
    retraining at this sample size.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_models, n_examples))
    b = rng.standard_normal((n_models, n_examples))
    return percentiles(klom(a, b, bins, floor), q)


__all__ = ["PERCENTILES", "klom", "binned_kl", "percentiles", "summary", "noise_floor"]
