"""Resumable grids over settings -> one tidy DataFrame (Sec. 6's sensitivity studies).

``sweep(fn, grid, context=...)`` calls ``fn(**cell)`` for every combination of the grid's values
and caches each cell's result under a fingerprint of (``context``, cell). An interrupted sweep
resumes where it stopped: finished cells are loaded, not recomputed.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from .. import cache
from ..parallel import Call, prefetch
from ..progress import bar


def grid_cells(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in row-major order of the grid's keys."""
    if not grid:
        raise ValueError("the grid is empty")
    for name, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"grid axis {name!r} has no values")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def sweep(
    fn: Callable[..., Mapping[str, Any] | pd.DataFrame],
    grid: Mapping[str, Sequence[Any]],
    context: Any,
    use_cache: bool = True,
    progress: bool = True,
    version: int = 1,
    calls: Callable[..., list[Call]] | None = None,
) -> pd.DataFrame:
    """Run ``fn(**cell)`` over the grid; return a tidy frame with one column per grid axis.

    ``fn`` returns a mapping of metrics (one row per cell) or a DataFrame (several rows per cell,
    e.g. a correlation at every evaluation step). ``context`` must identify everything else the
    results depend on (the function's name and version, model keys, data, fixed settings); it is
    part of every cell's cache key, with ``fn``'s qualified name and ``version`` (bump it when
    ``fn``'s output changes: cells are then recomputed).

    ``calls(**cell)``, if given, lists the expensive cached calls a cell makes (``(function, args,
    kwargs)``, e.g. :func:`untrac.experiments.setup.attribution_call`): those of the cells not yet
    cached run first in worker processes (:func:`untrac.parallel.prefetch`), then every cell here.
    """
    frames = []
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    cells = [(cell, cache.fingerprint("sweep", name, version, context, cell)) for cell in grid_cells(grid)]
    if calls is not None and use_cache:
        prefetch([c for cell, key in cells if not cache.is_complete(cache.entry("sweep", key)) for c in calls(**cell)],
                 progress=progress, desc="sweep cells")
    for cell, key in bar(cells, enabled=progress, desc="sweep"):
        result = cache.memoise("sweep", key, lambda: fn(**cell), use_cache=use_cache, producer=name, version=version)
        frame = result.copy() if isinstance(result, pd.DataFrame) else pd.DataFrame([dict(result)])
        for name, value in reversed(list(cell.items())):
            frame.insert(0, name, [value] * len(frame))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
