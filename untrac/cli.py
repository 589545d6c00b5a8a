"""The command line: ``untrac attribute`` -- which of my training sets made my model say that?

::

    untrac attribute --model facebook/opt-125m \\
        --train web=web.jsonl --train books=books.jsonl --test answers=answers.jsonl \\
        --method UnTrac-Inv --set lr=1e-4 --out influence.csv
    untrac attribute --tiny --train a=a.jsonl --train b=b.jsonl --test t=t.jsonl   # offline plumbing check
    untrac methods                                                                 # methods and settings

(also ``python -m untrac.cli ...``).  Every data set is a JSON Lines / JSON / CSV / TSV / Parquet /
text file, a directory saved with ``Dataset.save_to_disk`` (or holding data files), or a dataset
name on the Hugging Face hub; its rows have ``prompt`` and ``target`` columns (only the target's
tokens are scored) or a ``text`` column (every token scored).  The result is the tidy frame of
:meth:`untrac.Influence.to_frame` (``method, train, test, influence``), written as CSV or JSON Lines;
``--examples FILE`` adds every training example's score (:meth:`untrac.Influence.example_frame`).

The top of the package: it imports the public API and nothing imports it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
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

    from .hub import HubUnavailable, hub_access

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
    from .models import ModelSpec

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
    from .models import is_encoder_decoder

    if is_encoder_decoder(model):
        return None
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


# ----------------------------------------------------------------------------- the commands


def method_listing() -> str:
    """Every method ``--method`` takes, with its summary, what it needs and its settings' defaults."""
    from .methods import available

    lines = []
    for method in available().values():
        lines.append(f"{method.name}" + (f"  -- {method.summary}" if method.summary else ""))
        if method.needs:
            lines.append(f"    needs: {', '.join(method.needs)}"
                         + (" (the command trains the model first: add --train-steps N)"
                            if "checkpoints" in method.needs else ""))
        lines.append(f"    settings ({method.settings_type.__name__}), set with --set FIELD=VALUE:")
        for field in method.fields():
            lines.append(f"      {field} = {getattr(method.defaults, field)!r}")
    return "\n".join(lines)


def _check_out(flag: str, path: str | None) -> Path | None:
    if path is None:
        return None
    out = Path(path).expanduser()
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise CliError(f"{flag} {path}: unknown output type {out.suffix or '(none)'!r}; end the name with "
                       f"{', '.join(OUT_SUFFIXES)}")
    if out.is_dir():
        raise CliError(f"{flag} {path}: is a directory; give a file name")
    return out


