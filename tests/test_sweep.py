"""The sweep helper: cached per cell, resumable, identical to running the cells one by one."""
from __future__ import annotations

import pandas as pd
import pytest


def test_sweep_matches_cells_run_one_by_one():
    from untrac.sweep import sweep

    def fn(lr, opt):
        return {"score": lr * (2 if opt == "adam" else 1)}

    frame = sweep(fn, {"lr": [0.1, 0.2], "opt": ["sgd", "adam"]}, context="t1", progress=False)
    assert list(frame.columns) == ["lr", "opt", "score"]
    expected = [fn(lr, o)["score"] for lr in (0.1, 0.2) for o in ("sgd", "adam")]
    assert frame["score"].tolist() == expected


class Interrupted(Exception):
    """Stands in for a run killed half-way (Ctrl-C, a lost machine)."""


def test_interrupted_sweep_resumes_without_recomputing():
    from untrac.sweep import sweep

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
    from untrac.sweep import sweep

    with pytest.raises(ValueError, match="empty"):
        sweep(lambda: {}, {}, context="t3")
    with pytest.raises(ValueError, match="no values"):
        sweep(lambda x: {}, {"x": []}, context="t3")
