"""Is the Hugging Face hub reachable?  Fail fast, with a clear message, when it is not.

Without internet, ``datasets`` and ``transformers`` retry for 24-48 s per call before they fail
(about 1 s with ``HF_HUB_OFFLINE=1``).  This module decides once per process whether the hub can be
reached and, when it cannot, switches the Hugging Face libraries to offline mode so that whatever
they still try fails (or is served from the local cache) at once:

* :func:`offline` -- ``True`` when ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` /
  ``HF_DATASETS_OFFLINE`` is set to a true value, else the result of one quick TCP probe of the
  hub (or of the HTTPS proxy), at most :data:`PROBE_TIMEOUT` seconds, cached for the process;
* :func:`require_hub` -- raise :class:`HubUnavailable` when offline (the hub is needed, full stop);
* :func:`hub_access` -- a context manager for calls that the local Hugging Face cache may still
  serve offline: it switches to offline mode first and turns a failure into
  :class:`HubUnavailable`.

The bottom layer of the package: it imports nothing from ``untrac``.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
"""Environment variables that declare offline mode (any of them set to 1/true/yes/on)."""

HUB_URL = "https://huggingface.co"
PROBE_TIMEOUT = 2.0
"""Seconds the connectivity probe may take (name resolution included)."""

MIRROR_VAR = "UNTRAC_DATA_DIR"  # untrac.data.mirror.ENV_VAR, repeated: this module imports nothing

_TRUE = {"1", "true", "yes", "on"}
_probe: dict[str, object] = {}  # {"online": bool, "reason": str}, once per process


class HubUnavailable(RuntimeError):
    """The Hugging Face hub is needed but cannot be reached (offline mode or no connection)."""


def _env_offline() -> str | None:
    """The first offline variable set to a true value, as ``NAME=value``; ``None`` when none is."""
    for name in OFFLINE_VARS:
        value = os.environ.get(name, "")
        if value.strip().lower() in _TRUE:
            return f"{name}={value}"
    return None


def _probe_target() -> tuple[str, int]:
    """``(host, port)`` to probe: the HTTPS proxy when one is set, else the hub's endpoint."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(name):
            url = urlsplit(os.environ[name] if "://" in os.environ[name] else "http://" + os.environ[name])
            return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    url = urlsplit(os.environ.get("HF_ENDPOINT") or HUB_URL)
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def probe(timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Try one TCP connection to the hub (or proxy); ``(reachable, why)`` within ``timeout`` s.

    Runs in a daemon thread so that a slow name resolution cannot hold the caller longer than
    ``timeout`` (``socket`` timeouts do not cover DNS).  Not cached: see :func:`offline`.
    """
    host, port = _probe_target()
    result: list[tuple[bool, str]] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append((True, f"{host}:{port} reachable"))
        except OSError as exc:
            result.append((False, f"cannot connect to {host}:{port}: {exc}"))

    thread = threading.Thread(target=connect, name="untrac-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.25)
    return result[0] if result else (False, f"no answer from {host}:{port} within {timeout:g} s")


def offline() -> bool:
    """Whether the hub is out of reach: an offline variable is set, or the (cached) probe failed."""
    return _offline_reason() is not None


def _offline_reason() -> str | None:
    declared = _env_offline()
    if declared is not None:
        return declared
    if "online" not in _probe:
        _probe["online"], _probe["reason"] = probe()
    return None if _probe["online"] else str(_probe["reason"])


def reset() -> None:
    """Forget the cached probe result (the next :func:`offline` probes again)."""
    _probe.clear()


def force_offline() -> None:
    """Put the Hugging Face libraries into offline mode for this process.

    Sets ``HF_HUB_OFFLINE=1`` (read by libraries imported later) and, since ``huggingface_hub``
    and ``datasets`` read it once at import, their module constants when they are imported already.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = True
        config.HF_DATASETS_OFFLINE = True


def unavailable(what: str, reason: str | None = None) -> HubUnavailable:
    """The :class:`HubUnavailable` error for ``what`` (not raised)."""
    why = f" ({reason})" if reason else ""
    return HubUnavailable(
        f"{what} needs the Hugging Face hub, which cannot be reached{why}. Work offline by setting "
        f"{MIRROR_VAR} to a data mirror directory (write one on a machine with internet access with "
        f"`python -m untrac.data.write_mirror OUT_DIR`), or go online (and unset "
        f"{'/'.join(OFFLINE_VARS)}).")


def require_hub(what: str) -> None:
    """Raise :class:`HubUnavailable` naming ``what`` when the hub is out of reach (fast).

    When the hub is out of reach, the Hugging Face libraries are also put into offline mode
    (:func:`force_offline`).  Takes at most :data:`PROBE_TIMEOUT` s once per process, then no time.
    Use :func:`hub_access` instead where the local Hugging Face cache could serve the call.
    """
    reason = _offline_reason()
    if reason is not None:
        force_offline()
        raise unavailable(what, reason)


@contextmanager
def hub_access(what: str) -> Iterator[bool]:
    """Run a hub call that the local Hugging Face cache may serve when offline.

    Online, the body runs unchanged (its errors propagate) and the context value is ``True``.
    Offline, the libraries are first put into offline mode, so the body fails within about a
    second unless the cache has what it needs; a failure is raised as :class:`HubUnavailable`
    naming ``what`` (chained to the original error).  The context value is then ``False``.
    """
    reason = _offline_reason()
    if reason is None:
        yield True
        return
    force_offline()
    try:
        yield False
    except HubUnavailable:
        raise
    except Exception as exc:
        raise unavailable(what, f"{reason}; not in the local cache: {type(exc).__name__}") from exc


__all__ = ["HubUnavailable", "OFFLINE_VARS", "PROBE_TIMEOUT", "force_offline", "hub_access",
           "offline", "probe", "require_hub", "reset", "unavailable"]
