"""The GPU check is ready to run: its CPU part runs end to end here (the GPU part when a GPU is lent)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import needs_mirror

ROOT = Path(__file__).resolve().parent.parent


@needs_mirror
def test_device_check_cpu_part_runs_and_records_the_device(tmp_path):
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "-m", "bench.device_check", "--cpu", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = out.read_text()
    assert "<!-- bench:device-check-cpu -->" in text and "device: CPU only" in text
    assert "| notebook 02 pipeline | yes |" in text and "tables identical across worker counts: True" in text


def test_training_rate_runs_the_package_training_step():
    """bench.paper.training_rate (the batch-8 pretraining row of the GPU bench) on a tiny model on CPU."""
    from transformers import OPTConfig, OPTForCausalLM

    from bench.paper import training_rate

    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=1,
                                     ffn_dim=32, num_attention_heads=2, max_position_embeddings=64))
    before = [p.detach().clone() for p in model.parameters()]
    rate = training_rate(model, torch.device("cpu"), steps=2, batch=2, seq=16, warmup=1)
    assert rate > 0 and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    with pytest.raises(ValueError, match="steps"):
        training_rate(model, torch.device("cpu"), steps=0)
