"""The sweep helper: cached per cell, resumable, identical to running the cells one by one."""
from __future__ import annotations

import pandas as pd
import pytest


def test_sweep_matches_cells_run_one_by_one():
    from untrac.experiments.sweep import sweep

    def fn(lr, opt):
        return {"score": lr * (2 if opt == "adam" else 1)}

    frame = sweep(fn, {"lr": [0.1, 0.2], "opt": ["sgd", "adam"]}, context="t1", progress=False)
    assert list(frame.columns) == ["lr", "opt", "score"]
    expected = [fn(lr, o)["score"] for lr in (0.1, 0.2) for o in ("sgd", "adam")]
    assert frame["score"].tolist() == expected


def test_the_expensive_calls_of_uncached_cells_go_to_the_pool_first(monkeypatch):
    from untrac.experiments import sweep as S

    sent = []
    monkeypatch.setattr(S, "prefetch", lambda calls, **kw: sent.append(list(calls)))

    def fn(x):
        return {"y": 2 * x}

    def calls(x):
        return [(print, (x,), {})]

    S.sweep(fn, {"x": [1, 2]}, context="t-calls", progress=False)  # cells 1 and 2 cached, no calls hook
    frame = S.sweep(fn, {"x": [1, 2, 3]}, context="t-calls", progress=False, calls=calls)
    assert sent == [[(print, (3,), {})]] and frame["y"].tolist() == [2, 4, 6]  # only the uncached cell's calls
    S.sweep(fn, {"x": [1, 2, 3]}, context="t-calls", progress=False, calls=calls)
    assert sent[-1] == []


class Interrupted(Exception):
    """Stands in for a run killed half-way (Ctrl-C, a lost machine)."""


def test_interrupted_sweep_resumes_without_recomputing():
    from untrac.experiments.sweep import sweep

    calls, died = [], []

    def flaky(x):
        calls.append(x)
        if x == 3 and not died:
            died.append(x)
            raise Interrupted  # the first time we reach x=3, the run "dies"
        return pd.DataFrame({"step": [0, 1], "value": [x, 10 * x]})

    with pytest.raises(Interrupted):
        sweep(flaky, {"x": [1, 2, 3, 4]}, context="t2", progress=False)
    assert calls == [1, 2, 3]
    calls.clear()
    frame = sweep(flaky, {"x": [1, 2, 3, 4]}, context="t2", progress=False)
    assert calls == [3, 4]  # 1 and 2 were loaded from the cache
    assert frame["value"].tolist() == [1, 10, 2, 20, 3, 30, 4, 40] and frame["x"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    calls.clear()
    sweep(flaky, {"x": [1, 2, 3, 4]}, context="another context", progress=False)
    assert calls == [1, 2, 3, 4]  # a different context is a different cache key


def test_bad_grids():
    from untrac.experiments.sweep import sweep

    with pytest.raises(ValueError, match="empty"):
        sweep(lambda: {}, {}, context="t3")
    with pytest.raises(ValueError, match="no values"):
        sweep(lambda x: {}, {"x": []}, context="t3")


def test_two_processes_on_one_grid_compute_each_cell_once(tmp_path):
    """Two workers started on the same grid at once: every cell is computed by exactly one of them
    (the other waits on the cell's lock and loads the result), and both get the same frame."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from untrac.experiments.sweep import sweep\n"
        "def cell(x):\n"
        "    with open(sys.argv[1], 'a') as log: log.write(f'{x}\\n')\n"
        "    time.sleep(0.3)\n"
        "    return {'y': x * x}\n"
        "print(sweep(cell, {'x': [1, 2, 3]}, context='shared grid', progress=False)['y'].tolist())\n"
    )
    log = tmp_path / "calls.txt"
    env = {**os.environ, "UNTRAC_CACHE": str(tmp_path / "cache")}
    workers = [subprocess.Popen([sys.executable, "-c", script, str(log)], env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0].strip() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert outputs == ["[1, 4, 9]", "[1, 4, 9]"]
    assert sorted(log.read_text().split()) == ["1", "2", "3"]  # each cell once, not twice