def write_frame(frame: Any, path: Path) -> None:
    """``frame`` as CSV (``.csv``), JSON Lines (``.jsonl``/``.ndjson``) or a JSON list (``.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:  # json.dumps writes floats exactly (shortest round-trip repr); pandas' to_json rounds to 15 digits
        records = [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
                   for row in frame.to_dict("records")]
        if suffix == ".json":
            text = json.dumps(records, indent=1) + "\n"
        else:
            text = "".join(json.dumps(r) + "\n" for r in records)
        path.write_text(text, encoding="utf-8")


def summary_table(result: Any) -> str:
    """The influence as a small table: one row per training set, one column per test set."""
    frame = result.to_frame().pivot(index="train", columns="test", values="influence")
    frame = frame.loc[result.train_names, result.test_names]
    frame.columns.name = frame.index.name = None
    return frame.to_string(float_format=lambda v: f"{v: .4g}")


def attribute_command(args: argparse.Namespace) -> int:
    import torch

    from . import methods as methods_mod
    from .data.batching import encode
    from .methods import attribute
    from .hub import HubUnavailable
    from .models import ModelSpec, build_model, build_tokenizer, is_encoder_decoder
    from .training import TrainConfig, train

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    # every argument is checked before anything is loaded or trained
    if args.model is None and not args.tiny and not args.config:
        raise CliError("--model is required: a hub model name or a local directory of a causal LM "
                       "(or --tiny for an untrained tiny model that only checks the plumbing)")
    if args.model is not None and (args.tiny or args.config):
        raise CliError("--model and --tiny/--config exclude each other: pick a real model or the tiny one")
    if not args.train:
        raise CliError("--train is required: give at least one training set as NAME=PATH")
    if not args.test:
        raise CliError("--test is required: give at least one test set as NAME=PATH")
    try:
        method = methods_mod.get(args.method)
    except ValueError as err:
        raise CliError(f"--method: {err} (untrac methods lists them with their settings)") from err
    settings = _typed(method.defaults, parse_assignments("--set", args.set))
    try:
        method.settings_from(None, **settings)
    except (ValueError, TypeError) as err:
        raise CliError(f"--set: {err}") from err
    overrides = parse_assignments("--config", args.config)
    train_overrides = parse_assignments("--train-set", args.train_set)
    if train_overrides and args.train_steps is None:
        raise CliError("--train-set needs --train-steps N (how many steps to train before attributing)")
    needs_checkpoints = "checkpoints" in method.needs
    if needs_checkpoints and args.train_steps is None:
        raise CliError(f"--method {method.name} needs the checkpoints of a training run: add --train-steps N "
                       "(the model is trained first and a checkpoint kept every N/4 steps)")
    if needs_checkpoints and args.no_cache:
        raise CliError(f"--method {method.name} reads its checkpoints from the cache: drop --no-cache")
    train_config = None
    if args.train_steps is not None:
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        unknown = sorted(set(train_overrides) - set(fields))
        if unknown:
            raise CliError(f"--train-set: TrainConfig has no field {', '.join(map(repr, unknown))}; its fields are "
                           f"{fields}")
        base: dict[str, Any] = {"lr": TINY_TRAIN_LR} if args.model is None else {}
        if needs_checkpoints:
            base["checkpoint_every"] = max(1, args.train_steps // 4)
        try:
            train_config = TrainConfig(**_typed(TrainConfig(steps=1), {**base, **train_overrides,
                                                                       "steps": args.train_steps}))
        except (ValueError, TypeError) as err:
            raise CliError(f"--train-steps/--train-set: {err}") from err
    if args.examples is not None:
        from .methods.result import PER_EXAMPLE

        builtin = {m.name for m in methods_mod.builtin()}
        with_scores = [m.name for m in methods_mod.available().values()
                       if "per_example" in m.fields() and (m.name in PER_EXAMPLE or m.name not in builtin)]
        if method.name not in with_scores:
            raise CliError(f"--examples: {method.name} scores whole sets only; per-example scores come from {with_scores}")
        if settings.get("per_example") is False:
            raise CliError("--examples needs per-example scores: drop --set per_example=false")
        settings["per_example"] = True
    examples_out = _check_out("--examples", args.examples)
    out = _check_out("--out", args.out)
    trajectory_out = _check_out("--trajectory", args.trajectory)
    columns = {"prompt": args.prompt_column, "target": args.target_column, "text": args.text_column}

    train_raw = read_sets("--train", args.train, args.split, columns)
    test_raw = read_sets("--test", args.test, args.split, columns)
    clash = sorted(set(train_raw) & set(test_raw))
    if clash:
        raise CliError(f"--test: the names {clash} are also training sets; name test sets differently")
    for flag, group in (("--train", train_raw), ("--test", test_raw)):
        for name, ds in group.items():
            n = unspaced_targets(ds)
            if n:
                say(f"note: {flag} {name}: {n} of {len(ds)} targets do not start with a space; prompt and target "
                    "are tokenised separately, so ' Paris' (the usual form) and 'Paris' score differently")

    # the model
    if args.model is not None:
        local = Path(args.model).expanduser()
        if local.is_dir() and not (local / "config.json").is_file():
            raise CliError(f"--model {args.model}: a directory without config.json; save a model there with "
                           "model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
        if not local.exists() and (args.model.startswith((".", "/", "~")) or args.model.count("/") > 1):
            raise CliError(f"--model {args.model}: no such directory")
        spec = ModelSpec(name=args.model, pretrained=True, tokenizer=args.tokenizer or args.model)
        say(f"loading {args.model} ...")
        try:
            tokenizer = build_tokenizer(spec)
            model = build_model(spec, _padded(tokenizer), seed=args.seed)
        except HubUnavailable as err:
            where = f"--model {args.model}" + (f" / --tokenizer {args.tokenizer}" if args.tokenizer else "")
            raise CliError(f"{where}: not a local directory nor in the local Hugging Face cache, and the hub cannot "
                           "be reached to download it; give a directory saved with save_pretrained, or try --tiny "
                           "offline") from err
    else:
        spec = tiny_spec(overrides)
        texts = corpus_texts(train_raw, test_raw)
        if spec.tokenizer is None and not texts:
            raise CliError("--tiny trains its tokenizer on the prompts and targets, but every set is pre-tokenised "
                           "(input_ids): use --model, or --config tokenizer=NAME")
        tokenizer = build_tokenizer(spec, texts=texts)
        model = build_model(spec, tokenizer, seed=args.seed)
        say(f"built a tiny {spec.arch} model ({spec.n_layers} layer(s), d={spec.d_model}, vocabulary {len(tokenizer)}) "
            + (f", to be trained {args.train_steps} steps" if args.train_steps else
               " -- UNTRAINED: its influences only check the plumbing"))
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)

    encdec, max_length = is_encoder_decoder(model), args.max_length or max_length_of(model)
    train_sets = {k: encode(v, tokenizer, encoder_decoder=encdec, max_length=max_length) for k, v in train_raw.items()}
    test_sets = {k: encode(v, tokenizer, encoder_decoder=encdec, max_length=max_length) for k, v in test_raw.items()}

    checkpoints = None
    if train_config is not None:
        say(f"training {train_config.steps} steps on the union of {', '.join(train_sets)} ...")
        trained = train(model, train_sets, train_config, tokenizer.pad_token_id, use_cache=not args.no_cache,
                        progress=not args.quiet)
        model = trained.model
        if needs_checkpoints:
            checkpoints = trained.checkpoint_states()

    say(f"running {method.name} ...")
    result = attribute(method.name, model, train_sets, test_sets, tokenizer.pad_token_id, checkpoints=checkpoints,
                       progress=not args.quiet, **settings)

    frame = result.to_frame()
    if out is not None:
        write_frame(frame, out)
    if trajectory_out is not None:
        if result.trajectory is None:
            say(f"note: {method.name} keeps no trajectory (for UnTrac / UnTrac-Inv: --set eval_every=N); "
                f"{trajectory_out} not written")
        else:
            write_frame(result.trajectory_frame(), trajectory_out)
    if examples_out is not None:
        write_frame(example_texts(result.example_frame(), train_raw), examples_out)
    print(f"{method.name} influence (rows: training sets, columns: test sets; positive = unlearning or removing "
          "the training set raises the test loss)")
    print(summary_table(result))
    print(f"{result.cost.seconds:.1f} s, {result.cost.forward_examples} forward and {result.cost.backward_examples} "
          "backward example passes" + (f"; wrote {out}" if out is not None else ""))
    if examples_out is not None:
        for test_name in result.test_names:
            top = result.top_examples(test_name, k=3, train_sets=train_raw)
            print(f"training examples with the highest influence on {test_name!r}:")
            for row in top.itertuples():
                print(f"  {row.score: .4g}  {row.train}[{row.index}]  {_clip(getattr(row, 'text', ''), 70)!r}")
        print(f"wrote every example's score to {examples_out}")
    return 0


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def example_texts(frame: Any, raw: Mapping[str, Any]) -> Any:
    """The per-example frame with each training example's text (prompt + target, or its text)."""
    texts = {name: [p + t for p, t in zip(ds["prompt"], ds["target"])] if "prompt" in ds.column_names
             else [""] * len(ds) for name, ds in raw.items()}
    return frame.assign(text=[texts[n][i] for n, i in zip(frame["train"], frame["index"])])


