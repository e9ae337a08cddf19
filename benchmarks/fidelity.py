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
attention), QK^T scaled inside `baddbmm` and the causal mask fused into the softmax's single pass over
the scores (as Megatron's CoreAttention and its fused scale-mask-softmax kernel), hidden and attention
dropout 0.1. The torchtitan rows use the bundled Llama (SDPA flash attention and a fused RMSNorm, as
torchtitan's Llama 2 13B config ran; its 70B config used an eager RMSNorm, here fused too).

Measured 2026-12-01 (this commit; error = predicted / published - 1; A100 constants fitted by
`calibrate_published.py`):
- SC'21 Table 1: +0.2% (1.7B tp1), -2.2%, -6.7%, -9.5% (18.4B tp8), -2.5%, +6.4%, +0.3%, +6.1%, +4.9%,
  +1.8% (1T tp8-pp64); mean |error| 4.1%, max 9.5%. Before this commit: -17.5% ... +2.9%, mean 9.0%,
  max 17.5%. What moved it: backward memory traffic measured from the block's own backward ops instead
  of assumed twice the forward's (softmax's backward moves 1.5x its forward, a residual add's gradient
  nothing); dropout and RMSNorm profiled as the GPU build runs them (`profiling/cuda_ops.py`:
  `native_dropout` with a 1-byte mask, not the CPU build's three ops and bf16 mask); the mask fused
  into the softmax as Megatron did (one fewer pass over the scores); FSDP2's copies around its
  collectives priced; the refit constants.
- torchtitan Llama 2 (FSDP2, 64 A100): -0.2% (13B, no recompute: 77 GiB, fits as torchtitan ran it;
  before, the CPU build's decomposed RMSNorm kept two fp32 copies of the hidden state and the row was
  priced at 97 GiB), +8.1% (13B selective), -1.1% (70B full); mean 3.1%, max 8.1% (before: +2.2%,
  +9.5%, +3.1%, from errors that cancelled). The selective row is torchtitan's selective-op policy,
  which also recomputes every other matmul; the model's selective recomputes the memory-bound ops only.

Measured 2026-12-04, after the optimizer term priced gradient clipping (12 B an element; the emitted
program's AdamW is fused on GPUs): SC'21 -0.2%, -2.6%, -7.0%, -9.7%, -2.6%, +6.3%, +0.6%, +6.1%, +4.9%,
+1.7%, mean 4.2%, max 9.7%; torchtitan -0.3%, +8.0%, -1.2%, mean 3.2%, max 8.0%.

Rows with pipeline stages also show the prediction at Megatron-LM's even split of the blocks (what it
ran), beside the solved bounds (what the planner's program would run). Measured 2026-12-03: equal for
39.1B, 310.1B, 529.6B and 1008B; 76.1B 148.2 (+5.8%) against 149.0 solved; 145.6B tp8-pp8 interleaved
v2 137.3 (-7.2%) against 148.6 (+0.4%): the solver moves blocks off the embedding's and head's stages.
Before the master learned from every solution it passes (2026-12-03), 310.1B's solved bounds were worse
than the even split (159.6 against 164.5): the solved column depends on the solver, the even one does not.
On 2026-12-04 it was so again (153.4 against 164.4, and 145.6B at 146.8: mean 3.7%): a 30 s solve cut
short returned a slower partition than the even split. A layout priced alone now starts from the even
split (`pricing.even_start`), so the solved column is never below it: the figures below again.

Run: python benchmarks/fidelity.py [published.json]
"""
from __future__ import annotations

import functools
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import planner
from planner.cluster.graph import Cluster, parse_gpus
from planner.cluster.hardware import Device
from planner.cost.model import CostModel, even_split
from planner.search.pricing import evaluate_fixed
from planner.types.estimate import Estimate
from planner.types.profile import ModelProfile
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
    \"\"\"Attention as Megatron-LM ran it in 2021 (no flash attention): QK^T scaled inside the GEMM
    (`torch.baddbmm(..., alpha=1/sqrt(d))`, as Megatron's CoreAttention), its fused scale + causal
    mask + softmax kernel (one read and one write of the scores; here the mask rides into the same
    baddbmm as a broadcast bias, so the softmax is the one pass over the scores Megatron's kernel
    makes: torch's _masked_softmax has no meta backward to profile), attention dropout, then the
    product with V.\"\"\"

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, self.head_dim).transpose(1, 2).reshape(-1, s, self.head_dim)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = torch.full((s, s), float("-inf"), dtype=q.dtype, device=x.device).triu(1)
        scores = torch.baddbmm(mask, q, k.transpose(-2, -1), alpha=1.0 / math.sqrt(self.head_dim))
        probs = F.dropout(scores.softmax(-1), self.dropout, self.training)
        y = (probs @ v).view(b, -1, s, self.head_dim).transpose(1, 2).reshape(b, s, -1)
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
                             ffn_dim={ffn}, vocab_size={vocab}, seq_len={seq}, rope_theta={rope_theta}))
"""


def megatron_flops(row: dict, seq: int, vocab: int) -> float:
    """FLOPs per step as SC'21 counts them (full recompute: 4 passes of the blocks' GEMMs)."""
    b, l, h = row["batch"], row["layers"], row["hidden"]
    return 96 * b * seq * l * h * h * (1 + seq / (6 * h) + vocab / (16 * l * h))


@dataclass(frozen=True)
class Case:
    """One published row with its layout fixed: what to profile, where, and how to read a step time."""

    table: str
    label: str
    published: float
    path: Path
    """The row's model file (written under the temp dir, so its profile stays cached)."""
    cluster: str
    gpu: str
    strategy: Strategy
    batch: int
    work: float
    """Per-GPU work per step in the table's unit: predicted = work / step seconds."""


def cases(data: dict, tmp: Path) -> list[Case]:
    """Every row of both tables as a `Case` (writes the model files)."""
    examples = str(ROOT / "examples")
    out = []
    t = data["megatron_sc21_table1"]
    for row in t["rows"]:
        path = tmp / f"gpt_{row['name'].replace('.', '_')}.py"
        path.write_text(GPT_FILE.format(examples=examples, seq=t["seq"], vocab=t["vocab"], dropout=MEGATRON_DROPOUT, **row))
        out.append(Case("sc21", f"{row['name']} tp{row['tp']} pp{row['pp']}", row["tflops_hw"], path,
                        f"{t['gpus_per_node']}x{row['gpus'] // t['gpus_per_node']}", t["gpu"],
                        _strategy(row, 0, t["recompute"]), row["batch"],
                        megatron_flops(row, t["seq"], t["vocab"]) / row["gpus"] / 1e12))
    t = data["torchtitan_llama2_a100"]
    out += [llama_case("torchtitan", row, t["gpus_per_node"], t["gpu"], tmp) for row in t["rows"]]
    return out


def llama_case(table: str, row: dict, gpus_per_node: int, gpu: str, tmp: Path) -> Case:
    """A torchtitan row (tokens/s per GPU) on the bundled Llama; RoPE base 10,000 (Llama 2) unless the
    row gives its own."""
    path = tmp / f"llama_{row['name'].replace(' ', '_')}.py"
    path.write_text(LLAMA_FILE.format(examples=str(ROOT / "examples"), **{"rope_theta": 10000.0, **row}))
    return Case(table, row["name"], row["wps"], path, f"{gpus_per_node}x{row['gpus'] // gpus_per_node}", gpu,
                _strategy(row, row["zero"], row["recompute"]), row["batch"], row["batch"] * row["seq"] / row["gpus"])


def _strategy(row: dict, zero: int, recompute: str) -> Strategy:
    tp, pp, vpp = row["tp"], row["pp"], row.get("vpp", 1)
    dp = row["gpus"] // (tp * pp)
    return Strategy(dp=dp, tp=tp, pp=pp, vpp=vpp, dp_shard=dp if zero else 1, micro_batch_size=row["mbs"],
                    num_micro_batches=row["batch"] // (dp * row["mbs"]), schedule="interleaved" if vpp > 1 else "1f1b",
                    zero=zero, sequence_parallel=False, recompute=(recompute,) * (pp * vpp))


@functools.lru_cache(maxsize=None)
def _inputs(case: Case) -> tuple[ModelProfile, Cluster]:
    return planner.profile(str(case.path), micro_batch=1), parse_gpus(case.cluster, case.gpu)[0]


def cost_model(case: Case, device: Device | None = None) -> CostModel:
    """The row's cost model (with `device`: the same cluster priced with other device constants)."""
    return CostModel(*_inputs(case), memory_fraction=1.0, device=device)


def price(case: Case, device: Device | None = None) -> tuple[Estimate, Strategy, bool]:
    """(estimate, the strategy with its solved stage bounds, fits) of the row's layout."""
    cm = cost_model(case, device)
    s = case.strategy
    cand = evaluate_fixed(cm, s, case.batch, recompute=s.recompute[0], limit=30)
    if cand.estimate is None:
        return cm.estimate(s, case.batch), s, False
    return cand.estimate, cand.strategy, cand.estimate.feasible


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


def _even(case: Case, s: Strategy) -> str:
    """With pipeline stages: the row priced at the even split of its blocks (Megatron-LM's own, the
    embedding on the first stage and the head on the last) rather than the solved bounds, so that a
    reader sees how much of the prediction the solver's placement accounts for."""
    if s.pp == 1:
        return ""
    cm = cost_model(case)
    e = cm.estimate(replace(s, layers_per_chunk=even_split(cm.profile, s.chunks)), case.batch)
    return f"; even split {case.work / e.step_time_s:.1f} ({case.work / e.step_time_s / case.published - 1:+.1%})"


TMP = Path(tempfile.gettempdir()) / "planner-fidelity"
"""A fixed place for the rows' model files, so their profiles stay cached between runs."""


def main(argv: list[str]) -> None:
    data = json.loads(Path(argv[0] if argv else PUBLISHED).read_text())
    TMP.mkdir(exist_ok=True)
    all_cases = cases(data, TMP)
    for table, key in (("sc21", "megatron_sc21_table1"), ("torchtitan", "torchtitan_llama2_a100")):
        rows = []
        for case in (c for c in all_cases if c.table == table):
            e, s, fits = price(case)
            gib = max(e.memory_bytes_per_pp_rank) / 2**30
            rows.append((case.label, case.published, case.work / e.step_time_s,
                         f"{gib:.0f} GiB" + ("" if fits else " (does not fit)") + _even(case, s)))
        unit = "hardware TFLOP/s per GPU" if table == "sc21" else "tokens/s per GPU"
        report(f"{key}: {data[key]['source']}", rows, unit)


if __name__ == "__main__":
    main(sys.argv[1:])
