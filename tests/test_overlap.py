"""The zero-cost reference rows: Overlap (TF-IDF) against a hand computation, Random's seeding."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset

import untrac
from untrac.methods import attribute
from untrac.methods.overlap import RandomSettings, tfidf_cosine, token_counts


def _sets(**docs: list[list[int]]) -> dict[str, Dataset]:
    return {name: Dataset.from_dict({"input_ids": rows, "labels": rows}) for name, rows in docs.items()}


def _by_hand(train: dict[str, list[list[int]]], test: dict[str, list[list[int]]]) -> np.ndarray:
    """TF-IDF cosines from dictionaries, the textbook way (smoothed idf over the training documents)."""
    tf = {name: Counter(t for row in rows for t in row) for name, rows in {**train, **test}.items()}
    k = len(train)
    vocab = set().union(*(tf[n] for n in train))
    idf = {t: math.log((1 + k) / (1 + sum(t in tf[n] for n in train))) + 1 for t in set().union(*tf.values())}
    out = np.zeros((len(train), len(test)))
    for i, a in enumerate(train):
        for j, b in enumerate(test):
            dot = sum(tf[a][t] * tf[b][t] * idf[t] ** 2 for t in vocab)
            na = math.sqrt(sum((c * idf[t]) ** 2 for t, c in tf[a].items()))
            nb = math.sqrt(sum((c * idf[t]) ** 2 for t, c in tf[b].items()))
            out[i, j] = dot / (na * nb) if na and nb else 0.0
    return out


def test_tfidf_cosine_matches_a_hand_computation():
    train = {"a": [[1, 2, 2, 3], [3, 4]], "b": [[5, 6, 6], [1]], "c": [[7, 7, 7, 2]]}
    test = {"x": [[2, 3, 3], [4]], "y": [[6, 9]], "z": [[8]]}
    vocab = 10
    got = tfidf_cosine(token_counts(_sets(**train), vocab), token_counts(_sets(**test), vocab))
    np.testing.assert_allclose(got, _by_hand(train, test), rtol=1e-12)
    assert got[:, 2].tolist() == [0.0, 0.0, 0.0]  # no shared token: 0, not NaN
    same = tfidf_cosine(token_counts(_sets(a=[[1, 2]], b=[[3]]), 5), token_counts(_sets(x=[[2, 1]]), 5))
    np.testing.assert_allclose(same[:, 0], [1.0, 0.0])  # the same bag of tokens: cosine 1


def test_overlap_and_random_through_attribute(tiny):
    model, train_sets, test_sets, pad = tiny
    overlap = attribute("Overlap (TF-IDF)", model, train_sets, test_sets, pad, progress=False)
    assert overlap.values.shape == (len(train_sets), len(test_sets))
    assert np.all((overlap.values >= 0) & (overlap.values <= 1 + 1e-12))
    assert overlap.cost.forward_examples == overlap.cost.backward_examples == 0
    # the same text as a training set scores 1 against it
    name = list(train_sets)[1]
    echo = attribute("Overlap (TF-IDF)", model, train_sets, {"copy": train_sets[name]}, pad, progress=False)
    assert echo.values[1, 0] == pytest.approx(1.0)
    assert echo.values[:, 0].argmax() == 1

    r0 = attribute("Random", model, train_sets, test_sets, pad, progress=False)
    again = attribute("Random", model, train_sets, test_sets, pad, progress=False, seed=0)
    other = attribute("Random", model, train_sets, test_sets, pad, progress=False, seed=1)
    np.testing.assert_array_equal(r0.values, again.values)
    assert not np.array_equal(r0.values, other.values)
    assert r0.config == {"seed": 0}


def test_registered_in_table_order_with_typed_settings():
    names = untrac.methods.METHODS
    assert names[-2:] == ("Overlap (TF-IDF)", "Random")
    with pytest.raises(ValueError, match="seed"):
        RandomSettings(seed=-1)
    with pytest.raises(ValueError, match="has no setting 'damping'"):
        untrac.methods.get("Overlap (TF-IDF)").settings_from(None, damping=0.1)
