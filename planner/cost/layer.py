"""Per-layer time and activation memory at one (tp, sequence parallel, micro-batch) point.

Everything here is per micro-batch and per rank. The profile was measured at `profile.micro_batch`
samples; FLOPs, bytes and the token dimension of every GEMM scale linearly with the micro-batch (the
profile records the shapes, so the scaled GEMM keeps its true aspect ratio).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from planner.cluster.hardware import Device
from planner.cost.memory import DTYPE_BYTES
from planner.types.profile import Gemm, LayerProfile, ModelProfile

__all__ = ["LayerCost", "layer_costs", "gemm_times", "activation_bytes", "tp_collectives", "vocab_styles"]

TpTime = Callable[[str, float], float]
"""(collective op, bytes) -> seconds for all TP groups at once."""

ATTENTION_BWD_FACTOR = 2.5
"""Flash attention's backward does 2.5x the forward's matmul work (it recomputes QK^T; Dao 2023,
FlashAttention-2 §3.1.2): hardware time, while MFU counts the model's 2x."""

BWD_OPS_PER_FWD_OP = 2.0
"""Where the backward was not measured (prefix, suffix): autograd runs about two operators per forward
operator (a matmul's two products, an elementwise op's gradient and its accumulation). An assumption,
used only with a device's `op_overhead`; blocks use the count recorded in their backward (`bwd_ops`)."""

ELEMENTWISE_BWD_FACTOR = 2.0
"""Where a layer's backward was not measured (prefix, suffix): memory-bound ops move about twice their
forward bytes in backward (read the saved input and the incoming gradient, write the outgoing
gradient). An assumption; blocks use the bytes the profiler recorded in their backward (`bwd_mem_bytes`:
e.g. softmax 3 passes against its forward's 2, dropout 2.5 against 2.5, a residual add's gradient none)."""


@dataclass(frozen=True, slots=True)
class LayerCost:
    """What one layer costs one rank per micro-batch."""

    fwd: float
    """Forward compute seconds (GEMMs, attention, memory-bound ops)."""
    bwd: float
    tp_fwd: float
    """Exposed TP collective seconds in forward (torch TP does not overlap them)."""
    tp_bwd: float
    elementwise: float
    """Forward seconds of the memory-bound ops: what selective recompute re-runs."""
    act: dict[str, int]
    """Recompute mode -> bytes saved for backward."""
    out_bytes: int
    """The hidden state handed to the next layer as one rank holds it (a stage boundary's p2p message)."""
    model_flops: float
    """Forward + backward model FLOPs on this rank."""
    fwd_flops: float
    loss_grad: int = 0
    """Backward bytes alive beyond the layer's activations at the start of the suffix's backward: the
    gradient of the loss's log-softmax output and that of the logits, each as large as the largest tensor
    the suffix saves (the fp32 log-softmax: 4.2 GB per 8K-token sample of Llama 3's 128K vocabulary)."""

    def transient(self, mode: str) -> int:
        """Backward's transient bytes under `mode`: the activations recomputed for it, the gradient in
        and out (two hidden states), and the loss's gradients (suffix)."""
        return self.act["none"] - self.act[mode] + 2 * self.out_bytes + self.loss_grad


def _scaled(g: Gemm, scale: float, tp: int) -> Gemm:
    """The GEMM at the new micro-batch (token rows, or the batch of a batched matmul) after the TP split:
    a projection's features, or a batched matmul's batch (samples x heads: TP divides the heads)."""
    n = g.n // tp if g.tp and g.batch == 1 else g.n
    if g.batch > 1:
        split = tp if g.tp else 1
        return Gemm(m=g.m, n=n, k=g.k, batch=max(1, round(g.batch * scale / split)), dtype=g.dtype, tp=g.tp)
    return Gemm(m=max(1, round(g.m * scale)), n=n, k=g.k, batch=1, dtype=g.dtype, tp=g.tp)


def gemm_times(device: Device, gemms: tuple[Gemm, ...], scale: float, tp: int) -> tuple[float, float]:
    """(forward, backward) seconds of a layer's GEMMs. A colwise split divides n and a rowwise split k;
    both are modelled as n / tp, which has the same FLOPs and, on the fitted curve, the same efficiency.
    Backward runs dA = dC·Bᵀ (m, k, n) and dB = Aᵀ·dC (k, n, m) per forward GEMM."""
    fwd = bwd = 0.0
    for g in gemms:
        s = _scaled(g, scale, tp)
        fwd += device.matmul_time(s.m, s.n, s.k, s.dtype, s.batch)
        bwd += device.matmul_time(s.m, s.k, s.n, s.dtype, s.batch)
        bwd += device.matmul_time(s.k, s.n, s.m, s.dtype, s.batch)
    return fwd, bwd


