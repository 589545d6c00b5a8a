"""Results on disk without pickle: a JSON tree plus an ``.npz`` of arrays.

:func:`encode` / :func:`decode` handle None, bool, int, float, str, lists, tuples, dicts (any
JSON-able keys, in order), numpy arrays and scalars, tensors, pandas DataFrames and the
dataclasses of the untrac package; nothing else is written, and reading never imports a module
outside ``untrac`` nor runs code from the file (arrays load with ``allow_pickle=False``).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


class UnsafeValue(ValueError):
    """A stored tree asks for something the codec will not build (a class outside untrac, ...)."""


def encode(obj: Any, arrays: list[np.ndarray]) -> Any:
    """A JSON tree for ``obj``; arrays are appended to ``arrays`` and referenced by index.

    Handles None, bool, int, float, str, lists, tuples, dicts (any JSON-able keys, in order),
    numpy arrays and scalars, tensors, pandas DataFrames and dataclasses of the untrac package.
    """
    import pandas as pd

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise TypeError("object arrays cannot be cached")
        arrays.append(arr)
        return {"__array__": len(arrays) - 1, "scalar": isinstance(obj, np.generic)}
    if isinstance(obj, float):
        return {"__float__": repr(obj)}
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": encode(obj.detach().cpu().numpy(), arrays)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [encode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        return {"__dict__": [[encode(k, arrays), encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, pd.DataFrame):
        cols = []
        for name in obj.columns:
            col = obj[name]
            values = col.to_numpy()
            cols.append([encode(name, arrays), encode(values, arrays) if not values.dtype.hasobject
                         else {"values": [encode(v, arrays) for v in col.tolist()], "dtype": str(col.dtype)}])
        return {"__frame__": cols, "index": encode(obj.index.to_numpy(), arrays)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if not cls.__module__.startswith("untrac."):
            raise TypeError(f"only untrac dataclasses can be cached, not {cls.__module__}.{cls.__qualname__}")
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj) if f.init}}
    raise TypeError(f"cannot cache a {type(obj).__name__}")


def decode(tree: Any, arrays: Any) -> Any:
    """Inverse of :func:`encode` (dataclasses are rebuilt only from ``untrac.*`` modules)."""
    import pandas as pd

    if isinstance(tree, list):
        return [decode(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__array__" in tree:
        arr = arrays[f"a{tree['__array__']}"]
        return arr[()] if tree.get("scalar") else arr
    if "__tensor__" in tree:
        return torch.from_numpy(np.array(decode(tree["__tensor__"], arrays)))
    if "__tuple__" in tree:
        return tuple(decode(v, arrays) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {decode(k, arrays): decode(v, arrays) for k, v in tree["__dict__"]}
    if "__frame__" in tree:
        data = {}
        for k, v in tree["__frame__"]:
            if isinstance(v, dict) and "values" in v:
                data[decode(k, arrays)] = pd.Series([decode(x, arrays) for x in v["values"]],
                                                    dtype=pd.api.types.pandas_dtype(v["dtype"]))
            else:
                data[decode(k, arrays)] = decode(v, arrays)
        frame = pd.DataFrame(data)
        frame.index = decode(tree["index"], arrays)
        return frame
    if "__dataclass__" in tree:
        module, _, name = tree["__dataclass__"].partition(":")
        if not module.startswith("untrac."):
            raise UnsafeValue(f"refusing to rebuild {tree['__dataclass__']}: not an untrac class")
        cls = getattr(importlib.import_module(module), name)
        if not dataclasses.is_dataclass(cls):
            raise UnsafeValue(f"{tree['__dataclass__']} is not a dataclass")
        return cls(**{k: decode(v, arrays) for k, v in tree["fields"].items()})
    raise UnsafeValue(f"unknown cached value {sorted(tree)}")


def write(value: Any, directory: Path) -> None:
    """Store ``value`` as ``result.json`` + ``arrays.npz`` in ``directory``."""
    arrays: list[np.ndarray] = []
    tree = encode(value, arrays)
    (Path(directory) / "result.json").write_text(json.dumps(tree, allow_nan=True))
    np.savez(Path(directory) / "arrays.npz", **{f"a{i}": a for i, a in enumerate(arrays)})


def read(directory: Path) -> Any:
    """The value :func:`write` stored in ``directory``."""
    tree = json.loads((Path(directory) / "result.json").read_text())
    with np.load(Path(directory) / "arrays.npz", allow_pickle=False) as arrays:
        loaded = {k: arrays[k] for k in arrays.files}
    return decode(tree, loaded)
