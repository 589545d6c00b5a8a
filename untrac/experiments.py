"""The paper's experiments as cached functions: one call per notebook step.

Each function takes a preset (``untrac.presets``) and returns models or :class:`Influence`
results; every expensive artefact is cached (``untrac.cache``), so notebooks share them and a
re-run (or a run after an interruption) recomputes nothing already done.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
import torch
from torch import nn
from tqdm.auto import tqdm

from . import cache
from .data.batching import encode
from .data.synthetic import synthetic_task
from .methods import METHODS, Influence, attribute, ground_truth
from .models import ModelSpec, build_model, build_tokenizer, dataset_loss, eval_batches, is_encoder_decoder
from .presets import PretrainConfig, SyntheticPreset, TokenizerConfig
from .training import Trained, leave_dataset_out, train


def corpus_texts(docs_per_corpus: int) -> list[str]:
    """The first ``docs_per_corpus`` documents of every pretraining corpus (tokenizer training)."""
    from .data.corpora import CORPORA, load_corpus

    return [t for name in CORPORA for t in load_corpus(name, max_docs=docs_per_corpus)["text"]]


def project_tokenizer(spec: ModelSpec, config: TokenizerConfig) -> Any:
    """The hub tokenizer of ``spec``, or a byte-level BPE trained on the mirror's corpora (cached)."""
    if spec.tokenizer is not None:
        return build_tokenizer(spec)
    texts = corpus_texts(config.docs_per_corpus)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    where = cache.entry("tokenizers", cache.fingerprint(spec.vocab_size, config, digest))
    return build_tokenizer(spec, texts, cache_dir=where)


def pretrained_base(spec: ModelSpec, pretrain: PretrainConfig | None, tokenizer: Any, progress: bool = True) -> nn.Module:
    """The model fine-tuning starts from: a hub checkpoint, or a small LM pretrained on the mirror.

    For ``smoke``/``mini`` the small model is trained as a language model on packed blocks of all
    eight corpora (a stand-in for T5's pretraining; cached like every trained model).
    """
    model = build_model(spec, tokenizer, seed=0)
    if pretrain is None:
        return model
    from .data.corpora import pretraining_mixture

    # an index from (spec, config, vocabulary, mirror) to the trained model's cache key, so a cached
    # base model loads without re-tokenising the corpora its key is computed from
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    index = cache.entry("pretrained", cache.fingerprint(spec, pretrain, vocab, os.environ.get("UNTRAC_DATA_DIR")))
    if (index / "key.json").exists():
        where = cache.entry("models", cache.load_json(index / "key.json")["key"])
        if (where / "model.pt").exists():
            model.load_state_dict(torch.load(where / "model.pt", map_location="cpu", weights_only=True))
            return model.eval()
    blocks = pretraining_mixture(tokenizer, pretrain.block_size, pretrain.blocks_per_corpus, seed=0)
    encoded = {name: encode(ds, tokenizer) for name, ds in blocks.items()}
    trained = train(model, encoded, pretrain.train, tokenizer.pad_token_id, progress=progress)
    cache.save_json({"key": trained.key}, index / "key.json")
    return trained.model


def synthetic_data(preset: SyntheticPreset, family: str, run: int, tokenizer: Any, model: nn.Module) -> tuple[dict[str, Dataset], dict[str, Dataset], dict[str, Dataset]]:
    """(raw text sets, encoded training sets, encoded test sets) of one run (data seed = run)."""
    raw = synthetic_task(family, preset.n_examples, seed=run)
    enc = {k: encode(v, tokenizer, is_encoder_decoder(model), preset.max_length) for k, v in raw.items()}
    return raw, {k: v for k, v in enc.items() if k != "test"}, {"test": enc["test"]}


def cached_attribute(method: str, trained: Trained, train_sets: Mapping[str, Dataset], test_sets: Mapping[str, Dataset],
                     pad_id: int, progress: bool = True, **settings: Any) -> Influence:
    """:func:`untrac.methods.attribute`, cached under the trained model, the data and the settings."""
    key = cache.fingerprint("attribute", method, trained.key, dict(train_sets), dict(test_sets), settings)

    def compute() -> Influence:
        extra = dict(settings)
        if method == "TracIn":
            extra["checkpoints"] = trained.checkpoint_states()
        return attribute(method, trained.model, train_sets, test_sets, pad_id, progress=progress, **extra)

    return cache.memoise("influence", key, compute)


