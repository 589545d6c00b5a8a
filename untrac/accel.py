"""Fast paths for unlearning, evaluation and training: autocast, TF32, fused optimizers, compile.

:class:`Accel` bundles the options a GPU box wants; ``Accel()`` (every option off) is the plain
path and changes nothing, bit for bit. Pass one to :func:`untrac.methods.untrac.untrac`,
:func:`~untrac.methods.untrac.untrac_inv`, :class:`~untrac.methods.untrac.Unlearner` or
:func:`untrac.training.train`::

    fast = Accel(dtype="bf16", tf32=True, optimizer_impl="fused")
    influence = untrac(model, train_sets, test_sets, config, pad_id, accel=fast)

* ``dtype``: ``"bf16"`` (CUDA, and CPU) or ``"fp16"`` (CUDA only) autocast around every forward
  pass; the NLL is always computed in float32 (:func:`untrac.models.example_losses`). ``fp16``
  steps through a :class:`torch.amp.GradScaler` (a host sync per step for the inf check unless
  the optimizer is fused); prefer ``bf16``. ``autocast_eval=False`` keeps evaluations in full
  precision (influences are *differences* of losses, and small ones can drown in bf16 noise).
* ``tf32``: TensorFloat-32 matmuls and convolutions on CUDA (set for the duration of a run, then
  restored).
* ``optimizer_impl``: ``"foreach"`` (multi-tensor), ``"fused"`` (one kernel; CUDA, and CPU for
  Adam/AdamW/SGD; RMSprop, which has none, falls back to foreach), ``"forloop"``, or ``None``
  (torch's default: foreach on CUDA, for-loop on CPU). Ignored by Adafactor.
* ``compile``: forward passes go through a :func:`torch.compile` view of the working copy (it
  shares the parameters; the copy itself stays plain, so snapshots, state-dict keys and
  checkpoints are unchanged); ``compile_mode``, ``compile_dynamic`` and ``compile_backend`` go
  to :func:`torch.compile`. Evaluation batches of varying length recompile
  unless ``compile_dynamic=True``.
* ``gradient_checkpointing``: transformers' activation checkpointing on the trained or unlearned
  model (each layer's activations are recomputed in the backward pass instead of stored: about a
  third more compute for activation memory of one layer at a time; training mode only, so
  evaluations are unaffected). Same numbers as without, to rounding.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_IMPLS = ("foreach", "fused", "forloop")
_TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD, "sgd_momentum": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
}


@dataclass(frozen=True)
class Accel:
    """Speed options; the defaults are the plain path (see the module docstring)."""

    dtype: str | None = None  # None | "bf16" | "fp16": autocast dtype of the forward passes
    autocast_eval: bool = True  # also autocast the evaluations (else they run in full precision)
    tf32: bool = False  # TF32 matmuls on CUDA
    optimizer_impl: str | None = None  # None | "foreach" | "fused" | "forloop"
    compile: bool = False  # torch.compile the working copy (in place)
    compile_mode: str | None = None  # e.g. "max-autotune", "reduce-overhead"
    compile_dynamic: bool | None = None
    compile_backend: str = "inductor"
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (memory for compute)

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be None or one of {sorted(DTYPES)}, not {self.dtype!r}")
        if self.optimizer_impl is not None and self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise ValueError(f"optimizer_impl must be None or one of {OPTIMIZER_IMPLS}, not {self.optimizer_impl!r}")

    @property
    def is_plain(self) -> bool:
        """True when every option is off: the package behaves exactly as without an ``Accel``."""
        return self == Accel()

    def describe(self) -> dict[str, Any]:
        """The options that differ from the plain path (for result configs and logs)."""
        plain = asdict(Accel())
        return {k: v for k, v in asdict(self).items() if plain[k] != v}

    def check(self, device: torch.device) -> None:
        """Raise a clear error for an option the device cannot honour."""
        if self.dtype == "fp16" and device.type != "cuda":
            raise ValueError(f"fp16 autocast needs a CUDA device (got {device.type}); use dtype='bf16' on CPU")

    # -- forward passes ---------------------------------------------------------------------------
    def autocast(self, device: torch.device, evaluation: bool = False) -> contextlib.AbstractContextManager:
        """Autocast context for a forward pass on ``device`` (a no-op on the plain path)."""
        if self.dtype is None or (evaluation and not self.autocast_eval):
            return contextlib.nullcontext()
        self.check(device)
        return torch.autocast(device_type=device.type, dtype=DTYPES[self.dtype])

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 training on CUDA (``None`` otherwise: bf16 needs none)."""
        return torch.amp.GradScaler(device.type) if self.dtype == "fp16" and device.type == "cuda" else None

    @contextlib.contextmanager
    def runtime(self, device: torch.device) -> Iterator[None]:
        """Process-wide settings for the length of a run (TF32), restored on exit."""
        self.check(device)
        if not (self.tf32 and device.type == "cuda"):
            yield
            return
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

    # -- optimizer and model ----------------------------------------------------------------------
    def optimizer_kwargs(self, optimizer: str) -> dict[str, Any]:
        """Keyword arguments selecting the optimizer implementation (empty if it has no such option)."""
        cls = _TORCH_OPTIMIZERS.get(optimizer)
        if self.optimizer_impl is None or cls is None:
            return {}
        accepted = inspect.signature(cls.__init__).parameters
        if self.optimizer_impl == "fused":
            return {"fused": True} if "fused" in accepted else ({"foreach": True} if "foreach" in accepted else {})
        if "foreach" not in accepted:
            return {}
        return {"foreach": self.optimizer_impl == "foreach"}

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module to run forward passes through: ``model`` itself, or a compiled view of it
        (with ``gradient_checkpointing``, switched on in ``model``).

        The compiled view (:func:`torch.compile`) shares ``model``'s parameters, so training it
        trains ``model``; ``model`` itself stays a plain module (deep-copyable, state-dict keys
        unchanged, snapshots and checkpoints interchangeable).
        """
        if self.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(f"gradient_checkpointing: {type(model).__name__} does not support it")
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x's name for it
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not self.compile:
            return model
        kwargs: dict[str, Any] = {"backend": self.compile_backend}
        if self.compile_mode is not None:
            kwargs["mode"] = self.compile_mode
        if self.compile_dynamic is not None:
            kwargs["dynamic"] = self.compile_dynamic
        return torch.compile(model, **kwargs)


PLAIN = Accel()


def resolve(accel: Accel | None) -> Accel:
    """``accel`` or the plain path."""
    return PLAIN if accel is None else accel
