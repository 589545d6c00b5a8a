"""Argument checks at the public boundary: every message names the argument and what it must be.

Configs call these from ``__post_init__`` (a bad value fails where it is written, not deep inside
torch); the entry points (``train``, ``attribute``, ...) check their inputs' types.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def positive_int(owner: str, name: str, value: Any, *, allow_none: bool = False, minimum: int = 1) -> None:
    """``value`` is an int >= ``minimum`` (or None if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{owner}.{name} must be {what}, not {value!r}")


def positive_float(owner: str, name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    """``value`` is a finite real number > 0 (>= 0 if ``allow_zero``; or None if allowed)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        what = "a finite number " + (">= 0" if allow_zero else "> 0") + (" or None" if allow_none else "")
        raise ValueError(f"{owner}.{name} must be {what}, not {value!r}")


def one_of(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {choices}, not {value!r}")


def integer(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an int, not {value!r}")


def datasets(name: str, value: Any) -> None:
    """``value`` is a non-empty mapping of names to ``datasets.Dataset`` (encoded or not)."""
    from datasets import Dataset

    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of name -> datasets.Dataset, not a {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} is empty: give at least one dataset")
    for key, ds in value.items():
        if not isinstance(ds, Dataset):
            raise TypeError(f"{name}[{key!r}] must be a datasets.Dataset, not a {type(ds).__name__}")


def pad_id(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"pad_id must be the tokenizer's pad token id (an int >= 0), not {value!r}")


def model(name: str, value: Any) -> None:
    from torch import nn

    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, not a {type(value).__name__}")
