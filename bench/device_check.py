"""The GPU check, ready to run the moment a GPU machine is lent: ``make device-check``.

    python -m bench.device_check            # on the GPU box: <= ~8 minutes on one H100
    python -m bench.device_check --cpu      # its CPU part (what CI runs): minutes, tiny sizes

Four steps, each timed, their results written with the device's name into the ``device-check``
section of ``bench/RESULTS.md`` (a failing step is recorded and the next one still runs):

1. the CUDA tests: the test files with CUDA-specific checks (``tests/test_fast_paths.py`` and the
   method tests), on the device;
2. notebook 02's pipeline (Sec. 5.2) on the mirror at a GPU-sized preset: OPT-125M shapes
   (12 layers, d 768) from scratch, a short schedule, every method, both corpus settings — its
   correlation table and the wall time of each phase;
3. the paper-scale bench (``python -m bench --paper``): OPT-125M UnTrac steps/s at batch 1 x 1,024,
   MFU, projected hours per corpus;
4. the same workload for K corpora at once: K processes sharing the GPU (the local pool), against
   one after the other.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

GPU_PRESET = {  # OPT-125M shapes, a short schedule: minutes on one H100
    "model__n_layers": 12, "model__d_model": 768, "model__n_heads": 12, "model__d_ff": 3072, "model__max_positions": 512,
    "block_size": 256, "blocks_per_corpus": 256, "train__steps": 200, "train__batch_size": 8,
    "train__checkpoint_every": 100, "anneal": None, "sample_blocks": 32, "test_examples": 16, "runs": 2, "device": "cuda",
    "settings": ["equal"], "classic": False, "noise_seeds": [],
}
CPU_PRESET = {"runs": 1, "settings": ["equal"], "classic": False}  # the smoke preset, one run: proves the script end to end

PIPELINE = r"""
import json, sys, time
import untrac
from untrac import evaluate
from untrac.experiments import corpora as ec
preset = untrac.preset("corpora", sys.argv[1], **json.loads(sys.argv[2]))
t0 = time.perf_counter()
settings = {name: ec.corpora_setting(preset, name, progress=False) for name in preset.settings}
t1 = time.perf_counter()
results = ec.corpora_experiment(preset, progress=False)
t2 = time.perf_counter()
corr = evaluate.correlation_frame(results).groupby(["setting", "testset", "method"], sort=False)["pearson"].mean()
print(json.dumps({"training_s": t1 - t0, "attribution_s": t2 - t1, "pearson": {"/".join(k): v for k, v in corr.items()}}))
"""


def step(name: str, command: list[str], env: dict[str, str], timeout: int) -> dict:
    print(f"== {name}: {' '.join(command[:6])} ...", flush=True)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        ok, stdout, tail = out.returncode == 0, out.stdout, (out.stdout + out.stderr)[-3000:]
    except subprocess.TimeoutExpired as err:
        ok, stdout, tail = False, "", f"timed out after {timeout} s\n{(err.stdout or b'')[-2000:]!r}"
    seconds = time.perf_counter() - t0
    print(f"   {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    return {"step": name, "ok": ok, "seconds": seconds, "stdout": stdout, "tail": tail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the CPU part only, at tiny sizes (CI)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--k", type=int, default=4, help="corpora unlearned at once in step 4")
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.cuda.get_device_name(0) if cuda else "CPU only (no GPU)"
    env = {**os.environ, "UNTRAC_CACHE": tempfile.mkdtemp(prefix="untrac-device-check-"), "UNTRAC_PROGRESS": "0"}
    env.setdefault("UNTRAC_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    py = sys.executable
    steps = []
    tests = ["tests/test_fast_paths.py", "tests/test_untrac.py", "tests/test_gradients.py", "tests/test_hif.py"]
    if not cuda:
        tests = ["tests/test_fast_paths.py"]
    steps.append(step("CUDA tests" if cuda else "tests (CPU)", [py, "-m", "pytest", "-q", "-x", *tests], env, 240))
    scale, preset = ("smoke", GPU_PRESET) if cuda else ("smoke", CPU_PRESET)
    pipe = step("notebook 02 pipeline", [py, "-c", PIPELINE, scale, json.dumps(preset)], {**env, "UNTRAC_WORKERS": "1"}, 300)
    if pipe["ok"]:
        pipe["result"] = json.loads(pipe["stdout"].strip().splitlines()[-1])
    steps.append(pipe)
    paper = [py, "-m", "bench", "--paper", "--out", str(Path(env["UNTRAC_CACHE"]) / "paper.md")]
    if cuda:
        steps.append(step("paper-scale bench", paper, env, 240))
    else:  # OPT-125M on 2 CPU cores takes minutes a step: the CPU part only proves the command starts
        steps.append(step("paper-scale bench (--help only on CPU)", [py, "-m", "bench", "--help"], env, 60))
    if cuda and steps[-1]["ok"]:
        steps[-1]["table"] = (Path(env["UNTRAC_CACHE"]) / "paper.md").read_text()
    k = args.k if cuda else 1
    steps.append(step(f"K={k} pipelines: in parallel vs one after the other",
                      [py, "-m", "bench.pipeline", "--experiment", "corpora", "--scale", "smoke",
                       "--set", f"runs={max(k, 2)}", "--set", 'settings=["equal"]', "--set", "classic=false",
                       "--workers", "1", str(max(k, 2))], env, 300))

    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"## Device check ({'GPU' if cuda else 'CPU part only'})", "",
             f"{stamp}; device: {device}; torch {torch.__version__}; total {sum(s['seconds'] for s in steps):.0f} s.", "",
             "| step | ok | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {'yes' if s['ok'] else 'NO'} | {s['seconds']:.0f} |" for s in steps]
    if pipe.get("result"):
        r = pipe["result"]
        lines += ["", f"Pipeline ({'OPT-125M shapes' if cuda else 'smoke'}): training {r['training_s']:.0f} s, "
                  f"attribution {r['attribution_s']:.0f} s. Mean Pearson by setting/test set/method:", "",
                  "| setting/testset/method | pearson |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in r["pearson"].items()]
    if steps[2].get("table"):
        lines += ["", steps[2]["table"].split("<!-- bench:paper -->")[-1].split("<!-- /bench:paper -->")[0].strip()]
    if steps[3]["ok"]:
        lines += ["", "Step 4, " + steps[3]["stdout"].strip()]
    failed = [s for s in steps if not s["ok"]]
    for s in failed:
        lines += ["", f"### {s['step']} failed", "", "```", s["tail"][-1500:], "```"]
    from .__main__ import write_section

    write_section(args.out, "device-check" if cuda else "device-check-cpu", "\n".join(lines))
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
