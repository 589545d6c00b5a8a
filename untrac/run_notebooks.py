"""Execute the numbered notebooks headless with papermill: ``python -m untrac.run_notebooks``.

Each notebook gets the parameters ``scale`` and ``figures_dir``; the executed copies are kept in
``<figures>/notebooks/`` as the record of the run that produced the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(scale: str, figures: Path, only: list[str] | None = None, notebooks: Path = NOTEBOOKS,
        progress: bool = False) -> list[Path]:
    """Run every ``notebooks/NN_*.ipynb`` (or those whose name starts with an entry of ``only``).

    Progress bars are off unless ``progress`` (``UNTRAC_PROGRESS=0`` for the kernels): they would
    only fill the executed notebooks with redraws.
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
        papermill.execute_notebook(str(nb), str(out), parameters={"scale": scale, "figures_dir": str(figures)},
                                   cwd=str(notebooks), kernel_name="python3", progress_bar=False)
        done.append(out)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="mini", choices=["smoke", "mini", "paper"])
    parser.add_argument("--figures", type=Path, default=Path("figures"))
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    parser.add_argument("--progress", action="store_true", help="keep progress bars in the executed notebooks")
    args = parser.parse_args(argv)
    run(args.scale, args.figures, args.only, progress=args.progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
