"""The GPU check is ready to run: its CPU part runs end to end here (the GPU part when a GPU is lent)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