def synthetic_run(
    preset: SyntheticPreset,
    family: str,
    run: int,
    tokenizer: Any,
    base: nn.Module,
    methods: Sequence[str] = ("UnTrac", "UnTrac-Inv"),
    progress: bool = True,
) -> dict[str, Influence]:
    """One run of Sec. 5.1: fine-tune, leave-dataset-out truth, and the requested methods.

    Run ``r`` draws its data with seed ``r`` and trains with seed ``r``. Returns
    ``{"Ground truth": ..., method: ...}``.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    _, train_sets, test_sets = synthetic_data(preset, family, run, tokenizer, base)
    pad = tokenizer.pad_token_id
    train_cfg = _with_seed(preset.train, run)
    trained, counterfactuals = leave_dataset_out(base, train_sets, train_cfg, pad, progress=progress)
    out = {"Ground truth": ground_truth(trained.model, {k: t.model for k, t in counterfactuals.items()}, test_sets, pad)}
    for method in methods:
        if method in ("UnTrac", "UnTrac-Inv"):
            cfg = _with_seed(preset.untrac if method == "UnTrac" else preset.untrac_inv, run)
            settings: dict[str, Any] = {"config": cfg}
        else:
            settings = dict(preset.baselines.get(method, {}), seed=run)
        out[method] = cached_attribute(method, trained, train_sets, test_sets, pad, progress=progress, **settings)
    return out


def synthetic_setup(preset: SyntheticPreset, progress: bool = True) -> tuple[Any, nn.Module]:
    """The tokenizer and the model fine-tuning starts from (both cached on disk)."""
    tokenizer = project_tokenizer(preset.model, preset.tokenizer)
    return tokenizer, pretrained_base(preset.model, preset.pretrain, tokenizer, progress)


def synthetic_experiment(preset: SyntheticPreset, methods: Sequence[str] = ("UnTrac", "UnTrac-Inv"),
                         progress: bool = True) -> dict[str, list[dict[str, Influence]]]:
    """All runs of both families: ``{family: [run results]}`` (tokenizer and base model shared)."""
    tokenizer, base = synthetic_setup(preset, progress)
    return {
        family: [synthetic_run(preset, family, r, tokenizer, base, methods, progress)
                 for r in tqdm(range(preset.runs), desc=f"family {family}", disable=not progress)]
        for family in preset.families
    }


def synthetic_noise_floor(preset: SyntheticPreset, seeds: Sequence[int] = (0, 1, 2), progress: bool = True) -> pd.DataFrame:
    """Is the ground truth above the noise? Per family, on run 0's data:

    ``seed_std`` — std of the test loss of theta_0 re-trained with other data-order seeds;
    ``truth_std`` — std across the K training sets of the leave-dataset-out influence (seed 0).
    The truth is informative when ``truth_std`` clearly exceeds ``seed_std``.
    """
    tokenizer, base = synthetic_setup(preset, progress)
    pad = tokenizer.pad_token_id
    rows = []
    for family in preset.families:
        _, train_sets, test_sets = synthetic_data(preset, family, 0, tokenizer, base)
        losses = [dataset_loss(train(base, train_sets, _with_seed(preset.train, s), pad, progress=progress).model,
                               eval_batches(test_sets["test"], tokenizer, base)) for s in seeds]
        trained, cfs = leave_dataset_out(base, train_sets, _with_seed(preset.train, 0), pad, progress=progress)
        truth = ground_truth(trained.model, {k: t.model for k, t in cfs.items()}, test_sets, pad).values[:, 0]
        rows.append({"family": family, "seeds": len(seeds), "test_loss_mean": float(np.mean(losses)),
                     "seed_std": float(np.std(losses, ddof=1)), "truth_std": float(np.std(truth, ddof=1)),
                     "truth_min": float(truth.min()), "truth_max": float(truth.max())})
    return pd.DataFrame(rows)


def _with_seed(config: Any, seed: int) -> Any:
    from dataclasses import replace

    return replace(config, seed=seed)


__all__ = ["project_tokenizer", "pretrained_base", "synthetic_data", "synthetic_run", "synthetic_experiment",
           "synthetic_setup", "synthetic_noise_floor",
           "cached_attribute"]
