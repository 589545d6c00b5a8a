"""What a method is: a name, a typed settings dataclass, what it needs, and one compute function.

A method family is one module of :mod:`untrac.methods` that declares ``METHODS = (Method(...),
...)``; the package discovers them (:func:`builtin`). A method from outside the package is one
module too, made known with an explicit call, ``untrac.register_method(Method(...))``.

``compute(problem, settings) -> Influence`` gets a :class:`Problem` (the model, the named training
and test sets, the pad id, and what the method declared it needs) and an instance of its settings
dataclass. :meth:`Method.settings_from` turns keyword overrides into that instance, naming the
method and the field when one is unknown.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch import nn

from ..accel import Accel
from ..models import evaluation_batches, example_losses
from .result import Cost, Influence

NEEDS = ("checkpoints",)  # what a method may ask the caller for beyond the model and the data
GRADIENT_BATCH = 16


@dataclass
class Problem:
    """What every method sees: theta_0, the named sets, and what the method needs."""

    model: nn.Module
    train_sets: Mapping[str, Dataset]
    test_sets: Mapping[str, Dataset]
    pad_id: int
    checkpoints: Sequence[Mapping[str, torch.Tensor]] | None = None
    progress: bool = True
    accel: Accel | None = None

    @property
    def train_names(self) -> list[str]:
        return list(self.train_sets)

    @property
    def test_names(self) -> list[str]:
        return list(self.test_sets)

    def batched(self, batch_size: int = GRADIENT_BATCH) -> tuple[dict[str, list], dict[str, list]]:
        """Training and test sets cut into length-bucketed batches."""
        return (evaluation_batches(self.model, self.train_sets, self.pad_id, batch_size),
                evaluation_batches(self.model, self.test_sets, self.pad_id, batch_size))

    def counted_losses(self, cost: Cost) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]:
        """Per-example losses that count every pass into ``cost`` (gradients, checkpoints, HVPs)."""

        def losses(m: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
            cost.add_batch(batch, backward=True)
            return example_losses(m, batch)

        return losses

    def influence(self, method: str, values: Any, cost: Cost, settings: Any, **extra: Any) -> Influence:
        """The result, with the settings (and any diagnostics in ``extra``) recorded beside it."""
        config = {**dataclasses.asdict(settings), **extra}
        return Influence(method, self.train_names, self.test_names, values, cost=cost, config=config)


class MissingExtra(ImportError):
    """A method's optional dependency (an extra such as ``untrac[kronfluence]``) is not installed."""


@dataclass(frozen=True)
class Method:
    """One attribution method.

    * ``name``: what :func:`untrac.attribute` takes and what tables show (e.g. ``"HIF (LiSSA)"``);
    * ``defaults``: an instance of the method's frozen settings dataclass (its type is the schema);
    * ``compute(problem, settings) -> Influence``;
    * ``needs``: what the caller must supply (``"checkpoints"``: the training checkpoints);
    * ``order``: where the method sits in tables; ``version``: bump when results change (cache);
    * ``requires``: modules of an optional extra the method imports (when one is missing the method
      is left out of the default tables and running it raises :class:`MissingExtra` with ``install``).
    """

    name: str
    defaults: Any
    compute: Callable[[Problem, Any], Influence]
    needs: tuple[str, ...] = ()
    order: int = 100
    version: int = 1
    summary: str = ""
    hint: Mapping[str, str] = field(default_factory=dict)  # per need: how to supply it
    requires: tuple[str, ...] = ()
    install: str = ""  # how to install what ``requires`` names

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.defaults) or isinstance(self.defaults, type):
            raise TypeError(f"method {self.name!r}: defaults must be a dataclass instance (its settings)")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown needs {sorted(unknown)}; choose from {NEEDS}")

    @property
    def missing(self) -> list[str]:
        """The modules in ``requires`` that cannot be imported (looked up, not imported)."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    @property
    def installed(self) -> bool:
        return not self.missing

    def check_installed(self) -> None:
        missing = self.missing
        if missing:
            raise MissingExtra(f"method {self.name!r} needs {', '.join(missing)}, which is not installed: "
                               f"{self.install or 'pip install ' + ' '.join(missing)}")

    @property
    def settings_type(self) -> type:
        return type(self.defaults)

    def fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.defaults) if f.init]

    def settings_from(self, config: Any = None, **overrides: Any) -> Any:
        """The settings instance: ``config`` (or the defaults) with ``overrides`` applied."""
        base = self.defaults if config is None else config
        if not isinstance(base, self.settings_type):
            raise TypeError(f"method {self.name!r} takes a {self.settings_type.__name__} config, "
                            f"not a {type(base).__name__}")
        unknown = sorted(set(overrides) - set(self.fields()))
        if unknown:
            raise ValueError(f"method {self.name!r} has no setting {', '.join(map(repr, unknown))}; "
                             f"its settings ({self.settings_type.__name__}) are {self.fields()}")
        if not overrides:
            return base
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return dataclasses.replace(base, **values)


# ----------------------------------------------------------------------------- the registry

_USER: dict[str, Method] = {}


@functools.lru_cache(maxsize=None)
def builtin() -> tuple[Method, ...]:
    """Every method declared (``METHODS = (...)``) by a module of :mod:`untrac.methods`, in table order."""
    from .. import methods as package

    found: list[Method] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("registry", "result"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [m for m in getattr(module, "METHODS", ()) if isinstance(m, Method)]
    return tuple(sorted(found, key=lambda m: m.order))


def register(method: Method, replace: bool = False) -> Method:
    """Make ``method`` available to :func:`untrac.attribute`, presets and tables (an explicit call)."""
    if not isinstance(method, Method):
        raise TypeError(f"register a untrac.Method, not a {type(method).__name__}")
    taken = {m.name for m in builtin()} | set(_USER)
    if method.name in taken and not replace:
        raise ValueError(f"a method named {method.name!r} exists; pass replace=True to replace it")
    _USER[method.name] = method
    return method


def unregister(name: str) -> None:
    _USER.pop(name, None)


def available() -> dict[str, Method]:
    """Every known method by name: the package's, then the registered ones."""
    return {**{m.name: m for m in builtin()}, **_USER}


def get(name: str) -> Method:
    """The method called ``name`` (a clear error listing the choices otherwise)."""
    methods = available()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; choose from {tuple(methods)}")
    return methods[name]
