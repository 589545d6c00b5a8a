"""Progress bars that a notebook can carry: one wrapper around ``tqdm.auto``.

Widgets in Jupyter (with ``ipywidgets``), text in a terminal; redrawn at most once a second, so
long loops do not flood a notebook's output. ``UNTRAC_PROGRESS=0`` turns every bar off (the
headless runner sets it for papermill and nbval executions, so executed notebooks stay small).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

ENV_VAR = "UNTRAC_PROGRESS"
MIN_INTERVAL = 1.0  # seconds between redraws


def enabled(requested: bool = True) -> bool:
    """Whether to draw a bar: asked for, and not switched off by ``UNTRAC_PROGRESS=0``."""
    return bool(requested) and os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A throttled ``tqdm.auto`` bar (a silent pass-through when disabled); usable as a context manager."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", MIN_INTERVAL)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not globals()["enabled"](enabled), **kwargs)
