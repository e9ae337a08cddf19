"""Predicted vs published training throughput, layout fixed: every row of
`../shared/calibration/published.json` (Megatron-LM SC'21 Table 1 in hardware TFLOP/s per GPU,
torchtitan's Llama 2 FSDP2 rows in tokens/s per GPU), then the mean and max absolute error per table.

Each row's model is written out as a model file over the bundled examples (GPT for SC'21, Llama for
torchtitan) with the row's sizes, profiled on fake tensors (cached), and priced by the cost model at
exactly the published layout: tp, pp, dp, micro-batch, virtual stages (interleaved 1F1B where the row
has vpp, else 1F1B), sharding (Megatron: none; torchtitan: FSDP2 = zero 3), recompute, no sequence
parallel (SC'21 predates it). Stage bounds and nothing else are solved. Memory is not a constraint here
(fraction 1.0); a row the model says does not fit is marked.

SC'21 throughput is compared the way the paper counts it: Megatron's formula
96·B·s·l·h²·(1 + s/6h + V/16lh) FLOPs per step over the predicted step time, so the comparison is one of
step times, not of FLOP-counting conventions.

The SC'21 rows are written as Megatron-LM ran them in 2021: attention on materialised scores (no flash
attention; its fused scale-mask-softmax kernel approximated by a folded scale and a bias add), hidden and
attention dropout 0.1. The torchtitan rows use the bundled Llama (SDPA flash attention, as torchtitan).

Measured 2026-12-01 (this commit; error = predicted / published - 1):
- SC'21 Table 1: -17.5% (1.7B tp1), -17.0%, -16.4%, -17.3% (18.4B tp8), -10.0%, -0.2%, -5.6%, +2.1%, +2.9%,
  +0.5% (1T tp8-pp64); mean |error| 9.0%, max 17.5%. The same rows priced with flash attention (the
  bundled GPT): +36.9% ... +2.4%, mean 14.5%. Before vocabulary-parallel embedding/head (same flash
  file): +38% ... -13% (1T -16%). What the small-model rows still miss is implementation, not
  hardware: the model prices eager, unfused elementwise ops (the emitted program runs eagerly), where
  Megatron fused bias-GeLU, bias-dropout-add, LayerNorm and the softmax; and Megatron's local DDP of
  2021 all-reduced fp32 gradients after the backward, where torch DDP overlaps them.
- torchtitan Llama 2 (FSDP2, 64 A100): +2.2% (13B, no recompute: predicted 97 GiB, not fitting 80),
  +9.5% (13B selective), +3.1% (70B full); mean 4.9%, max 9.5%. Causal flash attention priced as the
  lower triangle of tiles alone moved these to +5.0 / +12.3 / +5.4%; the overlap interference of DP
  collectives brought them back (before both: -3.9 / +3.3 / -0.8%, two errors cancelling). The selective
  row is torchtitan's selective-op policy, which also recomputes every other matmul; the model's
  selective recomputes the memory-bound ops only.

Run: python benchmarks/fidelity.py [published.json]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import planner
from planner.cluster.graph import parse_gpus
from planner.cost.model import CostModel
from planner.search.search import evaluate_fixed
from planner.types.strategy import Strategy

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT.parent / "shared" / "calibration" / "published.json"

GPT_FILE = """import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, {examples!r})
from gpt import GPT, CausalSelfAttention, GPTConfig, batch  # noqa: E402,F401


class Megatron2021Attention(CausalSelfAttention):
    \"\"\"Attention as Megatron-LM ran it in 2021 (no flash attention): QK^T on the materialised scores,
    its fused scale + causal mask + softmax kernel (here the scale folded into q and the mask added as a
    broadcast bias: one more pass over the scores than Megatron's kernel; torch's _masked_softmax has
    no meta backward to profile), attention dropout, then the product with V.\"\"\"

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
        bias = torch.full((s, s), float("-inf"), dtype=scores.dtype, device=x.device).triu(1)
        probs = F.dropout((scores + bias).softmax(-1), self.dropout, self.training)
        y = (probs @ v).transpose(1, 2).reshape(b, s, -1)
        return self.resid_drop(self.o_proj(y))


def model():
    m = GPT(GPTConfig(n_layer={layers}, n_embd={hidden}, n_head={heads}, vocab_size={vocab}, seq_len={seq},
                      dropout={dropout}))
    for block in m.blocks:
        block.attn.__class__ = Megatron2021Attention
    return m
"""
MEGATRON_DROPOUT = 0.1
"""Hidden and attention dropout of the SC'21 runs (Megatron-LM's defaults, GPT-3's setting)."""

