"""End-to-end wall time of an experiment from a cold cache, one worker against all cores.

    python -m bench.pipeline                                   # synthetic, mini models, 1 family x 1 run
    python -m bench.pipeline --experiment corpora --scale smoke
    python -m bench.pipeline --set runs=2 --set train__steps=256 --workers 1 2
    python -m bench.pipeline --experiment corpora --scale mini --workers 2   # notebook 02's work, by phase

Each variant runs in a fresh process with an empty cache (so worker start-up, tokenisation and
every training count), one after the other, and the ratio is taken within this one invocation.
The tables must come out identical whatever the number of workers: the script checks it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import untrac
from untrac import evaluate
experiment, scale, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
phases = {}
if experiment == "synthetic":
    from untrac.experiments import synthetic
    preset = untrac.preset("synthetic", scale, **overrides)
    results = synthetic.synthetic_experiment(preset, methods=untrac.METHODS, progress=False)
    table = {f: evaluate.correlation_table(r).round(12).to_dict("records") for f, r in results.items()}
else:  # notebook 02's work, phase by phase
    from untrac.experiments import corpora
    preset = untrac.preset("corpora", scale, **overrides)
    for name in preset.settings:
        t = time.perf_counter()
        corpora.corpora_setting(preset, name, progress=False)
        phases[f"models, {name} sizes"] = time.perf_counter() - t
    t = time.perf_counter()
    results = corpora.corpora_experiment(preset, progress=False)
    phases["attributions"] = time.perf_counter() - t
    table = evaluate.correlation_frame(results).round(12).to_dict("records")
print(json.dumps({"seconds": time.perf_counter() - t0, "phases": phases, "table": table}))
"""


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(experiment: str, scale: str, overrides: dict, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="untrac-bench-") as cache:
        env = {**os.environ, "UNTRAC_CACHE": cache, "UNTRAC_WORKERS": str(workers), "OMP_NUM_THREADS": "1",
               "UNTRAC_PROGRESS": "0"}
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, experiment, scale, json.dumps(overrides)], env=env,
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"workers": workers, "wall": wall, "inside": result["seconds"], "phases": result.get("phases", {}),
            "table": result["table"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", choices=["synthetic", "corpora"], default="synthetic")
    parser.add_argument("--scale", default="mini")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="preset override (nested with __), e.g. runs=1, families=[\"B\"]")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--out", type=Path, default=None, help="also write the table into this RESULTS.md section")
    args = parser.parse_args(argv)
    overrides = {"runs": 1, "families": ["B"]} if args.experiment == "synthetic" and not args.set else {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    rows = [run(args.experiment, args.scale, overrides, w) for w in args.workers]
    same = all(r["table"] == rows[0]["table"] for r in rows)
    base = rows[0]["wall"]
    lines = [f"{args.experiment} at {args.scale} with {overrides or 'the preset'}; cold cache, 1 thread per process; "
             f"tables identical across worker counts: {same}", "",
             "| workers | wall s | inside the experiment s | speed-up vs first row |"
             + "".join(f" {p} s |" for p in rows[0]["phases"]), "|---|---|---|---|" + "---|" * len(rows[0]["phases"])]
    lines += [f"| {r['workers']} | {r['wall']:.1f} | {r['inside']:.1f} | {base / r['wall']:.2f}x |"
              + "".join(f" {v:.1f} |" for v in r["phases"].values()) for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        from .__main__ import write_section

        write_section(args.out, f"pipeline-{args.experiment}", "## Pipeline: cold wall time by worker count\n\n" + text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
