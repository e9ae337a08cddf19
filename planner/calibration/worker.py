"""One rank of `plan calibrate`: measures what a rank of a training run sees on this machine, with all
ranks running at once (so cores, memory bandwidth and links are shared as in training).

Run by torchrun (`python -m torch.distributed.run --nproc-per-node N -m planner.calibration.worker
--out FILE`); it picks its device as the training program does (`runtime.pick_device`). Rank 0 writes
the raw measurements as JSON: GEMM throughput over a grid of shapes, fused attention at a few sequence
lengths, memory bandwidth, the host time per operator and per tensor-parallel projection, and
all-reduce / all-gather / reduce-scatter / point-to-point times over message sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from planner.cost.layer import causal_work
from planner.program.runtime.distributed import pick_device

GEMM_FULL = [(m, n, k) for m in (64, 256, 1024, 4096) for n in (64, 256, 1024) for k in (64, 256, 1024)]
GEMM_QUICK = [(64, 64, 64), (256, 256, 256), (1024, 256, 64), (128, 1024, 256), (1024, 1024, 1024), (4096, 256, 256)]
# A GPU runs a ~1B model's projections at 8K tokens x 2-8K features: the CPU grid's largest shape
# (4096 x 1024 x 1024) reached 29% of an H200's fastest GEMM (2026-12-04), so the GPU grid goes to 16K.
GEMM_GPU_FULL = [(m, n, k) for m in (256, 1024, 4096, 16384) for n in (256, 1024, 4096, 16384)
                 for k in (256, 1024, 4096, 16384)]
GEMM_GPU_QUICK = [(256, 256, 256), (1024, 1024, 1024), (4096, 4096, 1024), (8192, 4096, 4096),
                  (16384, 16384, 16384)]
GPU_CALLS = 10
"""Calls queued between two synchronisations on a GPU: training queues its kernels back to back, so
one sync per call would add the host's round trip (10-30 us) to every small kernel."""
SIZES_FULL = [2**p for p in range(4, 25, 2)]
SIZES_QUICK = [2**4, 2**12, 2**18, 2**22]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(fn, device: torch.device, min_time: float) -> float:
    """Median seconds per call over at least `min_time` of calls (after two warm-up calls); on a GPU,
    each sample times `GPU_CALLS` queued calls."""
    calls = GPU_CALLS if device.type == "cuda" else 1
    for _ in range(2):
        fn()
    _sync(device)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 3:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def bench_together(fn, device: torch.device, min_time: float) -> float:
    """`bench` for collectives: every rank must make the same number of calls, so the count comes from
    the slowest rank's first timing."""
    for _ in range(2):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
    dist.all_reduce(first, op=dist.ReduceOp.MAX)
    count = int(min(200, max(3, min_time / max(first.item(), 1e-6))))
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemms(device, dtype, shapes, min_time) -> list[list]:
    rows = []
    for m, n, k in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        t = bench(lambda: a @ b, device, min_time)
        rows.append([m, n, k, str(dtype).removeprefix("torch."), 2 * m * n * k / t])
    return rows


def attention(device, dtype, seqs, head_dims, min_time) -> list[list]:
    """Causal fused attention: FLOP/s counted as the cost model counts a causal kernel's work
    (`causal_work` of the score square), so the model's time is its work over this rate. A GPU gets
    64 (sample, head) pairs, as a micro-batch of a ~1B model has: one pair leaves most SMs idle."""
    pairs = (4, 16) if device.type == "cuda" else (1, 4)
    rows = []
    for hd in head_dims:
        for s in seqs:
            q = torch.randn(*pairs, s, hd, device=device, dtype=dtype)
            t = bench(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True), device, min_time)
            work = 4 * pairs[0] * pairs[1] * s * s * hd * causal_work(s, s)
            rows.append([s, s, hd, str(dtype).removeprefix("torch."), work / t])
    return rows


def memory_bandwidth(device, min_time) -> float:
    # 64 MiB of fp32 on a CPU; 1 GiB on a GPU, whose L2 (50-60 MiB on an H100/H200) would hold a
    # part of 64 MiB
    x = torch.empty(2**28 if device.type == "cuda" else 2**24, device=device)
    y = torch.empty_like(x)
    t = bench(lambda: y.copy_(x), device, min_time)
    return 2 * x.numel() * x.element_size() / t  # read + write


