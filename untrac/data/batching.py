"""Text examples -> token ids with a target mask -> padded batches.

Every dataset the package trains, unlearns or evaluates on is first brought to one shape: a
``datasets.Dataset`` with columns ``input_ids`` and ``labels`` (``-100`` marks tokens whose loss
does not count). Two model families are supported:

* decoder-only (OPT): ``input_ids = prompt + target (+ eos)``; ``labels`` copies the target part
  and masks the prompt, so the loss is the answer's loss alone (paper Sec. 5.2, TruthfulQA);
* encoder-decoder (T5): ``input_ids = prompt``; ``labels = target (+ eos)`` (paper Sec. 5.1).

Pre-packed pretraining blocks (column ``input_ids`` only) are all target.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import contextlib
import numbers

import numpy as np
import torch
from datasets import Dataset
from datasets.utils import logging as ds_logging

IGNORE = -100


@contextlib.contextmanager
def quiet_maps() -> Iterator[None]:
    """Silence ``datasets``' per-map progress bars (they drown notebooks in tiny bars)."""
    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def check_nonempty(name: str, dataset: Dataset) -> None:
    """Raise a clear error for an empty dataset (nothing to train, unlearn or evaluate on)."""
    if len(dataset) == 0:
        raise ValueError(f"dataset {name!r} is empty")


def check_batch_size(batch_size: Any) -> None:
    """Raise a clear error unless ``batch_size`` is a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def encode(
    dataset: Dataset,
    tokenizer: Any,
    encoder_decoder: bool = False,
    max_length: int | None = None,
    add_eos: bool = True,
) -> Dataset:
    """Tokenise a text dataset (``prompt``/``target`` columns) or label a block dataset.

    Returns a dataset with ``input_ids`` and ``labels`` (other columns, e.g. ``subset``, kept).
    ``max_length`` truncates from the left of the prompt so the target survives.
    """
    check_nonempty("encode input", dataset)
    if "labels" in dataset.column_names:
        return dataset
    if "input_ids" in dataset.column_names:  # packed blocks: every token is a target
        with quiet_maps():
            return dataset.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    missing = {"prompt", "target"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"text datasets need 'prompt' and 'target' columns; missing {sorted(missing)}")
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    bos = [] if encoder_decoder or tokenizer.bos_token_id is None else [tokenizer.bos_token_id]

    def _encode(batch: dict[str, list]) -> dict[str, list]:
        prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        targets = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
        out_ids, out_labels = [], []
        for p, t in zip(prompts, targets):
            t = t + eos
            if encoder_decoder:
                ids, labels = p + eos, t
            else:
                ids, labels = bos + p + t, [IGNORE] * (len(bos) + len(p)) + t
            if max_length is not None and len(ids) > max_length:
                cut = len(ids) - max_length
                ids = ids[cut:]
                labels = labels if encoder_decoder else labels[cut:]
            out_ids.append(ids)
            out_labels.append(labels)
        return {"input_ids": out_ids, "labels": out_labels}

    with quiet_maps():
        return dataset.map(_encode, batched=True, remove_columns=["prompt", "target"])


def collate(rows: list[Mapping[str, list[int]]], pad_id: int, encoder_decoder: bool = False) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (with ``pad_id``) and ``labels`` (with -100) into tensors."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    lwidth = max(len(r["labels"]) for r in rows) if encoder_decoder else width
    labels = torch.full((len(rows), lwidth), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def example_rows(dataset: Dataset) -> list[dict[str, list[int]]]:
    """Every example as an ``{"input_ids", "labels"}`` row, in order (what :func:`collate` pads)."""
    cols = dataset.select_columns(["input_ids", "labels"])[:]
    return [{"input_ids": a, "labels": b} for a, b in zip(cols["input_ids"], cols["labels"])]


def batches(
    dataset: Dataset,
    batch_size: int,
    pad_id: int,
    encoder_decoder: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    by_length: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Cut an encoded dataset into padded batches.

    ``shuffle`` permutes with a seeded generator (deterministic); ``by_length`` sorts examples by
    length first (length bucketing for forward-only evaluation: no padding waste).
    """
    check_nonempty("batches input", dataset)
    check_batch_size(batch_size)
    rows = example_rows(dataset)
    order = np.arange(len(rows))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(rows))
    elif by_length:
        order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
    return [
        collate([rows[i] for i in order[s : s + batch_size]], pad_id, encoder_decoder)
        for s in range(0, len(rows), batch_size)
    ]


def epoch_stream(
    dataset: Dataset, batch_size: int, pad_id: int, encoder_decoder: bool, seed: int, start_step: int = 0,
    with_indices: bool = False,
) -> Iterator[Any]:
    """An endless stream of shuffled batches, epoch after epoch (epoch e shuffled by ``seed + e``).

    Batches never straddle two epochs (the last, smaller batch of an epoch is kept). Starting at
    ``start_step`` yields exactly the batches a fresh stream would yield from that step on, which
    makes training resumable bit-for-bit. ``with_indices``: yield ``(batch, rows)`` pairs, ``rows``
    the indices of the batch's examples in ``dataset`` (to look up per-example values).
    """
    check_nonempty("training stream input", dataset)
    check_batch_size(batch_size)  # checked here, at the call: a generator would only check at the first batch
    return _epoch_stream(dataset, batch_size, pad_id, encoder_decoder, seed, start_step, with_indices)


def _epoch_stream(
    dataset: Dataset, batch_size: int, pad_id: int, encoder_decoder: bool, seed: int, start_step: int,
    with_indices: bool,
) -> Iterator[Any]:
    data = dataset.select_columns(["input_ids", "labels"])
    n = len(data)
    per_epoch = -(-n // batch_size)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        order = np.random.default_rng(seed + epoch).permutation(n)
        for s in range(skip * batch_size, n, batch_size):
            idx = order[s : s + batch_size]
            chunk = data[idx]
            rows = [{"input_ids": a, "labels": b} for a, b in zip(chunk["input_ids"], chunk["labels"])]
            batch = collate(rows, pad_id, encoder_decoder)
            yield (batch, idx) if with_indices else batch
        epoch, skip = epoch + 1, 0
