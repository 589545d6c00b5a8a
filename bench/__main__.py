"""``python -m bench``: speed, memory and cost of untrac against bare PyTorch (issue 6).

    python -m bench            # the five measurements (~3 min on a 2-core CPU), written to bench/RESULTS.md
    python -m bench --quick    # fewer repetitions (~1 min)
    python -m bench --paper    # OPT-125M at batch 1 x 1024 (steps/s, MFU, projected time per corpus)
    python -m bench --profile  # add torch.profiler tables of the unlearning loop vs the bare loop
    python -m bench --levers   # issue 13's levers (vocabulary, bf16, fused AdamW) at the mini models' shapes

Each mode rewrites its own section of RESULTS.md and keeps the others.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import common

HERE = Path(__file__).resolve().parent


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))  # every key, in first-seen order
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the ``name`` section of ``path`` (between HTML-comment markers), keeping the rest."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# untrac bench results\n\nWritten by `python -m bench` (see bench/README.md).\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller workloads")
    parser.add_argument("--paper", action="store_true", help="run the OPT-125M paper-scale path instead of the main bench")
    parser.add_argument("--paper-steps", type=int, default=None, help="timed steps per variant (default: 50 on CUDA, 2 on CPU)")
    parser.add_argument("--compile", action="store_true", help="--paper: also time a torch.compile variant")
    parser.add_argument("--levers", action="store_true", help="time the speed levers at the mini models' shapes instead")
    parser.add_argument("--profile", action="store_true", help="also profile the unlearning loop against the bare loop")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast-path rows of (1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads on CPU (default: 1 for the main bench, less noise on a shared machine; all for --paper)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or (torch.get_num_threads() if args.paper else 1))
    os.environ.setdefault("UNTRAC_CACHE", tempfile.mkdtemp(prefix="untrac-bench-cache-"))  # never touch the user's cache
    started = time.perf_counter()
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = common.describe_device(device)
    print(f"device: {machine}", flush=True)

    if args.paper:
        from .paper import run_paper

        steps = args.paper_steps or (50 if device.type == "cuda" else 2)
        warmup = 5 if device.type == "cuda" else 1
        rows, notes = run_paper(device, steps, warmup, args.compile)
        label = "GPU" if device.type == "cuda" else "CPU ONLY - not a GPU measurement; a few steps, indicative"
        body = (f"## Paper-scale path: OPT-125M, batch 1 x 1,024 ({label})\n\n{stamp}; {machine}; "
                f"{time.perf_counter() - started:.0f} s.\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + table(rows))
        print(body)
        write_section(args.out, "paper", body)
        return 0

    if args.levers:
        from .levers import ensemble, run_levers, trak_sketch

        rows, workload = run_levers(device, reps=3 if args.quick else 7)
        ens_rows, ens_workload = ensemble(device, reps=2 if args.quick else 5)
        trak_rows, trak_workload = trak_sketch(device, reps=1 if args.quick else 2)
        body = (f"## Speed levers at the mini models' shapes (issue 13)\n\n{stamp}; {machine}; {workload}; "
                f"{time.perf_counter() - started:.0f} s. One AdamW training step; see bench/levers.py.\n\n" + table(rows)
                + f"\n\n### K models as one torch.func ensemble\n\n{ens_workload}.\n\n" + table(ens_rows)
                + f"\n\n### Work not redone: TRAK's projection sketch\n\n{trak_workload}.\n\n" + table(trak_rows))
        print(body)
        write_section(args.out, "levers", body)
        return 0

    from . import suite

    sz = suite.Sizes.quick() if args.quick else suite.Sizes()
    tok = common.tokenizer()
    model = common.small_model(tok, device=str(device))
    size = f"OPT {model.config.num_hidden_layers} layers x d {model.config.hidden_size}, vocab {len(tok)}, {common.n_params(model):,} parameters"
    print(f"model: {size}", flush=True)
    parts = [f"## Main bench{' (--quick)' if args.quick else ''}\n\n{stamp}; {machine}; model: {size}. "
             "Ratios are medians over interleaved rounds within one process (a ratio > 1: faster than bare); "
             + ("no GPU was available: every number is CPU." if device.type == "cpu" else "GPU timings synchronise before reading the clock.")]

    print(f"[{time.perf_counter() - started:.0f} s] " + "(1) unlearning throughput ...", flush=True)
    rows = suite.unlearning_throughput(model, tok, device, sz, fast=not args.no_fast)
    parts.append(f"### (1) Unlearning-step throughput: untrac vs a bare loop\n\n{sz.reps} rounds; {sz.steps} steps per round "
                 "(UnTrac-like), Adam lr 1e-5; the package's time includes its restore from the snapshot, the optimizer "
                 "and its data pipeline (shuffled stream, collation, cost accounting). Fast-path rows compare against "
                 "the same plain bare loop.\n\n" + table(rows))
    print(parts[-1], flush=True)

    print(f"[{time.perf_counter() - started:.0f} s] " + "(2) evaluation throughput ...", flush=True)
    rows = suite.evaluation_throughput(model, tok, device, sz)
    parts.append(f"### (2) Evaluation throughput: dataset_loss vs a bare no_grad forward\n\n{sz.n_eval} examples of 16-{sz.block} "
                 f"tokens, batch {sz.eval_batch}; tokens/s counts real (unpadded) tokens; padding = padded / real - 1.\n\n" + table(rows))
    print(parts[-1], flush=True)

    print(f"[{time.perf_counter() - started:.0f} s] " + "(3) peak memory ...", flush=True)
    rows, workload = suite.peak_memories(model, tok, device, sz)
    parts.append(f"### (3) Peak memory\n\n{common.MEMORY_METHOD[device.type]}; median of >= 3 runs after a warm-up; "
                 f"{workload}.\n\n" + table(rows))
    print(parts[-1], flush=True)

    print(f"[{time.perf_counter() - started:.0f} s] " + "(4, 5) method costs ...", flush=True)
    baselines, inv, workload = suite.method_costs(model, tok, device, sz)
    parts.append(f"### (4) Baselines' cost relative to one training epoch\n\n{workload}. Examples and tokens: the package's "
                 "`Cost` record (`Influence.cost`); peak memory as in (3).\n\n" + table(baselines))
    parts.append(f"### (5) UnTrac vs UnTrac-Inv, K = {sz.k} training sets\n\n" + table(inv))
    print(parts[-2] + "\n\n" + parts[-1], flush=True)

    print(f"[{time.perf_counter() - started:.0f} s] " + "(6) loss layout ...", flush=True)
    rows, workload = suite.loss_layout(device, sz)
    parts.append(f"### (6) One lever, measured in one run: the loss's layout\n\n{workload}; the same arithmetic up to "
                 "summation order (tests/test_fast_paths.py), a different memory walk over the vocabulary.\n\n" + table(rows))
    print(parts[-1], flush=True)

    if args.profile:
        print(f"[{time.perf_counter() - started:.0f} s] " + "profiling ...", flush=True)
        parts.append("### Profile of the unlearning loop (torch.profiler, self CPU time)\n\n"
                     + suite.profile_unlearning(model, tok, device, sz))
        print(parts[-1])

    parts.append(f"Total bench time: {time.perf_counter() - started:.0f} s.")
    write_section(args.out, "main", "\n\n".join(parts))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
