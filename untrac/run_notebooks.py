"""Execute the numbered notebooks headless with papermill: ``python -m untrac.run_notebooks``.

Each notebook gets the parameters ``scale`` and ``figures_dir`` (and any ``--param NAME=VALUE``);
the executed copies are kept in ``<figures>/notebooks/`` as the record of the run that produced the
figures. ``00_quickstart`` needs no data mirror; 01-04 read it from ``UNTRAC_DATA_DIR``.
``papermill --help-notebook notebooks/<name>.ipynb`` lists a notebook's parameters with their types.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(scale: str, figures: Path, only: list[str] | None = None, notebooks: Path = NOTEBOOKS,
        progress: bool = False, parameters: Mapping[str, Any] | None = None) -> list[Path]:
    """Run every ``notebooks/NN_*.ipynb`` (or those whose name starts with an entry of ``only``).

    ``parameters`` are passed to every notebook besides ``scale`` and ``figures_dir`` (a notebook
    without such a parameter still receives it, as papermill does). Progress bars are off unless
    ``progress`` (``UNTRAC_PROGRESS=0`` for the kernels): they would only fill the executed
    notebooks with redraws.
    """
    import os

    import papermill

    if not progress:
        os.environ["UNTRAC_PROGRESS"] = "0"
    figures = figures.resolve()
    executed = figures / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        print(f"== {nb.name} (scale={scale})", flush=True)
        out = executed / nb.name
        papermill.execute_notebook(str(nb), str(out),
                                   parameters={**(parameters or {}), "scale": scale, "figures_dir": str(figures)},
                                   cwd=str(notebooks), kernel_name="python3", progress_bar=False)
        done.append(out)
    return done


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