def op_overhead(device, min_time) -> float:
    """Host seconds per operator: forward and backward of a chain of tiny ops, per op run."""
    w = torch.ones(4, device=device, requires_grad=True)
    ops = 20

    def chain():
        x = w
        for _ in range(ops):
            x = x * 1.0001
        x.sum().backward()
    return bench(chain, device, min_time) / (ops * 3 + 2)  # forward op, its backward, the accumulation


def tp_overhead(device, min_time) -> float:
    """Host seconds a tensor-parallel projection (DTensor) adds per forward + backward over a plain one:
    a colwise + rowwise pair over all ranks against the same pair unsplit, less the pair's two small
    all-reduces (forward and backward), per projection."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    world = dist.get_world_size()
    mesh = init_device_mesh(device.type, (world,))

    def pair():
        return torch.nn.Sequential(torch.nn.Linear(64, 64 * world), torch.nn.Linear(64 * world, 64)).to(device)
    plain, split = pair(), parallelize_module(pair(), mesh, {"0": ColwiseParallel(), "1": RowwiseParallel()})
    x = torch.randn(4, 64, device=device)

    def run(m):
        return lambda: m(x).sum().backward()
    t_plain = bench_together(run(plain), device, min_time)
    t_split = bench_together(run(split), device, min_time)
    small = torch.ones(4 * 64, device=device)
    t_reduce = bench_together(lambda: dist.all_reduce(small), device, min_time)
    return max(0.0, (t_split - t_plain - 2 * t_reduce) / 2)


def collectives(device, sizes, min_time) -> dict:
    world = dist.get_world_size()
    out: dict = {"all_reduce": [], "all_gather": [], "reduce_scatter": [], "p2p": []}
    for nbytes in sizes:
        n = max(world, nbytes // 4 // world * world)
        x = torch.ones(n, device=device)
        parts = [torch.empty(n // world, device=device) for _ in range(world)]
        out["all_reduce"].append([n * 4, bench_together(lambda: dist.all_reduce(x), device, min_time)])
        out["all_gather"].append([n * 4, bench_together(lambda: dist.all_gather(parts, parts[0]), device, min_time)])
        out["reduce_scatter"].append([n * 4, bench_together(lambda: _reduce_scatter(parts, x, world), device,
                                                            min_time)])
        out["p2p"].append([n * 4, bench_together(lambda: _ping(x), device, min_time) / 2])
    return out


def _reduce_scatter(parts, x, world):
    if dist.get_backend() == "gloo":  # gloo has no reduce_scatter: the all-reduce it would run instead
        dist.all_reduce(x)
    else:
        dist.reduce_scatter(parts[0], list(x.chunk(world)))


def _ping(x):
    """Rank 0 and 1 send `x` there and back (the other ranks wait)."""
    rank = dist.get_rank()
    if rank == 0:
        dist.send(x, 1)
        dist.recv(x, 1)
    elif rank == 1:
        dist.recv(x, 0)
        dist.send(x, 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args(argv)
    device = pick_device(cpu=args.cpu)  # as the training program picks it (threads per rank included)
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    dtype = torch.bfloat16 if cuda else torch.float32
    quick = args.quick
    t = 0.02 if quick else 0.2
    dist.barrier()
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "ranks": dist.get_world_size(), "threads_per_rank": torch.get_num_threads(),
        "torch": torch.__version__, "backend": dist.get_backend(),
        "memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else _host_memory(),
        "gemm": gemms(device, dtype, _gemm_grid(cuda, quick), t),
        "attention": attention(device, dtype, [128, 512] if quick else [128, 512, 2048, 8192],
                               (64, 128) if cuda else (64,), t),
        "memory_bandwidth": memory_bandwidth(device, t),
        "op_overhead": op_overhead(device, t),
    }
    dist.barrier()
    many = dist.get_world_size() > 1
    result["collectives"] = collectives(device, SIZES_QUICK if quick else SIZES_FULL, t) if many else {}
    result["tp_op_overhead"] = tp_overhead(device, t) if many else 0.0
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()
    return 0


def _gemm_grid(cuda: bool, quick: bool) -> list[tuple[int, int, int]]:
    if cuda:
        return GEMM_GPU_QUICK if quick else GEMM_GPU_FULL
    return GEMM_QUICK if quick else GEMM_FULL


def _host_memory() -> int:
    """A rank's share of the host's memory (Linux), else 4 GiB."""
    try:
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1]) * 1024
        return total // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except (OSError, ValueError, IndexError):
        return 4 << 30


if __name__ == "__main__":
    raise SystemExit(main())
