"""What every experiment shares: the project tokenizer, the pretrained base model, cached attribution.

Each function takes a preset (``untrac.presets``) and returns models or :class:`Influence`
results; every expensive artefact is cached (``untrac.cache``), so notebooks share them and a
re-run (or a run after an interruption) recomputes nothing already done.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from datasets import Dataset
from torch import nn

from .. import cache
from ..data.batching import encode
from ..methods import METHODS, Influence, attribute
from ..methods import get as get_method
from ..models import ModelSpec, build_model, build_tokenizer
from ..parallel import Call
from ..presets import PretrainConfig, TokenizerConfig
from ..training import Trained, train


def corpus_texts(docs_per_corpus: int) -> list[str]:
    """The first ``docs_per_corpus`` documents of every pretraining corpus (tokenizer training)."""
    from ..data.corpora import CORPORA, load_corpus

    return [t for name in CORPORA for t in load_corpus(name, max_docs=docs_per_corpus)["text"]]


def project_tokenizer(spec: ModelSpec, config: TokenizerConfig) -> Any:
    """The hub tokenizer of ``spec``, or a byte-level BPE trained on the mirror's corpora (cached)."""
    if spec.tokenizer is not None:
        return build_tokenizer(spec)
    texts = corpus_texts(config.docs_per_corpus)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    where = cache.entry("tokenizers", cache.fingerprint("tokenizer", spec.vocab_size, config, digest))
    return build_tokenizer(spec, texts, cache_dir=where)


PRETRAIN_VERSION = 1


def pretrained_base(spec: ModelSpec, pretrain: PretrainConfig | None, tokenizer: Any, progress: bool = True) -> nn.Module:
    """The model fine-tuning starts from: a hub checkpoint, or a small LM pretrained on the mirror.

    For ``smoke``/``mini`` the small model is trained as a language model on packed blocks of all
    eight corpora (a stand-in for T5's pretraining; cached like every trained model). An index
    keyed by the initial model, the vocabulary, the config and the mirror's *content* names the
    trained model's entry, so a cached base model loads without re-tokenising the corpora.
    """
    from ..data.mirror import mirror_fingerprint

    model = build_model(spec, tokenizer, seed=0)
    if pretrain is None:
        return model
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()

    def pretrain_now() -> str:
        from ..data.corpora import pretraining_mixture

        blocks = pretraining_mixture(tokenizer, pretrain.block_size, pretrain.blocks_per_corpus, seed=0)
        encoded = {name: encode(ds, tokenizer) for name, ds in blocks.items()}
        return train(model, encoded, pretrain.train, tokenizer.pad_token_id, progress=progress).key

    index = cache.fingerprint("pretrained", PRETRAIN_VERSION, model, vocab, pretrain, mirror_fingerprint())
    key = cache.memoise("pretrained", index, pretrain_now)
    where = cache.entry("models", key)
    try:
        cache.verify(where)
    except cache.CorruptEntry as err:  # the model entry went missing or bad: train it again
        cache.discard(cache.entry("pretrained", index), str(err))
        key = cache.memoise("pretrained", index, pretrain_now)
        where = cache.entry("models", key)
    model.load_state_dict(cache.load_tensors(where / "model.pt"))
    return model.eval()


def _attribution(method: str, trained: Trained, train_sets: Mapping[str, Dataset], test_sets: Mapping[str, Dataset],
                 config: Any = None, **settings: Any) -> tuple[Any, Any, str]:
    chosen = get_method(method)
    resolved = chosen.settings_from(config, **settings)
    return chosen, resolved, cache.fingerprint("attribute", chosen.name, chosen.version, trained, train_sets, test_sets, resolved)


def attribution_call(method: str, trained: Trained, train_sets: Mapping[str, Dataset], test_sets: Mapping[str, Dataset],
                     pad_id: int, config: Any = None) -> list[Call]:
    """The :func:`cached_attribute` call for :func:`untrac.parallel.prefetch` (none if it is cached,
    or if the method was registered in this process only: worker processes do not know it)."""
    if method not in METHODS:
        return []
    if cache.is_complete(cache.entry("influence", _attribution(method, trained, train_sets, test_sets, config)[2])):
        return []
    return [(cached_attribute, (method, trained, train_sets, test_sets, pad_id), {"progress": False, "config": config})]


def cached_attribute(method: str, trained: Trained, train_sets: Mapping[str, Dataset], test_sets: Mapping[str, Dataset],
                     pad_id: int, progress: bool = True, config: Any = None, **settings: Any) -> Influence:
    """:func:`untrac.attribute` on a trained model, cached under the model, the sets' content, the
    method (name and version) and its typed settings; what the method needs (checkpoints) is
    taken from ``trained``."""
    chosen, resolved, key = _attribution(method, trained, train_sets, test_sets, config, **settings)

    def compute() -> Influence:
        checkpoints = trained.checkpoint_states() if "checkpoints" in chosen.needs else None
        if "checkpoints" in chosen.needs and not checkpoints:
            raise ValueError(f"{method} needs training checkpoints, but {trained.path} has none: train with "
                             "TrainConfig(checkpoint_every=N)")
        return attribute(method, trained.model, train_sets, test_sets, pad_id, config=resolved, checkpoints=checkpoints,
                         progress=progress)

    return cache.memoise("influence", key, compute, producer="attribute", method=chosen.name)


def method_config(preset: Any, method: str, run: int) -> Any:
    """The typed settings of ``method`` in an experiment preset, seeded by the run.

    The unlearning methods take the preset's ``untrac`` / ``untrac_inv`` configs; every other
    method its defaults with the preset's ``baselines[method]`` overrides. Settings with a ``seed``
    field (unlearning order, Hessian sample) get ``seed=run``.
    """
    own = {"UnTrac": getattr(preset, "untrac", None), "UnTrac-Inv": getattr(preset, "untrac_inv", None)}.get(method)
    config = own if own is not None else get_method(method).settings_from(None, **dict(preset.baselines.get(method, {})))
    if "seed" in {f.name for f in fields(config)}:
        config = replace(config, seed=run)
    return config


def with_seed(config: Any, seed: int) -> Any:
    """``config`` with its ``seed`` replaced."""
    return replace(config, seed=seed)


__all__ = ["attribution_call", "corpus_texts", "project_tokenizer", "pretrained_base", "cached_attribute", "method_config", "with_seed"]
