"""The cost model: price one `Strategy` for one profiled model on one cluster.

Step time = the pipeline schedule simulated on its real action order (per-chunk forward and backward
times, including exposed TP collectives and recompute, with the stage-boundary sends as delays), then,
per pipeline rank, the exposed data-parallel communication and the optimizer step; the slowest rank
sets the step. Memory is counted per pipeline rank (ranks of one stage hold the same), see `memory.py`
for the training state and `buffers` for the rest.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import lru_cache

from planner.cluster.collectives import collective_model, contending_rows, p2p_model, ring_loads
from planner.cluster.graph import Cluster
from planner.cluster.hardware import Device
from planner.cluster.placement import Mesh, link_classes, place
from planner.cost.constants import ADAM_BYTES_PER_ELEMENT, DDP_BUCKET, MEMORY_FRACTION, RUNTIME_RESERVE
from planner.cost.layer import LayerCost, layer_costs
from planner.cost.memory import (DTYPE_BYTES, StateBytes, fsdp_buffer, held_after_step, state_bytes,
                                 state_bytes_by_layer, widest_by_layer)
from planner.cost.schedule import flights, program, simulate
from planner.cost.terms import ALLOCATOR_DIVISOR, DpModel, LayerTerms, dp_exposed, dp_compute
from planner.types.estimate import ChunkTime, Estimate, HeldBytes
from planner.types.profile import ModelProfile
from planner.types.strategy import Strategy, parse_recompute

__all__ = ["CostModel", "ChunkCost", "RankCost", "even_split", "RUNTIME_RESERVE", "MEMORY_FRACTION", "fsdp_buffer", "DDP_BUCKET", "ADAM_BYTES_PER_ELEMENT"]

def even_split(profile: ModelProfile, chunks: int) -> tuple[int, ...]:
    """Layers per chunk with the blocks spread as evenly as possible (prefix on the first chunk, suffix
    on the last): the starting point when a strategy does not give its own boundaries."""
    base, extra = divmod(len(profile.blocks), chunks)
    counts = [base + (1 if c < extra else 0) for c in range(chunks)]
    counts[0] += sum(1 for l in profile.layers if l.kind == "prefix")
    counts[-1] += sum(1 for l in profile.layers if l.kind == "suffix")
    return tuple(counts)


@dataclass(frozen=True, slots=True)
class ChunkCost:
    """One model chunk per micro-batch, with its recompute choice applied."""

    fwd: float
    bwd: float
    compute: float
    """fwd + bwd compute without recompute or TP communication."""
    recompute: float
    tp: float
    act: int
    transient_bytes: int
    """Transient bytes in its backward: the largest layer's rematerialised activations and gradients."""
    out_bytes: int
    model_flops: float
    recompute_flops: float


def chunk_cost(costs: list[LayerCost], kinds: list[str], lo: int, hi: int, recompute: str) -> ChunkCost:
    """Sum layers [lo, hi) under `recompute`: the chunk's first K blocks run full recompute (their
    forward, TP collectives included, again in backward), the next J selective (their memory-bound
    ops again), the rest none."""
    blocks = [i for i in range(lo, hi) if kinds[i] == "block"]
    k, j = parse_recompute(recompute, len(blocks))
    mode_of = {i: "full" if n < k else "selective" if n < k + j else "none" for n, i in enumerate(blocks)}
    fwd = bwd = comp = rc = tp = flops = rc_flops = 0.0
    act = transient = 0
    for i in range(lo, hi):
        c = costs[i]
        mode = mode_of.get(i, "none")
        extra = c.fwd + c.tp_fwd if mode == "full" else c.elementwise if mode == "selective" else 0.0
        fwd += c.fwd + c.tp_fwd
        bwd += c.bwd + c.tp_bwd + extra
        comp += c.fwd + c.bwd
        rc += extra
        tp += c.tp_fwd + c.tp_bwd
        flops += c.model_flops
        rc_flops += c.fwd_flops if mode == "full" else 0.0
        act += c.act[mode]
        transient = max(transient, c.transient(mode))
    return ChunkCost(fwd, bwd, comp, rc, tp, act, transient, costs[hi - 1].out_bytes, flops, rc_flops)