FLASH_TILE = 128
"""Query/key rows per tile of FlashAttention-2's kernels (Dao 2023, §3.1: block sizes 64-128)."""


def causal_work(q_len: int, kv_len: int) -> float:
    """Share of the full score square a causal flash kernel computes: with n = q_len / FLASH_TILE row
    tiles it skips the tiles above the diagonal and runs the n on it whole, (n + 1) / 2n of the square
    (FlashAttention-2 §3.1.1; about 1/2 at 8K tokens, all of it for one tile)."""
    n = max(1, -(-min(q_len, kv_len) // FLASH_TILE))
    return (n + 1) / (2 * n)


def _attention_times(device: Device, layer: LayerProfile, scale: float, tp: int) -> tuple[float, float]:
    """Fused attention at the measured rate of the nearest calibrated shape, else at the GEMM efficiency
    of its (q_len, kv_len, head_dim) tiles; heads split by TP;
    a causal kernel does `causal_work` of the square (model FLOPs still count the square, as Megatron's
    formula and torch's counter do)."""
    fwd = 0.0
    for a in layer.attention:
        rate = device.attention_rate(a.q_len, a.kv_len, a.head_dim, a.dtype)
        if rate is None:
            rate = device.peak(a.dtype) * device.matmul_efficiency(a.q_len, a.kv_len, a.head_dim, a.dtype)
        work = a.flops * (causal_work(a.q_len, a.kv_len) if a.causal else 1.0)
        fwd += work * scale / (tp if layer.kind == "block" else 1) / rate
    return fwd, ATTENTION_BWD_FACTOR * fwd


def activation_bytes(layer: LayerProfile, mode: str, scale: float, tp: int, sp: bool,
                     sp_gathers_inputs: bool = True, colwise_inputs: int = 0) -> int:
    """Saved bytes under `mode` on one TP rank.

    Tensors tagged `tp` divide by t; `sp` (one row per token, h wide) divide by t only with sequence
    parallel; `replicated` never. With torch's `SequenceParallel` + `ColwiseParallel`, each colwise
    projection group all-gathers its input and the matmul saves the gathered (full) copy, not the
    shard (Megatron-LM instead saves the shard and gathers again in backward). So under torch SP,
    `colwise_inputs` h-wide tensors per layer stay full: + colwise_inputs · out_bytes · (1 - 1/t).
    Selective and full recompute keep neither copy (the gather's output is not a matmul's)."""
    if mode not in layer.saved:
        mode = "none"
    total = 0.0
    for t in layer.saved[mode]:
        if t.shard == "tp" or (t.shard == "sp" and sp):
            total += t.nbytes / tp
        else:
            total += t.nbytes
    if sp and sp_gathers_inputs and mode == "none" and tp > 1:
        total += colwise_inputs * layer.output_bytes * (1 - 1 / tp)
    return int(total * scale)


def tp_collectives(profile: ModelProfile) -> int:
    """Collectives per block per pass: one per rowwise projection (its forward all-reduce, or RS + AG
    with SP), and one per colwise group in backward (equal in number for attention + MLP blocks)."""
    return sum(1 for style in profile.tp_plan.values() if style == "rowwise")


def _elementwise_share(layer: LayerProfile, tp: int, sp: bool) -> float:
    """The share of a layer's memory-bound bytes (forward or backward) one rank moves: the share on
    TP-split tensors (as measured by the saved tensors' tags) divides by t, the h-wide rest only with
    sequence parallel."""
    if tp == 1 or layer.kind != "block":
        return 1.0
    saved = layer.saved["none"]
    total = sum(t.nbytes for t in saved) or 1
    tp_share = sum(t.nbytes for t in saved if t.shard == "tp") / total
    rest = 1 - tp_share
    return tp_share / tp + rest / (tp if sp else 1)


def layer_costs(profile: ModelProfile, device: Device, tp: int, sp: bool, micro_batch: int,
                tp_time: TpTime) -> list[LayerCost]:
    """One `LayerCost` per profiled layer; identical blocks are priced once."""
    scale = micro_batch / profile.micro_batch
    n_coll = tp_collectives(profile)
    cache: dict[str, LayerCost] = {}
    out = []
    for layer in profile.layers:
        key = layer.signature if layer.kind == "block" and layer.signature else layer.name
        if key not in cache and layer.kind == "block":
            cache[key] = _one(profile, layer, device, tp, tp, sp, scale, n_coll, tp_time)
        elif key not in cache:
            cache[key] = _vocab_parallel(layer, vocab_styles(profile, layer), _one(
                profile, layer, device, 1, tp, sp, scale, 0, tp_time), device, tp, scale, tp_time)
        out.append(cache[key])
    return out


def vocab_styles(profile: ModelProfile, layer: LayerProfile) -> set[str]:
    """The vocabulary-parallel styles (embedding, head) of the modules this edge layer holds."""
    return {style for path, style in profile.tp_plan.items() if style.startswith("vocab_")
            and any(path == u or path.startswith(u + ".") for u in layer.modules)}


def _vocab_parallel(layer: LayerProfile, styles: set[str], cost: LayerCost, device: Device, tp: int, scale: float,
                    tp_time: TpTime) -> LayerCost:
    """An edge layer's cost with the embedding and LM head split along the vocabulary (the program's
    `apply_tp`): the head's GEMMs (the ones the profiler flagged) run on V/t columns; everything else
    (norm, loss on the gathered logits) stays replicated. Collectives, as torch's TP styles run them:
    the embedding's partial sums are all-reduced in forward (RowwiseParallel, output replicated); the
    head all-gathers its logits along the vocabulary in forward and all-reduces its input gradient in
    backward (ColwiseParallel with replicated input and output)."""
    if tp == 1 or not styles:
        return cost
    f1, b1 = gemm_times(device, layer.gemms, scale, 1)
    ft, bt = gemm_times(device, layer.gemms, scale, tp)
    tp_fwd = tp_bwd = 0.0
    split_flops = 0.0
    if "vocab_embedding" in styles:
        tp_fwd += tp_time("all_reduce", layer.output_bytes * scale)
    if "vocab_head" in styles:
        for g in layer.gemms:
            if g.tp:
                s, size = _scaled(g, scale, 1), DTYPE_BYTES.get(g.dtype, 4)
                tp_fwd += tp_time("all_gather", s.batch * s.m * s.n * size)
                tp_bwd += tp_time("all_reduce", s.batch * s.m * s.k * size)
                split_flops += g.flops * scale * (1 - 1 / tp)
    return replace(cost, fwd=cost.fwd - f1 + ft, bwd=cost.bwd - b1 + bt, tp_fwd=tp_fwd, tp_bwd=tp_bwd,
                   model_flops=cost.model_flops - 3 * split_flops, fwd_flops=cost.fwd_flops - split_flops)


def _one(profile: ModelProfile, layer: LayerProfile, device: Device, split: int, tp: int, sp: bool,
         scale: float, n_coll: int, tp_time: TpTime) -> LayerCost:
    g_f, g_b = gemm_times(device, layer.gemms, scale, split)
    a_f, a_b = _attention_times(device, layer, scale, split)
    share = _elementwise_share(layer, split, sp) * scale
    elem = device.memory_time(layer.fwd_mem_bytes * share)
    elem_bwd = ELEMENTWISE_BWD_FACTOR * elem if layer.bwd_mem_bytes is None else \
        device.memory_time(layer.bwd_mem_bytes * share)
    msg = layer.output_bytes * scale
    if split > 1 and n_coll:
        per = tp_time("reduce_scatter", msg) + tp_time("all_gather", msg) if sp else tp_time("all_reduce", msg)
        tp_f = tp_b = n_coll * per
    else:
        tp_f = tp_b = 0.0
    act = {m: activation_bytes(layer, m, scale, split, sp and split > 1, colwise_inputs=n_coll)
           for m in ("none", "selective", "full")}
    flops = (layer.fwd_flops + layer.bwd_flops) * scale / split
    host = layer.fwd_ops * device.op_overhead  # per micro-batch, whatever its size
    tp_host = sum(1 for g in layer.gemms if g.tp) * device.tp_op_overhead if split > 1 else 0.0
    host_bwd = BWD_OPS_PER_FWD_OP * host if layer.bwd_ops is None else layer.bwd_ops * device.op_overhead
    host_fwd, host_bwd = host + tp_host / 3, host_bwd + 2 * tp_host / 3
    return LayerCost(fwd=g_f + a_f + elem + host_fwd, bwd=g_b + a_b + elem_bwd + host_bwd,
                     tp_fwd=tp_f, tp_bwd=tp_b, elementwise=elem, act=act, model_flops=flops,
                     # with sequence parallel a block hands on its sequence shard (the program gathers the
                     # sequence only after the model's last block): a stage boundary sends 1/t of it
                     out_bytes=int(msg / split) if sp and split > 1 else int(msg),
                     fwd_flops=layer.fwd_flops * scale / split,
                     loss_grad=int(2 * scale * max((t.nbytes for t in layer.saved["none"]), default=0))
                     if layer.kind == "suffix" else 0)
