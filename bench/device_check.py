"""The GPU check, ready to run the moment a GPU machine is lent: ``make device-check``.

    python -m bench.device_check            # on the GPU box: at most --budget seconds (default 560)
    python -m bench.device_check --cpu      # its CPU part (what CI runs): minutes, tiny sizes

On a lent machine that cannot reach the internet and lacks ``datasets`` (the 'cuda' image has torch,
transformers, pyarrow and pandas but not datasets, dill or multiprocess), ``make device-carry`` first
writes ``.devwheels/`` (those three wheels for CPython 3.12) and ``.devdata/`` (a copy of the mirror);
carry both and run ``pip install --no-index --no-deps .devwheels/*.whl`` there before the check, with
``UNTRAC_DATA_DIR=$PWD/.devdata``.

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

GPU_PRESET = {  # OPT-125M shapes on the mini preset's data and tokenizer, a short schedule: minutes on one H100
    "model__n_layers": 12, "model__d_model": 768, "model__n_heads": 12, "model__d_ff": 3072, "model__max_positions": 512,
    "block_size": 256, "blocks_per_corpus": 256, "train__steps": 200, "train__batch_size": 8, "train__lr": 6e-4,
    "train__checkpoint_every": 100, "anneal": None, "sample_blocks": 32, "test_examples": 16, "runs": 1, "device": "cuda",
    "settings": ["equal"], "classic": False, "seeds": [0],
}  # train lr 6e-4: GPT-3's for 125M parameters (fixed in advance, not tuned here); on an H200 training
# took 234 s and one run's attributions ~100 s (2026-11-27)
CPU_PRESET = {"runs": 1, "settings": ["equal"], "classic": False, "seeds": [0]}  # the smoke preset, one run, one seed: proves the script end to end

PIPELINE = r"""
import json, sys, time
import untrac
from untrac import evaluate
from untrac.experiments import corpora as ec
preset = untrac.preset("corpora", sys.argv[1], **json.loads(sys.argv[2]))
t0 = time.perf_counter()
settings = {name: ec.corpora_setting(preset, name, progress=False) for name in preset.settings}
t1 = time.perf_counter()
print(f'training done in {t1 - t0:.0f} s', file=sys.stderr, flush=True)
results = ec.corpora_experiment(preset, progress=False)
t2 = time.perf_counter()
corr = evaluate.correlation_frame(results).groupby(["setting", "testset", "method"], sort=False)["pearson"].mean()
print(json.dumps({"training_s": t1 - t0, "attribution_s": t2 - t1, "pearson": {"/".join(k): v for k, v in corr.items()}}))
"""


def step(name: str, command: list[str], env: dict[str, str], timeout: int, key: str = "") -> dict:
    print(f"== {name}: {' '.join(command[:6])} ...", flush=True)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        ok, stdout, tail = out.returncode == 0, out.stdout, (out.stdout + out.stderr)[-3000:]
    except subprocess.TimeoutExpired as err:
        def text(b: bytes | str | None) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        ok, stdout, tail = False, "", f"timed out after {timeout} s\n{(text(err.stdout) + text(err.stderr))[-2000:]}"
    seconds = time.perf_counter() - t0
    print(f"   {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    return {"key": key, "step": name, "ok": ok, "seconds": seconds, "stdout": stdout, "tail": tail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the CPU part only, at tiny sizes (CI)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--k", type=int, default=4, help="corpora unlearned at once in step 4")
    parser.add_argument("--budget", type=float, default=560.0,
                        help="seconds for the four steps together, shared 10/65/10/15 %% (a step past its share is "
                             "stopped and recorded; the section is rewritten after every step)")
    parser.add_argument("--only", default="tests,pipeline,paper,k",
                        help="comma-separated steps to run, of tests,pipeline,paper,k (default: all)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if not only or only - {"tests", "pipeline", "paper", "k"}:
        parser.error(f"--only takes names of tests,pipeline,paper,k; got {args.only!r}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    share = {name: max(30, int(args.budget * f)) for name, f in
             (("tests", 0.10), ("pipeline", 0.65), ("paper", 0.10), ("k", 0.15))}
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.cuda.get_device_name(0) if cuda else "CPU only (no GPU)"
    env = {**os.environ, "UNTRAC_CACHE": tempfile.mkdtemp(prefix="untrac-device-check-"), "UNTRAC_PROGRESS": "0"}
    env.setdefault("UNTRAC_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    py = sys.executable
    steps: list[dict] = []

    def record(entry: dict) -> dict:  # keep it, and rewrite the section: a later step cut off loses nothing
        steps.append(entry)
        write(args.out, cuda, device, torch.__version__, steps)
        return entry

    tests = ["tests/test_fast_paths.py", "tests/test_untrac.py", "tests/test_gradients.py", "tests/test_hif.py"]
    if not cuda:
        tests = ["tests/test_fast_paths.py"]
    if "tests" in only:
        record(step("CUDA tests" if cuda else "tests (CPU)", [py, "-m", "pytest", "-q", *tests], env, share["tests"],
                    key="tests"))
    if "pipeline" in only:
        scale, preset = ("mini", GPU_PRESET) if cuda else ("smoke", CPU_PRESET)
        pipe = step("notebook 02 pipeline", [py, "-c", PIPELINE, scale, json.dumps(preset)],
                    {**env, "UNTRAC_WORKERS": "1"}, share["pipeline"], key="pipeline")
        if pipe["ok"]:
            pipe["result"] = json.loads(pipe["stdout"].strip().splitlines()[-1])
        record(pipe)
    if "paper" in only and cuda:
        table = Path(env["UNTRAC_CACHE"]) / "paper.md"
        paper = step("paper-scale bench", [py, "-m", "bench", "--paper", "--out", str(table)], env, share["paper"],
                     key="paper")
        if paper["ok"]:
            paper["table"] = table.read_text()
        record(paper)
    elif "paper" in only:  # OPT-125M on 2 CPU cores takes minutes a step: the CPU part only proves the command starts
        record(step("paper-scale bench (--help only on CPU)", [py, "-m", "bench", "--help"], env, 60, key="paper"))
    if "k" in only:
        k = args.k if cuda else 1
        record(step(f"K={k} pipelines: in parallel vs one after the other",
                    [py, "-m", "bench.pipeline", "--experiment", "corpora", "--scale", "smoke",
                     "--set", f"runs={max(k, 2)}", "--set", 'settings=["equal"]', "--set", "classic=false",
                     "--workers", "1", str(max(k, 2))], env, share["k"], key="k"))
    print(write(args.out, cuda, device, torch.__version__, steps))
    return 1 if any(not s["ok"] for s in steps) else 0


def write(out: Path, cuda: bool, device: str, torch_version: str, steps: list[dict]) -> str:
    """The ``device-check`` section of ``out`` from the steps run so far (each with its seconds and outcome)."""
    from .__main__ import write_section

    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"## Device check ({'GPU' if cuda else 'CPU part only'})", "",
             f"{stamp}; device: {device}; torch {torch_version}; {len(steps)} step(s), "
             f"total {sum(s['seconds'] for s in steps):.0f} s.", "",
             "| step | ok | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {'yes' if s['ok'] else 'NO'} | {s['seconds']:.0f} |" for s in steps]
    by = {s["key"]: s for s in steps}
    result = by.get("pipeline", {}).get("result")
    if result:
        lines += ["", f"Pipeline ({'OPT-125M shapes' if cuda else 'smoke'}): training {result['training_s']:.0f} s, "
                  f"attribution {result['attribution_s']:.0f} s. Mean Pearson by setting/test set/method:", "",
                  "| setting/testset/method | pearson |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in result["pearson"].items()]
    if by.get("paper", {}).get("table"):
        lines += ["", by["paper"]["table"].split("<!-- bench:paper -->")[-1].split("<!-- /bench:paper -->")[0].strip()]
    if by.get("k", {}).get("ok"):
        lines += ["", "Step 4, " + by["k"]["stdout"].strip()]
    for s in steps:
        if not s["ok"]:
            lines += ["", f"### {s['step']} failed", "", "```", s["tail"][-1500:], "```"]
    text = "\n".join(lines)
    write_section(out, "device-check" if cuda else "device-check-cpu", text)
    return text


if __name__ == "__main__":
    sys.exit(main())