LLAMA_FILE = """import sys
sys.path.insert(0, {examples!r})
from llama import Llama, LlamaConfig, batch  # noqa: E402,F401


def model():
    return Llama(LlamaConfig(n_layers={layers}, dim={hidden}, n_heads={heads}, n_kv_heads={kv_heads},
                             ffn_dim={ffn}, vocab_size={vocab}, seq_len={seq}, rope_theta=10000.0))
"""


def megatron_flops(row: dict, seq: int, vocab: int) -> float:
    """FLOPs per step as SC'21 counts them (full recompute: 4 passes of the blocks' GEMMs)."""
    b, l, h = row["batch"], row["layers"], row["hidden"]
    return 96 * b * seq * l * h * h * (1 + seq / (6 * h) + vocab / (16 * l * h))


def price(path: Path, row: dict, gpn: int, gpu: str, zero: int, recompute: str) -> tuple[float, bool, float]:
    """(predicted step seconds, fits, peak GiB) of the row's layout."""
    prof = planner.profile(str(path), micro_batch=1)
    cluster = parse_gpus(f"{gpn}x{row['gpus'] // gpn}", gpu)[0]
    cm = CostModel(prof, cluster, memory_fraction=1.0)
    tp, pp, vpp = row["tp"], row["pp"], row.get("vpp", 1)
    dp = row["gpus"] // (tp * pp)
    n = row["batch"] // (dp * row["mbs"])
    s = Strategy(dp=dp, tp=tp, pp=pp, vpp=vpp, dp_shard=dp if zero else 1, micro_batch_size=row["mbs"],
                 num_micro_batches=n, schedule="interleaved" if vpp > 1 else "1f1b", zero=zero,
                 sequence_parallel=False, recompute=(recompute,) * (pp * vpp))
    cand = evaluate_fixed(cm, s, row["batch"], recompute=recompute, limit=30)
    e = cand.estimate if cand.estimate is not None else cm.estimate(s, row["batch"])
    return e.step_time_s, cand.estimate is not None and e.feasible, max(e.memory_bytes_per_pp_rank) / 2**30


def report(name: str, rows: list[tuple[str, float, float, str]], unit: str) -> list[float]:
    print(f"\n{name}  ({unit})")
    print(f"  {'row':<22}{'published':>10}{'predicted':>11}{'error':>9}")
    errs = []
    for label, pub, pred, note in rows:
        err = pred / pub - 1
        errs.append(err)
        print(f"  {label:<22}{pub:>10.1f}{pred:>11.1f}{err:>+9.1%}  {note}")
    mean = statistics.mean(abs(e) for e in errs)
    print(f"  mean |error| {mean:.1%}, max |error| {max(abs(e) for e in errs):.1%}")
    return errs


def main(argv: list[str]) -> None:
    data = json.loads(Path(argv[0] if argv else PUBLISHED).read_text())
    examples = str(ROOT / "examples")
    tmp = Path(tempfile.gettempdir()) / "planner-fidelity"  # a fixed place, so the profiles stay cached
    tmp.mkdir(exist_ok=True)
    if True:
        t = data["megatron_sc21_table1"]
        rows = []
        for row in t["rows"]:
            path = Path(tmp) / f"gpt_{row['name'].replace('.', '_')}.py"
            path.write_text(GPT_FILE.format(examples=examples, seq=t["seq"], vocab=t["vocab"], dropout=MEGATRON_DROPOUT,
                                            **row))
            step, fits, gib = price(path, row, t["gpus_per_node"], t["gpu"], 0, t["recompute"])
            pred = megatron_flops(row, t["seq"], t["vocab"]) / step / row["gpus"] / 1e12
            rows.append((f"{row['name']} tp{row['tp']} pp{row['pp']}", row["tflops_hw"], pred,
                         f"{gib:.0f} GiB" + ("" if fits else " (does not fit)")))
        report(f"Megatron-LM SC'21 Table 1: {t['source']}", rows, "hardware TFLOP/s per GPU")
        t = data["torchtitan_llama2_a100"]
        rows = []
        for row in t["rows"]:
            path = Path(tmp) / f"llama_{row['name'].replace(' ', '_')}.py"
            path.write_text(LLAMA_FILE.format(examples=examples, **row))
            step, fits, gib = price(path, row, t["gpus_per_node"], t["gpu"], row["zero"], row["recompute"])
            pred = row["batch"] * row["seq"] / step / row["gpus"]
            rows.append((row["name"], row["wps"], pred, f"{gib:.0f} GiB" + ("" if fits else " (does not fit)")))
        report(f"torchtitan Llama 2: {t['source']}", rows, "tokens/s per GPU")


if __name__ == "__main__":
    main(sys.argv[1:])
