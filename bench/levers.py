"""``python -m bench --levers``: the speed levers of issue 13, each measured against the same baseline in one run.

One AdamW training step (forward, token-mean NLL through :func:`untrac.models.example_losses`, backward,
step) at the shapes of the two ``mini`` models — the corpora model (1-layer OPT, d 128, batch 8 x 64)
and the synthetic model (4-layer OPT, d 128; pretraining batch 16 x 128, fine-tuning batch 16 x 48) —
for each lever on its own and combined:

* ``vocabulary / 4``: a 1,024-token vocabulary instead of 4,096 (the logits, the log-softmax and the
  tied embedding shrink four-fold; the layers stay);
* ``bf16 autocast``: ``torch.autocast("cpu", bfloat16)`` around the forward (what
  :class:`untrac.accel.Accel` does), on a CPU with native bf16 (AMX / avx512_bf16) where present;
* ``fused AdamW``: ``torch.optim.AdamW(fused=True)`` instead of the for-loop default on CPU.

then batching K models as one ``torch.func`` ensemble (``stack_module_state`` + ``vmap(grad(...))``: K
training steps as one) against the same K steps one model after the other (:func:`ensemble`), and one piece
of work that was done again and again: TRAK's projection sketch (``untrac.methods.trak``), kept
against traker's ``BasicProjector`` redrawing it for every batch, at the synthetic mini model's gradient size.

Variants run round-robin in one process (:func:`bench.common.interleaved`), ratios are medians over
rounds of the per-round ratio against the baseline. GFLOP/s counts ``6 x parameters x tokens`` (the
tied LM head included) against a measured fp32 GEMM rate of this core (:func:`bench.paper.cpu_peak`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import OPTConfig, OPTForCausalLM

from untrac.models import example_losses

from .common import blocks, interleaved, paired_ratio
from .paper import cpu_peak

# (label, layers, vocabulary, batch, block): the mini presets' shapes (untrac/presets.py)
SHAPES = (
    ("corpora mini model, training", 1, 4096, 8, 64),
    ("synthetic mini model, pretraining", 4, 4096, 16, 128),
    ("synthetic mini model, fine-tuning", 4, 4096, 16, 48),
)
LEVERS: dict[str, dict[str, Any]] = {
    "baseline (fp32, for-loop AdamW)": {},
    "vocabulary / 4": {"vocab_div": 4},
    "bf16 autocast": {"bf16": True},
    "fused AdamW": {"fused": True},
    "vocabulary / 4 + fused AdamW": {"vocab_div": 4, "fused": True},
    "vocabulary / 4 + bf16 + fused": {"vocab_div": 4, "bf16": True, "fused": True},
}


def _step_fn(layers: int, vocab: int, batch: int, block: int, steps: int, device: torch.device,
             vocab_div: int = 1, bf16: bool = False, fused: bool = False) -> tuple[Callable[[], int], int]:
    vocab //= vocab_div
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=vocab, hidden_size=128, word_embed_proj_dim=128, num_hidden_layers=layers, ffn_dim=512,
                       num_attention_heads=4, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0)
    model = OPTForCausalLM(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    ids = torch.randint(4, vocab, (batch, block), generator=torch.Generator().manual_seed(0)).to(device)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def run() -> int:
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = example_losses(model, data).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch * block

    return run, sum(p.numel() for p in model.parameters())


def run_levers(device: torch.device, reps: int = 7, steps: int = 5) -> tuple[list[dict], str]:
    """Rows (shape x lever): ms per step, speed-up vs the baseline of the same shape, GFLOP/s and % of peak."""
    peak, peak_note = cpu_peak() if device.type == "cpu" else (float("nan"), "GPU: no CPU peak")
    rows = []
    for label, layers, vocab, batch, block in SHAPES:
        fns, params = {}, {}
        for lever, opts in LEVERS.items():
            fns[lever], params[lever] = _step_fn(layers, vocab, batch, block, steps, device, **opts)
        series = interleaved(fns, reps, device)
        base = series[next(iter(LEVERS))]
        for lever, s in series.items():
            sec = float(np.median(s.seconds())) / steps
            flops = 6 * params[lever] * batch * block / sec
            rows.append({"shape": label, "lever": lever, "ms per step": f"{1e3 * sec:.1f}",
                         "speed-up vs baseline": f"{paired_ratio(s, base):.2f}x",
                         "GFLOP/s": f"{flops / 1e9:.0f}", "% of fp32 GEMM peak": f"{100 * flops / peak:.0f}"})
            print(rows[-1], flush=True)
    return rows, (f"{reps} interleaved rounds of {steps} steps per variant; {torch.get_num_threads()} thread(s); "
                  f"peak: {peak_note}")


def trak_sketch(device: torch.device, reps: int = 2, n_train: int = 640, n_test: int = 64) -> tuple[list[dict], str]:
    """TRAK (proj_dim 512, batch 64) on a synthetic-mini-shaped model: the kept sketch against traker's redraw."""
    from untrac import attribute
    from untrac.methods import trak

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=4096, hidden_size=128, word_embed_proj_dim=128, num_hidden_layers=4, ffn_dim=512,
                       num_attention_heads=4, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0)
    model = OPTForCausalLM(config).to(device)
    train = {f"train{i}": blocks(n_train // 4, 48, 4096, seed=i) for i in range(4)}
    test = {"test": blocks(n_test, 48, 4096, seed=9)}
    keep = trak.KEEP_BYTES

    def run(kept: bool) -> Callable[[], int]:
        def go() -> int:
            trak.KEEP_BYTES = keep if kept else 0
            try:
                attribute("TRAK", model, train, test, 1, proj_dim=512, progress=False)
            finally:
                trak.KEEP_BYTES = keep
            return n_train + n_test
        return go

    series = interleaved({"traker's BasicProjector (redraws per batch)": run(False), "kept sketch (now)": run(True)},
                         reps, device, warmup=0)
    before, now = series.values()
    rows = [{"TRAK projection": s.name, "seconds": f"{float(np.median(s.seconds())):.1f}",
             "speed-up": f"{paired_ratio(s, before):.2f}x"} for s in (before, now)]
    grad_dim = sum(p.numel() for p in model.parameters())
    return rows, (f"{reps} interleaved rounds; 4-layer OPT, d 128, vocab 4,096 ({grad_dim:,} gradient dimensions), "
                  f"{n_train} training + {n_test} test examples of 48 tokens, proj_dim 512, batch 64; same scores bit for bit "
                  "(tests/test_peers.py)")


def ensemble(device: torch.device, k: int = 4, reps: int = 5, steps: int = 3) -> tuple[list[dict], str]:
    """K corpora-mini-shaped models: one vmapped training step of all K (``torch.func``) against K ordinary steps.

    Plain SGD updates on both sides (the comparison is the forward/backward; an optimizer would cost the same
    per parameter either way). HF's OPT only vmaps without an attention mask (its mask building branches on
    the data), so both sides run with none: a causal model on unpadded blocks.
    """
    from torch.func import functional_call, grad, stack_module_state, vmap

    batch, block, vocab = 8, 64, 4096
    config = OPTConfig(vocab_size=vocab, hidden_size=128, word_embed_proj_dim=128, num_hidden_layers=1, ffn_dim=512,
                       num_attention_heads=4, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    models = [OPTForCausalLM(config).to(device).train() for _ in range(k)]
    ids = torch.randint(4, vocab, (k, batch, block), generator=torch.Generator().manual_seed(0)).to(device)
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")

    def nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1))

    def loss(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return nll(functional_call(skeleton, (p, b), (x,)).logits, x)

    def vmapped() -> int:
        for _ in range(steps):
            g = vmap(grad(loss))(params, buffers, ids)
            with torch.no_grad():
                for name in params:
                    params[name].sub_(1e-4 * g[name])
        return steps * k * batch * block

    def one_by_one() -> int:
        for _ in range(steps):
            for m, x in zip(models, ids):
                m.zero_grad(set_to_none=True)
                nll(m(input_ids=x).logits, x).backward()
                with torch.no_grad():
                    for q in m.parameters():
                        q.sub_(1e-4 * q.grad)
        return steps * k * batch * block

    series = interleaved({f"{k} models one after the other": one_by_one, f"{k} models as one vmapped ensemble": vmapped},
                         reps, device)
    before, now = series.values()
    rows = [{"variant": s.name, "ms per model-step": f"{1e3 * float(np.median(s.seconds())) / (steps * k):.1f}",
             "speed-up": f"{paired_ratio(s, before):.2f}x"} for s in (before, now)]
    return rows, (f"{reps} interleaved rounds of {steps} steps; corpora mini model (1-layer OPT, d 128, vocab 4,096), "
                  f"batch {batch} x {block} tokens per model, {torch.get_num_threads()} thread(s)")
