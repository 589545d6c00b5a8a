"""The command line: ``untrac attribute`` -- which of my training sets made my model say that?

::

    untrac attribute --model facebook/opt-125m \\
        --train web=web.jsonl --train books=books.jsonl --test answers=answers.jsonl \\
        --method UnTrac-Inv --set lr=1e-4 --out influence.csv
    untrac attribute --tiny --train a=a.jsonl --train b=b.jsonl --test t=t.jsonl   # offline plumbing check
    untrac methods                                                                 # methods and settings

(also ``python -m untrac ...`` or ``python -m untrac.cli ...``).  Every data set is a JSON Lines / JSON / CSV / TSV / Parquet /
text file, a directory saved with ``Dataset.save_to_disk`` (or holding data files), or a dataset
name on the Hugging Face hub; its rows have ``prompt`` and ``target`` columns (only the target's
tokens are scored) or a ``text`` column (every token scored).  The result is the tidy frame of
:meth:`untrac.Influence.to_frame` (``method, train, test, influence``), written as CSV or JSON Lines;
``--examples FILE`` adds every training example's score (:meth:`untrac.Influence.example_frame`).

The top of the package: it imports the public API and nothing imports it. Three files:
:mod:`.inputs` (argument values, data sets, the model), :mod:`.commands` (what each command does) and
this one (the parser and :func:`main`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import attribute_command, method_listing
from .inputs import PROG, TINY_TRAIN_LR, CliError, load_table, parse_assignments, parse_named, parse_value, tiny_spec


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
        from ..hub import HubUnavailable
        from ..models import ModelTokenizerMismatch

        if not isinstance(err, (HubUnavailable, ModelTokenizerMismatch, FloatingPointError, ValueError, OSError)):
            raise
        print(f"{PROG} {args.command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


__all__ = ["CliError", "attribute_command", "build_parser", "load_table", "main", "method_listing",
           "parse_assignments", "parse_named", "parse_value", "tiny_spec"]
