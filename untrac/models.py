"""Models and tokenizers: a Hugging Face hub name (paper scale) or a small config built in code.

* ``paper`` scale: ``google/t5-xl-lm-adapt`` (Sec. 5.1, fine-tuned) and the OPT-125M architecture
  trained from random initialisation with the OPT-125M tokenizer (Sec. 5.2).
* ``smoke``/``mini``: an OPT-style decoder (or T5) of a few layers built from a config, with a
  byte-level BPE tokenizer trained offline with ``tokenizers`` (no download).

The loss ``L`` of the paper is the mean negative log-likelihood of an example's target tokens;
:func:`example_losses` returns it per example, and a dataset's loss is the mean over examples.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data.batching import IGNORE, batches

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


class ModelTokenizerMismatch(ValueError):
    """The tokenizer produces ids the model's embedding table cannot hold."""


@dataclass(frozen=True)
class ModelSpec:
    """What model to build.

    ``name`` set: a hub model (``pretrained=True`` loads its weights, else its config is
    initialised randomly, as in Sec. 5.2). ``name`` unset: a small ``arch`` model from the sizes
    below. ``tokenizer`` names a hub tokenizer; unset, a byte-level BPE of ``vocab_size`` tokens
    is trained on the texts handed to :func:`build_tokenizer`.
    """

    name: str | None = None
    pretrained: bool = False
    arch: str = "opt"  # "opt" (decoder-only) or "t5" (encoder-decoder)
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    max_positions: int = 1024
    tokenizer: str | None = None
    vocab_size: int = 4096


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Train a byte-level BPE (no download needed) and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tokenizer(spec: ModelSpec, texts: Iterable[str] | None = None, cache_dir: Path | None = None) -> Any:
    """The tokenizer of ``spec``: a hub tokenizer, or a BPE trained on ``texts`` (cached on disk,
    under the entry's lock, so two processes never train it twice)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if spec.tokenizer is not None:
        from .hub import hub_access

        with hub_access(f"the tokenizer {spec.tokenizer!r}"):  # fails fast and clearly when offline
            return AutoTokenizer.from_pretrained(spec.tokenizer)

    def load() -> Any:
        return PreTrainedTokenizerFast(tokenizer_file=str(cache_dir / "tokenizer.json"), **SPECIAL_TOKENS)

    if cache_dir is None:
        if texts is None:
            raise ValueError("a trained tokenizer needs texts to train on (or set ModelSpec.tokenizer)")
        return train_tokenizer(texts, spec.vocab_size)
    from . import cache

    if cache.is_complete(cache_dir):
        try:
            cache.verify(cache_dir)
            return load()
        except (cache.CorruptEntry, OSError, ValueError) as err:
            cache.discard(cache_dir, str(err))
    with cache.locked(cache_dir):
        if not cache.is_complete(cache_dir):
            if texts is None:
                raise ValueError("a trained tokenizer needs texts to train on (or set ModelSpec.tokenizer)")
            with cache.costing() as cost:
                tok = train_tokenizer(texts, spec.vocab_size)
            with cache.atomic_dir(cache_dir) as tmp:
                tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
                cache.seal(tmp, vocab_size=spec.vocab_size, seconds=round(cost.seconds, 3))
        cache.verify(cache_dir)
        return load()


def build_model(spec: ModelSpec, tokenizer: Any, seed: int = 0) -> nn.Module:
    """Build the model of ``spec`` (random init drawn from ``seed``), checked against ``tokenizer``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, OPTConfig, T5Config

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if spec.name is not None:
        from .hub import hub_access

        with hub_access(f"the model {spec.name!r}"):  # fails fast and clearly when offline
            config = AutoConfig.from_pretrained(spec.name)
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_pretrained(spec.name) if spec.pretrained else auto.from_config(config)
    elif spec.arch == "opt":
        config = OPTConfig(
            vocab_size=vocab, hidden_size=spec.d_model, num_hidden_layers=spec.n_layers,
            num_attention_heads=spec.n_heads, ffn_dim=spec.d_ff, max_position_embeddings=spec.max_positions,
            word_embed_proj_dim=spec.d_model, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            layerdrop=0.0, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = AutoModelForCausalLM.from_config(config)
    elif spec.arch == "t5":
        config = T5Config(
            vocab_size=vocab, d_model=spec.d_model, d_kv=spec.d_model // spec.n_heads, d_ff=spec.d_ff,
            num_layers=spec.n_layers, num_heads=spec.n_heads, dropout_rate=0.0,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = AutoModelForSeq2SeqLM.from_config(config)
    else:
        raise ValueError(f"unknown arch {spec.arch!r}; use 'opt' or 't5'")
    check_compatible(model, tokenizer)
    return model


def check_compatible(model: nn.Module, tokenizer: Any) -> None:
    """Raise :class:`ModelTokenizerMismatch` if the tokenizer's ids overflow the embedding table."""
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise ModelTokenizerMismatch(
            f"tokenizer has {len(tokenizer)} tokens but the model embeds only {n_embed}: "
            "build the model with this tokenizer (build_model(spec, tokenizer))"
        )
    if tokenizer.pad_token_id is None:
        raise ModelTokenizerMismatch("the tokenizer has no pad token; set tokenizer.pad_token")


def check_token_ids(model: nn.Module, sets: Mapping[str, Any]) -> None:
    """Raise :class:`ModelTokenizerMismatch` if an encoded dataset holds ids the model cannot embed
    (data encoded with another tokenizer than the model was built for)."""
    import pyarrow.compute as pc

    n_embed = model.get_input_embeddings().num_embeddings
    for name, ds in sets.items():
        if "input_ids" not in ds.column_names or len(ds) == 0:
            continue
        col = ds.select_columns(["input_ids"]).with_format("arrow")[:].column("input_ids")
        top = pc.max(pc.list_flatten(col)).as_py()
        if top is not None and top >= n_embed:
            raise ModelTokenizerMismatch(
                f"dataset {name!r} holds token id {top} but the model embeds only {n_embed} tokens: encode the "
                "data with the tokenizer the model was built with (build_model(spec, tokenizer))"
            )


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def target_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: ``(logits [B, T, V], labels [B, T])`` aligned token by token.

    Decoder-only models: the logits of positions ``0..T-2`` predict the labels of ``1..T-1``
    (shifted by one); encoder-decoder models: the decoder is fed the labels. Positions whose label
    is ``-100`` do not count. The batch moves to the model's device without blocking.
    """
    device = next(model.parameters()).device
    encdec = is_encoder_decoder(model)
    ids = batch["input_ids"].to(device, non_blocking=True)
    mask = batch["attention_mask"]
    if not encdec and mask.device.type == "cpu" and bool(mask.all()):
        # No padding (e.g. batch 1, packed blocks): no mask is the same model input, and spares the
        # model its own all-ones test on the device (a host sync per forward) and the mask tensor.
        mask = None
    else:
        mask = mask.to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    if encdec:
        return model(input_ids=ids, attention_mask=mask, labels=labels).logits, labels
    return model(input_ids=ids, attention_mask=mask).logits[:, :-1], labels[:, 1:]


def example_losses(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-example loss L(z): mean NLL over the example's target tokens (``labels != -100``).

    Works for decoder-only models (logits shifted by one) and encoder-decoder models (labels fed
    to the decoder). Returns a float tensor of shape [batch].
    """
    encdec = is_encoder_decoder(model)
    # Count the target tokens on the batch's own (host) tensors: the empty-example check then
    # costs no host-device synchronisation inside a training or unlearning loop.
    counts = (batch["labels"][:, int(not encdec):] != IGNORE).sum(1)
    if (counts == 0).any():
        raise ValueError("an example has no target tokens (all labels are -100): nothing to score")
    logits, labels = target_logits(model, batch)
    return mean_target_nll(logits, labels, counts)


def mean_target_nll(logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per example, the mean NLL of ``labels`` (``[B, T]``, -100 ignored; ``counts`` targets each)
    under ``logits`` (``[B, T, V]``, aligned by :func:`target_logits`)."""
    counts = counts.to(logits.device, non_blocking=True)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the NLL in full precision under autocast
    # Over flattened [B*T, V] rows: the same loss as cross_entropy(logits.transpose(1, 2), ...), but
    # the class dimension stays contiguous (2-5x faster forward+backward on CPU at our vocab sizes).
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                          reduction="none").view(labels.shape)
    return nll.sum(1) / counts


def batch_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of :func:`example_losses` over the batch: the loss that training and unlearning step on."""
    return example_losses(model, batch).mean()


@torch.no_grad()
def dataset_loss(model: nn.Module, eval_batches: Sequence[Mapping[str, torch.Tensor]]) -> float:
    """L(Z) = mean per-example loss over pre-built batches; forward only, under ``no_grad``."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    n = 0
    for b in eval_batches:
        total += example_losses(model, b).double().sum()
        n += len(b["input_ids"])
    model.train(was_training)
    value = (total / n).item()
    if not math.isfinite(value):
        raise FloatingPointError("evaluation loss is not finite")
    return value


@torch.no_grad()
def exact_match(model: nn.Module, eval_batches: Sequence[Mapping[str, torch.Tensor]]) -> float:
    """Share of examples whose target greedy decoding reproduces exactly: every target token is the
    arg-max of the logits given the prompt and the target tokens before it (teacher forcing). Greedy
    decoding emits the target iff this holds at each of its positions, so one forward pass decides it."""
    was_training = model.training
    model.eval()
    hits, n = 0, 0
    for b in eval_batches:
        logits, labels = target_logits(model, b)
        wrong = (logits.argmax(-1) != labels) & (labels != IGNORE)
        hits += int((~wrong.any(1)).sum())
        n += len(labels)
    model.train(was_training)
    return hits / n


def eval_batches(dataset: Any, tokenizer: Any, model: nn.Module, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed evaluation batches of an encoded dataset, ready for :func:`dataset_loss`."""
    return batches(dataset, batch_size, tokenizer.pad_token_id, is_encoder_decoder(model), by_length=True)


def evaluation_batches(model: nn.Module, sets: Mapping[str, Any], pad_id: int, batch_size: int = 64
                       ) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Every named set cut once into length-bucketed batches (the one "evaluate these sets" helper)."""
    from .data.batching import check_nonempty

    check_token_ids(model, sets)
    for name, ds in sets.items():
        check_nonempty(name, ds)
    return {name: batches(ds, batch_size, pad_id, is_encoder_decoder(model), by_length=True) for name, ds in sets.items()}


def set_losses(model: nn.Module, batched: Mapping[str, Sequence[Mapping[str, torch.Tensor]]]) -> Any:
    """L(Z, theta) of every set of :func:`evaluation_batches` (mean per-example loss), in order."""
    import numpy as np

    return np.array([dataset_loss(model, bs) for bs in batched.values()])