@dataclass(frozen=True, slots=True)
class RankCost:
    """One pipeline rank's end of step and memory."""

    end: float
    """Seconds from the step's start until its optimizer step is done."""
    dp: float
    """Exposed data-parallel communication (seconds)."""
    opt: float
    """Optimizer step (seconds)."""
    mem: dict[str, int]
    """Peak bytes by kind: weights, grads, optimizer, activations, buffers."""
    chunks: list[int]
    """The chunks this rank runs."""


class CostModel:
    """Prices strategies of one profile on one cluster. The caches only memoise pure functions of
    their keys (mesh sizes, TP degree, micro-batch), so results never depend on call order."""

    def __init__(self, profile: ModelProfile, cluster: Cluster, dtype: str | None = None,
                 memory_fraction: float = MEMORY_FRACTION, gemm_slowdown: float = 1.0, comm_slowdown: float = 1.0,
                 device: Device | None = None):
        """`gemm_slowdown` and `comm_slowdown` scale every GEMM's and every collective's and send's time:
        the what-ifs the plan reports (how its ranking holds if the prices are off). `device` prices
        compute with other constants for the cluster's (homogeneous) device: what calibration varies."""
        self.profile = profile
        self.cluster = cluster
        self.dtype = dtype or profile.dtype
        self.devices: list[Device] = [cluster.device_of(cluster.first_ranks[j]) for j in range(len(cluster.nodes))]
        self.device = device or min(self.devices, key=lambda d: d.peak(self.dtype))
        if gemm_slowdown != 1.0:
            self.device = self.device.slowed(gemm_slowdown)
        self.comm_slowdown = comm_slowdown
        """The slowest device: a pipeline is as fast as its slowest rank (mixed clusters)."""
        self.capacity = min(d.memory_bytes for d in self.devices)
        self.reserve = 0 if self.device.name == "cpu" else RUNTIME_RESERVE
        self.memory_fraction = memory_fraction
        self.usable = self.reserve + int(memory_fraction * (self.capacity - self.reserve))
        """What a plan may use per GPU: the runtime reserve plus `memory_fraction` of the rest."""
        self.world = cluster.num_gpus
        self.kinds = [l.kind for l in profile.layers]
        self._mesh = lru_cache(maxsize=None)(self._mesh_uncached)
        self._coll = lru_cache(maxsize=None)(self._coll_uncached)
        self._rings = lru_cache(maxsize=None)(self._rings_uncached)
        self._groups = lru_cache(maxsize=None)(self._groups_uncached)
        self._p2p = lru_cache(maxsize=None)(self._p2p_uncached)
        self._costs = lru_cache(maxsize=None)(self._costs_uncached)
        self._state = lru_cache(maxsize=None)(self._state_uncached)
        self._states = lru_cache(maxsize=None)(self._states_uncached)
        self._widest = lru_cache(maxsize=None)(lambda tp: widest_by_layer(profile.layers, tp))
        self._state_sum = lru_cache(maxsize=None)(self._state_sum_uncached)
        self._terms = lru_cache(maxsize=None)(self._terms_uncached)
        self._memo: dict = {}
        self.shape_keys = [tuple((t.shape, t.tp_dim) for t in l.tensors) for l in profile.layers]

    # -- shared pieces -------------------------------------------------------------------------
    def _mesh_uncached(self, sizes: tuple[tuple[str, int], ...]) -> Mesh:
        return place(self.cluster, dict(sizes))

    def mesh(self, s: Strategy) -> Mesh:
        return self._mesh(tuple(sorted(s.sizes().items())))

    def _groups_uncached(self, sizes: tuple, axis: str) -> list[list[int]]:
        """The groups of `axis` that share a node with its first group: all that collective pricing
        reads (`collectives._contending`), found without listing the others."""
        return contending_rows(self.cluster, self._mesh(sizes).group_array(axis))

    def _coll_uncached(self, sizes: tuple, axis: str, op: str) -> tuple[float, float]:
        mesh = self._mesh(sizes)
        if axis not in mesh.axes:
            return 0.0, 0.0
        groups = self._groups(sizes, axis)
        rings = self._rings(sizes, axis) if op != "all_to_all" and len(groups[0]) > 1 else None
        return self._slowed(collective_model(self.cluster, op, groups, rings))

    def _rings_uncached(self, sizes: tuple, axis: str) -> tuple[float, float]:
        """One axis's ring loads, shared by its all-reduce, all-gather and reduce-scatter."""
        return ring_loads(self.cluster, self._groups(sizes, axis))

    def _slowed(self, model: tuple[float, float]) -> tuple[float, float]:
        """(seconds per byte, fixed seconds) of a collective or send, under the comm what-if."""
        return model[0] * self.comm_slowdown, model[1] * self.comm_slowdown

    def _p2p_uncached(self, sizes: tuple, src: int, dst: int) -> tuple[float, float]:
        stages = self._mesh(sizes).group_array("pp")
        pairs = [tuple(p) for p in contending_rows(self.cluster, stages[:, [src, dst]])]
        return self._slowed(p2p_model(self.cluster, pairs))

    def send(self, s: Strategy, src: int, dst: int, nbytes: float) -> float:
        if s.pp == 1 or nbytes <= 0:
            return 0.0
        per_byte, fixed = self._p2p(tuple(sorted(s.sizes().items())), src, dst)
        return fixed + per_byte * nbytes

    def _tp_model(self, tp: int, op: str) -> tuple[float, float]:
        """TP is the innermost axis, so its groups are runs of `tp` consecutive ranks whatever the other
        axes are; only the groups sharing nodes with the first one contend with it."""
        span = max(tp, self.cluster.gpus_per_node)
        span = span if self.world % span == 0 else self.world
        return self._slowed(collective_model(self.cluster, op, [list(range(i, i + tp)) for i in range(0, span, tp)]))

    def _costs_uncached(self, tp: int, sp: bool, mbs: int) -> list[LayerCost]:
        models = {op: self._tp_model(tp, op) for op in ("all_reduce", "all_gather", "reduce_scatter")}

        def tp_time(op: str, nbytes: float) -> float:
            per_byte, fixed = models[op]
            return fixed + per_byte * nbytes
        return layer_costs(self.profile, self.device, tp, sp, mbs, tp_time)

    def layer_costs(self, s: Strategy) -> list[LayerCost]:
        return self._costs(*self.costs_key(s))

    def costs_key(self, s: Strategy) -> tuple:
        """What `layer_costs` depends on."""
        return s.tp, s.sequence_parallel, s.micro_batch_size

    def terms_key(self, s: Strategy) -> tuple:
        """What `terms` depends on."""
        return tuple(sorted(s.sizes().items())), s.tp, s.sharding, s.dp_shard, s.accumulating, s.pp == 1

    def ring_ranks_priced(self) -> int:
        """Ranks in all the axis rings priced so far (each axis of each mesh once, `_rings`): what
        pricing a large cluster's collectives costs, which the search charges as work."""
        return self._rings.cache_info().currsize * self.world

    def memo(self, key: tuple, make):
        """`make()` computed once per key: sums the search derives from the cached per-layer numbers
        (keys built from `costs_key` / `terms_key`, so they stay pure functions of the strategy)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def in_flight(self, s: Strategy) -> tuple[list[tuple[int, ...]], ...]:
        """Per pipeline rank, the maximal in-flight vectors of `s`'s schedule (`schedule.in_flight`)."""
        return flights(s.schedule, s.pp, s.vpp, s.num_micro_batches)

    # -- the estimate --------------------------------------------------------------------------
    def chunks(self, s: Strategy) -> list[ChunkCost]:
        costs = self.layer_costs(s)
        return [chunk_cost(costs, self.kinds, rng.start, rng.stop, s.recompute[c])
                for c, rng in enumerate(self.chunk_layers(s))]

    def chunk_layers(self, s: Strategy) -> list[range]:
        """The layer indices of each chunk."""
        bounds = s.layers_per_chunk or even_split(self.profile, s.chunks)
        starts = list(itertools.accumulate(bounds, initial=0))
        return [range(a, b) for a, b in zip(starts, starts[1:])]

    def rank_layers(self, s: Strategy, rank: int) -> list[int]:
        """The layer indices pipeline rank `rank` holds (its chunks rank, rank + pp, ...)."""
        return [i for c, rng in enumerate(self.chunk_layers(s)) if c % s.pp == rank for i in rng]

    def _state_uncached(self, shapes: tuple, tp: int, zero: int, shard: int, acc: bool) -> StateBytes:
        i = self.shape_keys.index(shapes)
        return state_bytes([self.profile.layers[i]], (), tp=tp, zero=zero, dp_shard=shard, dtype=self.dtype,
                           accumulating=acc)

    def state_total(self, s: Strategy) -> int:
        """All layers' training state (tied copies counted per holder) on one rank of each stage."""
        return self._state_sum(s.tp, s.sharding, s.dp_shard, s.accumulating)

    def _state_sum_uncached(self, *key) -> int:
        return sum(x.total for x in self._states(*key))

    def _states_uncached(self, tp: int, zero: int, shard: int, acc: bool) -> list[StateBytes]:
        return [self._state(k, tp, zero, shard, acc) for k in self.shape_keys]

    def state(self, s: Strategy, rank: int, layer_ids: list[int] | None = None) -> StateBytes:
        """Training state of pipeline rank `rank` (pass its `rank_layers` if already known)."""
        ids = self.rank_layers(s, rank) if layer_ids is None else layer_ids
        layers = [self.profile.layers[i] for i in ids]
        accumulating = s.accumulating
        return state_bytes(layers, self.profile.tied, tp=s.tp, zero=s.sharding,
                           dp_shard=s.dp_shard, dtype=self.dtype, accumulating=accumulating)

    def estimate(self, s: Strategy, global_batch: int | None = None) -> Estimate:
        if s.world != self.world:
            raise ValueError(f"dp{s.dp} x tp{s.tp} x pp{s.pp} = {s.world} ranks, cluster has {self.world}")
        chunks = self.chunks(s)
        sends_f = [self.send(s, c % s.pp, (c + 1) % s.pp, ch.out_bytes) for c, ch in enumerate(chunks)]
        timing = simulate(program(s.schedule, s.pp, s.vpp, s.num_micro_batches), [c.fwd for c in chunks],
                          [c.bwd for c in chunks], sends_f, [0.0] + sends_f[:-1])
        per_rank = [self._rank(s, r, chunks, timing.finish[r]) for r in range(s.pp)]
        step = max(r.end for r in per_rank)
        hot = max(range(s.pp), key=lambda r: timing.busy[r])  # the breakdown is the busiest rank's
        # Sends on the busiest rank's path: its forward send and backward receive per micro-batch and chunk.
        sends = s.num_micro_batches * sum(sends_f[c] + (sends_f[c - 1] if c else 0.0) for c in per_rank[hot].chunks)
        pp_comm = min(sends, max(0.0, timing.finish[hot] - timing.busy[hot]))
        return self._finish(s, chunks, per_rank, hot, step, pp_comm, global_batch)

    def _rank(self, s: Strategy, r: int, chunks: list[ChunkCost], finish: float) -> RankCost:
        mine = [c for c in range(s.chunks) if c % s.pp == r]
        layer_ids = self.rank_layers(s, r)
        terms = self.terms(s)
        peak_act = max(sum(chunks[mine[i]].act * n for i, n in enumerate(v)) for v in self.in_flight(s)[r])
        st = self.state(s, r, layer_ids)
        first = terms[layer_ids[0]]
        dpm = self.dp_model(s)
        sync, gather = sum(terms[i].sync for i in layer_ids), sum(terms[i].gather for i in layer_ids)
        dp = dp_exposed(dpm, sync, gather, first.sync + first.gather, sum(chunks[c].fwd for c in mine),
                        sum(chunks[c].bwd for c in mine), chunks[mine[0]].bwd) + dp_compute(
            dpm, sync, gather, sum(terms[i].sync_copy for i in layer_ids), sum(terms[i].gather_copy for i in layer_ids))
        opt = sum(terms[i].opt for i in layer_ids)
        buffers = self.buffers(s, dpm.buffer + max(terms[i].comm_buffer for i in layer_ids),
                               sum(chunks[c].out_bytes for c in mine), max(chunks[c].transient_bytes for c in mine),
                               peak_act)
        mem = {"weights": st.weights, "grads": st.grads, "optimizer": st.optimizer, "activations": peak_act,
               "buffers": buffers}
        return RankCost(end=finish + dp + opt, dp=dp, opt=opt, mem=mem, chunks=mine)

    def dp_model(self, s: Strategy) -> DpModel:
        """How `s`'s data-parallel communication shows (see `terms.py`)."""
        n = s.num_micro_batches
        if s.dp == 1:
            return DpModel("none", n)
        gamma = self.device.comm_interference
        if s.zero:
            return DpModel("fsdp", n, zero3=s.zero == 3, interference=gamma)
        per_byte, fixed = self._coll(tuple(sorted(s.sizes().items())), "dp", "all_reduce")
        return DpModel("ddp_tp" if s.tp > 1 else "ddp", n, fixed=fixed, bucket=per_byte * DDP_BUCKET,
                       buffer=2 * DDP_BUCKET, interference=gamma)

    def terms(self, s: Strategy) -> list[LayerTerms]:
        """Per layer: its state, optimizer step, data-parallel communication and buffers on one rank.
        Tied copies count in every layer that holds one when pp > 1 (they sit on different ranks), once
        (in the first holder) when one rank holds the whole model."""
        return self._terms(*self.terms_key(s))

    def _terms_uncached(self, sizes: tuple, tp: int, zero: int, shard: int, acc: bool, one_rank: bool) -> list[LayerTerms]:
        states = (state_bytes_by_layer(self.profile.layers, self.profile.tied, tp=tp, zero=zero, dp_shard=shard,
                                       dtype=self.dtype, accumulating=acc) if one_rank else self._states(tp, zero, shard, acc))
        widest = self._widest(tp)
        axes = dict(sizes)
        compute = DTYPE_BYTES.get(self.dtype, 4)
        replicated = axes.get("dp", 1) == 1 and "dp_shard" not in axes
        ddp_per_byte = self._coll(sizes, "dp", "all_reduce")[0] if zero == 0 and not replicated else 0.0
        axis = "dp_shard" if "dp_replicate" in axes else "dp"
        out, seen = [], {}  # identical blocks have identical terms: price each distinct layer once
        for st, big in zip(states, widest):
            key = (st.total, st.optimizer, big)
            if key in seen:
                out.append(seen[key])
                continue
            elems = st.optimizer // 8
            opt = self.device.memory_time(ADAM_BYTES_PER_ELEMENT * elems)
            if replicated or zero == 0:
                out.append(seen.setdefault(key, LayerTerms(st.total, elems, opt, ddp_per_byte * 4 * elems, 0.0, 0)))
                continue
            sync = self._coll_time(sizes, axis, "reduce_scatter", 4 * elems * shard)
            sync += self._coll_time(sizes, "dp_replicate", "all_reduce", 4 * elems)
            gather = self._coll_time(sizes, axis, "all_gather", compute * elems * shard)
            buf = fsdp_buffer(big, compute, zero == 3 and not acc)
            copies = (self.device.memory_time((compute + 4) * elems * shard + 8 * elems),  # concat + cast; shard
                      self.device.memory_time(2 * compute * elems * (shard + 1)))  # split copy-out; shard in
            out.append(seen.setdefault(key, LayerTerms(st.total, elems, opt, sync, gather, buf, *copies)))
        return out

    def _coll_time(self, sizes: tuple, axis: str, op: str, nbytes: float) -> float:
        if nbytes <= 0:
            return 0.0
        per_byte, fixed = self._coll(sizes, axis, op)
        return fixed + per_byte * nbytes

    def buffers(self, s: Strategy, comm: int, out_bytes: int, transient: int, act: int) -> int:
        """Runtime reserve + communication buffers + transient backward memory + allocator overhead.

        Communication, given as `comm`: DDP's last two buckets in flight; FSDP's buffers for the rank's
        largest layer (`fsdp_buffer`: its unsharded gradients, two fp32 reduce-scatters, and with ZeRO 3
        two layers' gathered weights); pipeline receive buffers (one activation and one gradient
        per local chunk, given as `out_bytes`). `transient` is the largest layer's transient backward
        memory; the allocator's share is 1/ALLOCATOR_DIVISOR of activations and transient bytes."""
        pp_bufs = 2 * out_bytes if s.pp > 1 else 0
        return int(self.reserve + comm + pp_bufs + transient + (act + transient) // ALLOCATOR_DIVISOR)

    def _finish(self, s: Strategy, chunks: list[ChunkCost], per_rank: list[RankCost], crit: int, step: float,
                pp_comm: float, global_batch: int | None) -> Estimate:
        n = s.num_micro_batches
        mine = per_rank[crit].chunks
        compute = n * sum(chunks[c].compute for c in mine)
        recompute = n * sum(chunks[c].recompute for c in mine)
        tp_comm = n * sum(chunks[c].tp for c in mine)
        parts = {"compute": compute, "recompute": recompute, "tp_comm": tp_comm, "pp_comm": max(0.0, pp_comm),
                 "dp_comm": per_rank[crit].dp, "optimizer": per_rank[crit].opt}
        parts["bubble"] = max(0.0, step - sum(parts.values()))
        samples = global_batch or s.dp * s.micro_batch_size * n
        # model FLOPs: the whole model's once per sample (the profile's), not per-rank work times tp, which
        # would count the layers tensor parallel replicates (embedding, LM head, norms) tp times
        prof = self.profile
        model_flops = (prof.fwd_flops + prof.bwd_flops) * s.dp * s.micro_batch_size * n / prof.micro_batch
        hw_flops = model_flops + s.dp * s.tp * n * sum(c.recompute_flops for c in chunks)
        peak = self.device.peak(self.dtype)
        mems = [sum(r.mem.values()) for r in per_rank]
        return Estimate(
            step_time_s=step, tokens_per_s=samples * self.profile.seq_len / step, samples_per_s=samples / step,
            model_tflops_per_gpu=model_flops / step / self.world / 1e12,
            hardware_tflops_per_gpu=hw_flops / step / self.world / 1e12,
            mfu=model_flops / (step * self.world * peak), hfu=hw_flops / (step * self.world * peak),
            memory_bytes_per_pp_rank=tuple(mems), memory_bytes_per_rank=tuple(r.mem for r in per_rank),
            memory_capacity_bytes=self.capacity, memory_limit_bytes=self.usable, breakdown=parts,
            feasible=max(mems) <= self.usable, critical_rank=crit,
            bound=max(parts, key=parts.get))

    # -- details of a chosen plan --------------------------------------------------------------
    def with_details(self, s: Strategy, e: Estimate) -> Estimate:
        """`e` with what a chosen plan's report, timeline and program need (see `Estimate`)."""
        mesh = self.mesh(s)
        return replace(e, chunk_times=self.chunk_times(s), held_bytes_per_pp_rank=self.held(s),
                       peak_flops=self.device.peak(self.dtype),
                       links={a: link_classes(self.cluster, mesh, a) for a, n in zip(mesh.axes, mesh.sizes) if n > 1})

    def chunk_times(self, s: Strategy) -> tuple[ChunkTime, ...]:
        """Per chunk and micro-batch: forward and backward seconds (recompute included) and the send to
        the next chunk: what the timeline picture replays."""
        chunks = self.chunks(s)
        return tuple(ChunkTime(ch.fwd, ch.bwd, self.send(s, c % s.pp, (c + 1) % s.pp, ch.out_bytes)
                               if c + 1 < len(chunks) else 0.0) for c, ch in enumerate(chunks))

    def held(self, s: Strategy) -> tuple[HeldBytes, ...]:
        """What each pipeline rank holds after an optimizer step (no unsharded copies, which live only
        inside a step): the program reports the same."""
        out = []
        for rank in range(s.pp):
            layers = [self.profile.layers[i] for i in self.rank_layers(s, rank)]
            st = held_after_step(layers, self.profile.tied, tp=s.tp, zero=s.sharding, dp_shard=s.dp_shard)
            out.append(HeldBytes(param_bytes=st.weights, grad_bytes=st.grads, optimizer_bytes=st.optimizer))
        return tuple(out)
