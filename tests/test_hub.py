"""Tests of untrac.hub: offline detection, the fast-failing probe, clear errors, data loaders."""
from __future__ import annotations

import ast
import os
import socket
import time
from pathlib import Path

import datasets
import datasets.config
import huggingface_hub.constants
import pytest

from untrac import hub
from untrac.data import corpora, mirror, testsets
from untrac.data.mirror import DataUnavailableError, HubOfflineError, HubSource
from untrac.hub import HubUnavailable

_NETWORK_VARS = ("HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_NOWHERE = HubSource("untrac-tests/no-such-dataset", "nothing")


@pytest.fixture(autouse=True)
def hub_env(monkeypatch):
    """No offline variable, no cached probe; whatever the test changes is restored."""
    for name in hub.OFFLINE_VARS + _NETWORK_VARS + (mirror.ENV_VAR,):
        monkeypatch.setenv(name, "x")  # recorded, so the deletion below is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE",
                        huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", datasets.config.HF_DATASETS_OFFLINE)
    monkeypatch.setattr(hub, "_probe", {})
    return monkeypatch


def _fake_probe(monkeypatch, online: bool) -> list[int]:
    calls: list[int] = []

    def probe(timeout: float = hub.PROBE_TIMEOUT):
        calls.append(1)
        return online, "probe says so"

    monkeypatch.setattr(hub, "probe", probe)
    return calls


@pytest.mark.parametrize("name", hub.OFFLINE_VARS)
@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_variables_are_honoured_without_probing(monkeypatch, name, value):
    calls = _fake_probe(monkeypatch, online=True)
    monkeypatch.setenv(name, value)
    assert hub.offline() is True
    assert calls == []


@pytest.mark.parametrize("value", ["0", "false", "", "no"])
def test_false_values_probe_once_per_process(monkeypatch, value):
    calls = _fake_probe(monkeypatch, online=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline() is False and hub.offline() is False
    assert calls == [1]  # cached
    hub.reset()
    assert hub.offline() is False and calls == [1, 1]


def test_probe_reaches_a_listening_endpoint_and_fails_fast_on_a_closed_one(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub.probe(timeout=2)[0] is True
    start = time.perf_counter()
    online, why = hub.probe(timeout=2)
    assert online is False and f"127.0.0.1:{port}" in why
    assert time.perf_counter() - start < 2.5


def test_probe_is_bounded_even_when_connecting_hangs(monkeypatch):
    def hang(*args, **kwargs):  # a connection that never answers in time, then refuses (no stray thread errors)
        time.sleep(3)
        raise ConnectionRefusedError("refused after hanging")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    online, why = hub.probe(timeout=0.2)
    assert online is False and "within" in why
    assert time.perf_counter() - start < 1.5


def test_probe_target_prefers_the_proxy(monkeypatch):
    assert hub._probe_target() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org")
    assert hub._probe_target() == ("hf-mirror.example.org", 443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub._probe_target() == ("proxy.example", 3128)


def test_require_hub_fails_fast_with_a_clear_error(monkeypatch):
    _fake_probe(monkeypatch, online=True)
    hub.require_hub("nothing")  # online: no error
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnavailable) as info:
        hub.require_hub("the tokenizer of facebook/opt-125m")
    assert time.perf_counter() - start < 0.5
    message = str(info.value)
    assert "the tokenizer of facebook/opt-125m" in message and "TRANSFORMERS_OFFLINE=1" in message
    assert "UNTRAC_DATA_DIR" in message and "untrac.data.write_mirror" in message
    assert isinstance(info.value, RuntimeError)
    # the libraries are switched to offline mode, so that they fail fast too
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert datasets.config.HF_HUB_OFFLINE is True


def test_failed_probe_switches_to_offline_mode(monkeypatch):
    _fake_probe(monkeypatch, online=False)
    with pytest.raises(HubUnavailable, match="probe says so"):
        hub.require_hub("a model")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_hub_access_online_and_offline(monkeypatch):
    _fake_probe(monkeypatch, online=True)
    with pytest.raises(KeyError):  # online: errors propagate unchanged
        with hub.hub_access("x") as reachable:
            assert reachable is True
            raise KeyError("k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with hub.hub_access("cached thing") as reachable:  # offline, served by the cache
        assert reachable is False
    with pytest.raises(HubUnavailable, match="the thing.*not in the local cache") as info:
        with hub.hub_access("the thing"):
            raise OSError("offline mode is enabled")
    assert isinstance(info.value.__cause__, OSError)


def test_hub_loaders_fail_fast_offline_without_a_mirror(monkeypatch):
    """A hub load with HF_HUB_OFFLINE=1 and no mirror fails in well under 5 s, clearly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaders = {
        "load_hub": lambda: mirror.load_hub(_NOWHERE),
        "iter_hub": lambda: list(mirror.iter_hub(_NOWHERE, limit=2)),
        "load_corpus (stream)": lambda: corpora.load_corpus("Wikipedia", 3, source=_NOWHERE),
        "load_corpus": lambda: corpora.load_corpus("Wikipedia", source=_NOWHERE),
        "load_truthfulqa": lambda: testsets.load_truthfulqa(
            source=testsets.TruthfulQASource(hub=_NOWHERE)),
    }
    for name, load in loaders.items():
        start = time.perf_counter()
        with pytest.raises(HubOfflineError) as info:
            load()
        elapsed = time.perf_counter() - start
        assert elapsed < 5, f"{name} took {elapsed:.1f} s to fail"
        message = str(info.value)
        assert _NOWHERE.describe() in message and "HF_HUB_OFFLINE=1" in message, name
        assert "UNTRAC_DATA_DIR" in message and "write_mirror" in message, name
        assert isinstance(info.value, DataUnavailableError) and isinstance(info.value,
                                                                           HubUnavailable)


def test_hub_is_the_bottom_layer():
    tree = ast.parse(Path(hub.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("untrac") for name in imported), imported
