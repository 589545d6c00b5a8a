"""Shared fixtures: a tiny tokenizer, tiny models and tiny synthetic data (float64 where exactness matters)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

MIRROR = os.environ.get("UNTRAC_DATA_DIR")
needs_mirror = pytest.mark.skipif(not MIRROR or not Path(MIRROR).is_dir(), reason="UNTRAC_DATA_DIR (the data mirror) is not set")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own artefact cache; nothing is written to the user's cache."""
    monkeypatch.setenv("UNTRAC_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tokenizer():
    from untrac.models import train_tokenizer

    words = ["What is the number that comes after", "Determine the number that succeeds", "Provide your answer in",
             "numerical form", "words", "the length of", "one two three four five six seven eight nine zero",
             "0 1 2 3 4 5 6 7 8 9", "The quick brown fox jumps over the lazy dog."]
    return train_tokenizer(words * 20, 320)


def tiny_spec(arch: str = "opt"):
    from untrac.models import ModelSpec

    return ModelSpec(arch=arch, n_layers=1, d_model=16, n_heads=2, d_ff=32, max_positions=96)


@pytest.fixture(scope="session")
def synthetic_raw():
    from untrac.data.synthetic import synthetic_task

    if not MIRROR:
        pytest.skip("UNTRAC_DATA_DIR (the data mirror) is not set")
    return synthetic_task("A", 12, seed=0)


@pytest.fixture
def tiny(tokenizer, synthetic_raw):
    """(model in float64, encoded train sets, encoded test sets, pad id)."""
    from untrac.data.batching import encode
    from untrac.models import build_model

    model = build_model(tiny_spec(), tokenizer, seed=0).double()
    enc = {k: encode(v, tokenizer) for k, v in synthetic_raw.items()}
    return model, {k: v for k, v in enc.items() if k != "test"}, {"test": enc["test"]}, tokenizer.pad_token_id