# ----------------------------------------------------------------------------- the parser

ATTRIBUTE_HELP = """\
Which of your training sets made the model say what the test sets say? Estimates the influence of each
training set (--train) on each test set (--test) with an attribution method (default UnTrac-Inv:
unlearn the test set, see how much each training set's loss rises). Positive influence: unlearning or
removing the training set raises the test set's loss.

Data (--train/--test NAME=PATH, repeat the flag for each set): a .jsonl/.json/.csv/.tsv/.parquet/.txt
file, a directory saved with datasets' save_to_disk (or holding data files), or a Hugging Face hub
dataset name. Rows have two text columns, "prompt" and "target": only the target's tokens are scored
(the model's loss on the answer given the prompt). Targets conventionally start with a space
({"prompt": "The capital of France is", "target": " Paris"}), because prompt and target are
tokenised separately. A row with a single "text" column is scored on every token (an empty prompt).
"""

ATTRIBUTE_EPILOG = """\
examples:
  # two training sets, one test set, a hub model (any causal LM or encoder-decoder, or a local dir)
  untrac attribute --model facebook/opt-125m --train web=web.jsonl --train books=books.jsonl \\
      --test answers=answers.jsonl --method UnTrac-Inv --set lr=1e-4 --out influence.csv

  # offline, no download: a tiny untrained model checks the plumbing in seconds
  untrac attribute --tiny --train a=a.jsonl --train b=b.jsonl --test t=t.jsonl --out /tmp/check.csv

  # ... or train it on the union of the training sets first (cached under UNTRAC_CACHE)
  untrac attribute --tiny --train-steps 200 --train a=a.jsonl --train b=b.jsonl --test t=t.jsonl

  # which training examples? score each one (UnTrac-Inv, GradDot, GradCos, TracIn) with its text
  untrac attribute --tiny --train a=a.jsonl --train b=b.jsonl --test t=t.jsonl --examples examples.csv

  untrac methods      # every --method, its settings (--set FIELD=VALUE) and their defaults

a.jsonl holds one JSON object a line:  {"prompt": "What comes after 41?", "target": " 42"}
output: one row per (training set, test set): method,train,test,influence (.csv, .jsonl or .json)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="untrac: which training data made my language model say that? (UnTrac / UnTrac-Inv, "
                    "Isonuma & Titov, ACL 2024)",
        epilog="run 'untrac attribute --help' for the options and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list-methods", action="store_true", help="list the attribution methods and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    att = commands.add_parser("attribute", help="influence of training sets on test sets, written as a table",
                              description=ATTRIBUTE_HELP, epilog=ATTRIBUTE_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    commands.add_parser("methods", help="list the attribution methods with their settings and defaults",
                        description="List every --method of 'untrac attribute' with its settings and defaults.")

    data = att.add_argument_group("data")
    data.add_argument("--train", action="append", metavar="NAME=PATH",
                      help="a training set (repeat for each); PATH: file, saved dataset dir or hub dataset name")
    data.add_argument("--test", action="append", metavar="NAME=PATH", help="a test set (repeat for each)")
    data.add_argument("--split", default="train", help="the split of hub datasets and saved DatasetDicts "
                                                       "(default: %(default)s)")
    data.add_argument("--prompt-column", default="prompt", metavar="COL", help="default: %(default)s")
    data.add_argument("--target-column", default="target", metavar="COL", help="default: %(default)s")
    data.add_argument("--text-column", default="text", metavar="COL",
                      help="used when there is no prompt/target pair: every token scored (default: %(default)s)")
    data.add_argument("--max-length", type=int, metavar="N",
                      help="cut longer examples from the left (default: the model's context length)")

    mdl = att.add_argument_group("model")
    mdl.add_argument("--model", metavar="NAME_OR_PATH",
                     help="a Hugging Face hub model name or a local directory (from_pretrained), loaded with "
                          "its weights and tokenizer")
    mdl.add_argument("--tokenizer", metavar="NAME_OR_PATH", help="another tokenizer for --model")
    mdl.add_argument("--tiny", action="store_true",
                     help="instead of --model: a 1-layer OPT built from a config, with a BPE tokenizer trained on "
                          "your prompts and targets; no download. UNTRAINED unless --train-steps: its numbers "
                          "only show that the plumbing works")
    mdl.add_argument("--config", action="append", metavar="FIELD=VALUE",
                     help="with --tiny (implied): override a ModelSpec field, e.g. --config n_layers=2 "
                          "--config d_model=64")
    mdl.add_argument("--train-steps", type=int, metavar="N",
                     help="first train the model N steps on the union of the training sets (untrac.train, "
                          f"AdamW, batch 8; lr {TINY_TRAIN_LR:g} for --tiny, else 5e-5)")
    mdl.add_argument("--train-set", action="append", metavar="FIELD=VALUE",
                     help="a TrainConfig field for --train-steps, e.g. --train-set lr=1e-4 --train-set batch_size=16")
    mdl.add_argument("--seed", type=int, default=0, help="seed of a randomly initialised model (default: 0)")
    mdl.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")

    how = att.add_argument_group("method and output")
    how.add_argument("--method", default="UnTrac-Inv",
                     help="the attribution method, e.g. UnTrac, UnTrac-Inv, GradDot, TracIn, 'HIF (LiSSA)' "
                          "(default: %(default)s; 'untrac methods' lists them all with their settings)")
    how.add_argument("--set", action="append", metavar="FIELD=VALUE",
                     help="a setting of the method (repeat), e.g. --set lr=1e-4 --set epochs=3; values: "
                          "numbers, true/false, none, a,b lists")
    how.add_argument("--out", metavar="FILE", help="write the influences (.csv, .jsonl or .json)")
    how.add_argument("--examples", metavar="FILE",
                     help="also score every training example (--set per_example=true; UnTrac-Inv, GradDot, GradCos, "
                          "TracIn) and write one row per (training example, test set) with its text")
    how.add_argument("--trajectory", metavar="FILE",
                     help="also write the influence at every evaluation step (UnTrac/UnTrac-Inv with "
                          "--set eval_every=N)")
    how.add_argument("--no-cache", action="store_true", help="do not cache the --train-steps model")
    how.add_argument("--quiet", "-q", action="store_true", help="no progress bars or notes (errors still print)")
    how.add_argument("--list-methods", action="store_true", help="list the methods and their settings, and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``untrac COMMAND ...``; returns the exit status (0 ok, 1 failed, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_methods or args.command == "methods":
        try:
            print(method_listing())
        except BrokenPipeError:  # `untrac methods | head`
            sys.stderr.close()
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return attribute_command(args)
    except CliError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 -- a run that fails says why in one line, not a traceback
        from .hub import HubUnavailable
        from .models import ModelTokenizerMismatch

        if not isinstance(err, (HubUnavailable, ModelTokenizerMismatch, FloatingPointError, ValueError, OSError)):
            raise
        print(f"{PROG} {args.command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
