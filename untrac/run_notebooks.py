"""Execute the numbered notebooks headless with papermill: ``python -m untrac.run_notebooks``.

Each notebook gets the parameters ``scale`` and ``figures_dir`` (and any ``--param NAME=VALUE``);
the executed copies are kept in ``<figures>/notebooks/`` as the record of the run that produced the
figures, and ``<figures>/run_cost.{csv,md}`` says what each notebook cost: its wall time and, from the
cache's ledger (:func:`untrac.cache.ledger`), every stored result it used with the seconds its
computation took when it was made — what the notebook costs from an empty cache on one core
(:func:`cost_table`). ``00_quickstart`` needs no data mirror; 01-05 read it from ``UNTRAC_DATA_DIR``.
``papermill --help-notebook notebooks/<name>.ipynb`` lists a notebook's parameters with their types.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from . import cache

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(scale: str, figures: Path, only: list[str] | None = None, notebooks: Path = NOTEBOOKS,
        progress: bool = False, parameters: Mapping[str, Any] | None = None) -> list[Path]:
    """Run every ``notebooks/NN_*.ipynb`` (or those whose name starts with an entry of ``only``).

    ``parameters`` are passed to every notebook besides ``scale`` and ``figures_dir`` (a notebook
    without such a parameter still receives it, as papermill does). Progress bars are off unless
    ``progress`` (``UNTRAC_PROGRESS=0`` for the kernels): they would only fill the executed
    notebooks with redraws.
    """
    import papermill

    if not progress:
        os.environ["UNTRAC_PROGRESS"] = "0"
    figures = figures.resolve()
    executed = figures / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    done, costs, given = [], [], os.environ.get(cache.LEDGER_VAR)
    with tempfile.TemporaryDirectory(prefix="untrac-ledger-") as ledgers:
        for nb in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
            if only and not any(nb.name.startswith(o) for o in only):
                continue
            print(f"== {nb.name} (scale={scale})", flush=True)
            out = executed / nb.name
            ledger = Path(ledgers) / f"{nb.stem}.jsonl"
            os.environ[cache.LEDGER_VAR] = str(ledger)  # the kernel and its workers append to it
            start = time.time()
            try:
                papermill.execute_notebook(str(nb), str(out),
                                           parameters={**(parameters or {}), "scale": scale, "figures_dir": str(figures)},
                                           cwd=str(notebooks), kernel_name="python3", progress_bar=False)
            finally:
                os.environ.pop(cache.LEDGER_VAR, None)
                if given is not None:  # the caller's own ledger, if any, is theirs again
                    os.environ[cache.LEDGER_VAR] = given
            costs.append((nb.stem, time.time() - start, start, cache.ledger(ledger)))
            done.append(out)
    if costs:
        write_cost_table(cost_table(costs, scale), figures)
    return done


def cost_table(costs: list[tuple[str, float, float, list[dict[str, Any]]]], scale: str) -> pd.DataFrame:
    """One row per notebook and kind of stored result (trained models, attributions by method, sweep
    cells, ...) from ``(notebook, wall seconds, start time, ledger entries)``: ``entries`` used,
    ``computed`` by this run (written after the notebook started), ``core_seconds`` (their recorded
    computation time, summed: the cost from an empty cache on one core), ``unrecorded`` (entries written
    before results recorded their cost), and ``new_core_seconds`` (entries no earlier notebook of this
    run used: the notebooks' costs add up to the run's)."""
    rows, earlier = [], set()
    for name, wall, start, entries in costs:
        groups: dict[str, list[dict[str, Any]]] = {}
        for e in entries:
            what = e["kind"] if e["kind"] != "influence" or not e.get("what") else f"influence: {e['what']}"
            groups.setdefault(what, []).append(e)
        rows.append({"notebook": name, "scale": scale, "what": "(wall seconds of this run)", "entries": 0,
                     "computed": 0, "core_seconds": round(wall, 1), "unrecorded": 0, "new_core_seconds": None})
        for what, group in sorted(groups.items()):
            seconds = [float(e["seconds"] or 0) for e in group]
            new = [float(e["seconds"] or 0) for e in group if (e["kind"], e["key"]) not in earlier]
            rows.append({"notebook": name, "scale": scale, "what": what, "entries": len(group),
                         "computed": sum(e["written"] >= start for e in group), "core_seconds": round(sum(seconds), 1),
                         "unrecorded": sum(e["seconds"] is None for e in group), "new_core_seconds": round(sum(new), 1)})
        earlier |= {(e["kind"], e["key"]) for e in entries}
    return pd.DataFrame(rows)


def write_cost_table(frame: pd.DataFrame, figures: Path) -> None:
    """``<figures>/run_cost.{csv,md}``: this run's rows replace the same notebooks' rows of an earlier run."""
    from .report.style import markdown

    csv = figures / "run_cost.csv"
    if csv.is_file():
        old = pd.read_csv(csv)
        frame = pd.concat([old[~old["notebook"].isin(frame["notebook"])], frame], ignore_index=True)
    frame = frame.sort_values("notebook", kind="stable")
    frame.to_csv(csv, index=False)
    (figures / "run_cost.md").write_text(
        "What each notebook cost: the wall seconds of its last run, then every kind of stored result it used, with\n"
        "the seconds each took to compute when it was made (one core each): the cost from an empty cache.\n"
        "`new_core_seconds` leaves out what an earlier notebook of the same invocation used.\n\n"
        + markdown(frame, ".1f") + "\n")


def _parameter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``: the value as JSON when it parses (numbers, lists, dicts, null), else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="mini", choices=["smoke", "mini", "paper"])
    parser.add_argument("--figures", type=Path, default=Path("figures"))
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    parser.add_argument("--param", "-p", dest="params", action="append", type=_parameter, default=[], metavar="NAME=VALUE",
                        help="a notebook parameter (JSON value, else a string), e.g. -p runs=2 "
                             "-p 'overrides={\"train__steps\": 256}'; repeatable")
    parser.add_argument("--progress", action="store_true", help="keep progress bars in the executed notebooks")
    args = parser.parse_args(argv)
    run(args.scale, args.figures, args.only, progress=args.progress, parameters=dict(args.params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
