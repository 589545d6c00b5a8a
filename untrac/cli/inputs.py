"""What the command line reads: argument values, data sets (files, directories, hub names), the model."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


PROG = "untrac"
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv",
                 ".parquet": "parquet", ".txt": "text"}
"""File suffix -> the ``datasets.load_dataset`` builder that reads it."""
OUT_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")

TINY_FIELDS = {"arch": "opt", "n_layers": 1, "d_model": 32, "n_heads": 2, "d_ff": 64, "max_positions": 512,
               "vocab_size": 512}
"""The ModelSpec fields of ``--tiny`` (``--config FIELD=VALUE`` overrides any ModelSpec field)."""
TINY_TRAIN_LR = 1e-3
"""The learning rate ``--train-steps`` uses for a ``--tiny`` model (a hub model: TrainConfig's default)."""


class CliError(Exception):
    """A bad argument: the message names it; the command exits with status 2."""


# ----------------------------------------------------------------------------- argument values


def parse_value(text: str) -> Any:
    """A ``--set`` / ``--config`` value: ``none``/``null`` -> None, ``true``/``false`` -> bool,
    integers, floats, JSON lists/objects, ``a,b,c`` -> a tuple of values; else the string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.strip()[:1] in "[{":
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return tuple(value) if isinstance(value, list) else value
    if "," in text:
        return tuple(parse_value(part) for part in text.split(","))
    return text


def parse_assignments(flag: str, items: Sequence[str] | None) -> dict[str, Any]:
    """``["lr=1e-4", "epochs=2"]`` -> ``{"lr": 1e-4, "epochs": 2}``; a bad item names ``flag``."""
    out: dict[str, Any] = {}
    for item in items or ():
        field, sep, value = item.partition("=")
        field = field.strip()
        if not sep or not field or not field.isidentifier():
            raise CliError(f"{flag} {item!r}: expected FIELD=VALUE, e.g. {flag} lr=1e-4")
        out[field] = parse_value(value)
    return out


def _typed(defaults: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """Integers given for float fields become floats (``--set lr=1`` means 1.0)."""
    out = dict(values)
    for name, value in values.items():
        default = getattr(defaults, name, None)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def parse_named(flag: str, text: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(name, path)``; a bare path is named after its file (``web.jsonl`` -> ``web``)."""
    name, sep, where = text.partition("=")
    if not sep:
        where = text.strip()
        base = Path(where.rstrip("/")).name
        name = base[: -len(Path(base).suffix)] if Path(base).suffix.lower() in DATA_SUFFIXES else base
    name, where = name.strip(), where.strip()
    if not name or not where:
        raise CliError(f"{flag} {text!r}: expected NAME=PATH (a name for the set, then its file, directory or "
                       f"hub dataset), e.g. {flag} web=web.jsonl")
    return name, where


# ----------------------------------------------------------------------------- data


def _hub_dataset(flag: str, name: str, where: str, split: str) -> Any:
    import datasets

    from ..hub import HubUnavailable, hub_access

    try:
        with hub_access(f"the dataset {where!r}"):
            return datasets.load_dataset(where, split=split)
    except HubUnavailable as err:
        raise CliError(f"{flag} {name}={where}: no such file or directory, nor a dataset in the local Hugging Face "
                       "cache, and the hub cannot be reached to fetch one of that name") from err
    except Exception as err:  # noqa: BLE001 -- the hub's errors are many; the message says which
        raise CliError(f"{flag} {name}={where}: no such file or directory, nor a loadable hub dataset "
                       f"({type(err).__name__}: {err})") from err


def load_table(flag: str, name: str, where: str, split: str = "train") -> Any:
    """The ``datasets.Dataset`` behind one ``--train`` / ``--test`` argument (unencoded)."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(where).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        looks_local = suffix in DATA_SUFFIXES or where.startswith((".", "/", "~")) or where.count("/") > 1
        if looks_local:
            raise CliError(f"{flag} {name}={where}: file not found")
        return _hub_dataset(flag, name, where, split)
    try:
        if path.is_dir():
            if any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
                loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.DatasetDict):
                    if split not in loaded:
                        raise CliError(f"{flag} {name}={where}: no split {split!r}; it has {sorted(loaded)} "
                                       f"(choose one with --split)")
                    loaded = loaded[split]
                return loaded
            return datasets.load_dataset(str(path), split=split)
        builder = DATA_SUFFIXES.get(suffix)
        if builder is None:
            raise CliError(f"{flag} {name}={where}: unknown file type {suffix or '(none)'!r}; use one of "
                           f"{', '.join(DATA_SUFFIXES)}, a saved dataset directory or a hub dataset name")
        options = {"delimiter": "\t"} if suffix == ".tsv" else {}
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except CliError:
        raise
    except Exception as err:  # noqa: BLE001 -- malformed files raise many types; name the file
        raise CliError(f"{flag} {name}={where}: could not be read ({type(err).__name__}: {err})") from err


def text_columns(flag: str, name: str, where: str, dataset: Any, columns: Mapping[str, str]) -> Any:
    """``dataset`` reduced to ``prompt``/``target`` (a ``text`` column becomes an empty prompt and
    the text as target: every token scored), or kept as is when it holds ``input_ids`` blocks."""
    from datasets import Dataset

    have = dataset.column_names
    if len(dataset) == 0:
        raise CliError(f"{flag} {name}={where}: the dataset is empty")
    if "input_ids" in have:  # pre-tokenised blocks: every token is a target (untrac.encode)
        return dataset.select_columns(["input_ids"] + (["labels"] if "labels" in have else []))
    prompt, target, text = columns["prompt"], columns["target"], columns["text"]
    if prompt in have and target in have:
        rows = {"prompt": dataset[prompt], "target": dataset[target]}
    elif text in have:
        texts = dataset[text]
        rows = {"prompt": [""] * len(texts), "target": texts}
    else:
        raise CliError(f"{flag} {name}={where}: needs {prompt!r} and {target!r} columns, or a {text!r} column; it "
                       f"has {have} (pick columns with --prompt-column/--target-column/--text-column)")
    for column, values in rows.items():
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise CliError(f"{flag} {name}={where}: row {i + 1}: the {column} is {value!r}, not text")
    return Dataset.from_dict(rows)


def read_sets(flag: str, items: Sequence[str], split: str, columns: Mapping[str, str]) -> dict[str, Any]:
    """``{name: Dataset with prompt/target}`` of every ``--train`` / ``--test`` argument, in order."""
    out: dict[str, Any] = {}
    for item in items:
        name, where = parse_named(flag, item)
        if name in out:
            raise CliError(f"{flag} {item!r}: the name {name!r} is given twice; name each set once")
        out[name] = text_columns(flag, name, where, load_table(flag, name, where, split), columns)
    return out


def corpus_texts(*groups: Mapping[str, Any]) -> list[str]:
    """The texts a ``--tiny`` tokenizer is trained on: prompt + target of every example, set by set
    (training sets, then test sets, in the order given)."""
    return [p + t for group in groups for ds in group.values() if "prompt" in ds.column_names
            for p, t in zip(ds["prompt"], ds["target"])]


def unspaced_targets(dataset: Any) -> int:
    """How many examples have a non-empty prompt and a target that does not start with whitespace."""
    if "prompt" not in dataset.column_names:
        return 0
    return sum(1 for p, t in zip(dataset["prompt"], dataset["target"]) if p and t and not t[0].isspace())


# ----------------------------------------------------------------------------- the model


def tiny_spec(overrides: Mapping[str, Any] | None = None) -> Any:
    """The ModelSpec of ``--tiny``, with ``--config`` overrides (an unknown field names itself)."""
    from ..models import ModelSpec

    fields = [f.name for f in dataclasses.fields(ModelSpec)]
    unknown = sorted(set(overrides or {}) - set(fields))
    if unknown:
        raise CliError(f"--config: ModelSpec has no field {', '.join(map(repr, unknown))}; its fields are {fields}")
    return ModelSpec(**{**TINY_FIELDS, **(overrides or {})})


def _padded(tokenizer: Any) -> Any:
    """A hub tokenizer without a pad token pads with its end-of-text token (padding is never scored)."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def max_length_of(model: Any) -> int | None:
    """The longest input a decoder-only model takes (its position table), or None."""
    from ..models import is_encoder_decoder

    if is_encoder_decoder(model):
        return None
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
