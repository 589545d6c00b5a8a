"""What each command does: ``untrac methods`` and ``untrac attribute``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .inputs import (OUT_SUFFIXES, TINY_TRAIN_LR, CliError, _padded, _typed, corpus_texts, max_length_of,
                     parse_assignments, read_sets, tiny_spec, unspaced_targets)


# ----------------------------------------------------------------------------- the commands


def method_listing() -> str:
    """Every method ``--method`` takes, with its summary, what it needs and its settings' defaults."""
    from ..methods import available

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

    from .. import methods as methods_mod
    from ..data.batching import encode
    from ..methods import attribute
    from ..hub import HubUnavailable
    from ..models import ModelSpec, build_model, build_tokenizer, is_encoder_decoder
    from ..training import TrainConfig, train

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
        from ..methods.result import PER_EXAMPLE

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
