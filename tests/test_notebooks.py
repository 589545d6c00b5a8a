"""Every numbered notebook runs headless at ``smoke`` scale, exactly as ``make figures`` runs it
(papermill with injected parameters), writing into a temporary directory — never into figures/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_mirror

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*") if p.is_file()} if directory.exists() else {}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_has_a_parameters_cell_and_no_stored_errors(notebook):
    nb = json.loads(notebook.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "scale" in "".join(tagged[0]["source"])
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))


@needs_mirror
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(notebook, tmp_path):
    from untrac.run_notebooks import run

    before = _snapshot(ROOT / "figures")
    (executed,) = run("smoke", tmp_path / "figures", only=[notebook.name[:2]])
    nb = json.loads(executed.read_text())
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    written = list((tmp_path / "figures").glob(f"{notebook.name[:2]}_*"))
    assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".csv" for p in written)
    assert _snapshot(ROOT / "figures") == before, "a smoke run wrote into figures/"
