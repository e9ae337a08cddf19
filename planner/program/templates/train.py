"""Train the model of plan.json with its plan, using plain torch.distributed.

Launch:  LAUNCH_HINT
Plan:    PLAN_SUMMARY

Written by planner from plan.json; it needs only torch, the package `planner_runtime/` beside it and the model file.
The constants below are the plan: to change the layout, plan again and re-emit.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import resource
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import planner_runtime as rt  # noqa: E402

# --- plan constants (written by planner) ---
# The user's model file (beside this script) and the function in it that builds the model.
MODEL_FILE = "gpt.py"
FACTORY = "tiny"
# Device mesh, outermost axis first; a rank's coordinates are its row-major index over the axes.
MESH_AXES = ("pp", "dp", "tp")
MESH_SIZES = (1, 2, 1)
# Pipeline ranks, model chunks per pipeline rank, tensor-parallel degree.
PP, VPP, TP = 1, 1, 1
# Data parallel (= replicate x shard), the FSDP shard group, ZeRO 0 = DDP, 2/3 = FSDP2 (3 reshards
# parameters after forward).
DP, DP_SHARD, ZERO = 2, 1, 0
# Pipeline schedule: gpipe | 1f1b | interleaved.
SCHEDULE = "1f1b"
GLOBAL_BATCH, MICRO_BATCH_SIZE, NUM_MICRO_BATCHES = 8, 4, 1
SEQUENCE_PARALLEL = False
# The repeated blocks (an nn.ModuleList) and how many there are.
BLOCKS = "blocks"
NUM_BLOCKS = 4
# Module names of each model chunk, in model order; chunk c runs on pipeline rank c % PP.
STAGES = [["wte", "wpe", "drop", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "ln_f", "lm_head"]]
# Activation recomputation per chunk: (full, selective) = the chunk's first `full` blocks recompute
# everything in backward, the next `selective` recompute all but matmul and attention outputs.
RECOMPUTE = [(0, 0)]
# Tensor-parallel split of the blocks' projections (module pattern -> colwise | rowwise).
TP_PLAN = {}
# Weights shared by several modules (kept equal across the pipeline ranks that hold a copy).
TIED = [["wte.weight", "lm_head.weight"]]
# Compute dtype on GPUs (CPU runs use float32), one GPU's dense peak FLOP/s in it, and the model
# FLOPs of one step: for MFU.
DTYPE = "float32"
PEAK_FLOPS = 0.0
FLOPS_PER_STEP = 0.0
# The planner's predicted step time (seconds) on the planned cluster.
PREDICTED_STEP_S = 0.0
# --- end of plan constants ---


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="optimizer steps to train (the LR schedule's length)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this step (checkpoint, then exit), keeping the schedule of --steps")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=3e-5, help="learning rate at the end of the cosine")
    p.add_argument("--warmup", type=int, default=10, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation (and of batch()'s synthetic data)")
    p.add_argument("--checkpoint-dir", default=str(HERE / "checkpoints"))
    p.add_argument("--checkpoint-every", type=int, default=0, help="save every N steps (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--init-from", help="start from a plain state_dict file (names of the plain model)")
    p.add_argument("--export", help="write the latest checkpoint's weights as one plain state_dict file and exit")
    p.add_argument("--metrics", default=str(HERE / "metrics.jsonl"), help="JSON-lines metrics file")
    p.add_argument("--diagnose", action="append", default=[], metavar="CHECK",
                   help="test hooks, repeatable: grads=DIR (write the full clipped gradients of the first step), "
                   "activations (log the peak saved-activation bytes of step 2; slow), "
                   "kill-at-checkpoint=STEP[:RANK] (that rank SIGKILLs itself before step STEP's checkpoint "
                   "is committed, first attempt only)")
    p.add_argument("--cpu", action="store_true", help="run on CPU with gloo even if GPUs exist")
    return p.parse_args(argv)


def load_model_file():
    spec = importlib.util.spec_from_file_location("user_model", HERE / MODEL_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_model"] = module
    spec.loader.exec_module(module)
    return module


def load_dataset(mf, model):
    """The model file's dataset() (given the meta model when it takes an argument), or None."""
    if not hasattr(mf, "dataset"):
        return None
    return mf.dataset(model) if len(inspect.signature(mf.dataset).parameters) >= 1 else mf.dataset()


def make_batch(mf, model, n: int, step: int, seed: int, data=None):
    """The step's global batch, a function of (seed, step) only, so every layout and every restart
    sees the same samples: `data` (the model file's dataset(), built once) if there is one, else seeded
    synthetic batch()."""
    if data is not None:
        return rt.collate([data[((step - 1) * n + i) % len(data)] for i in range(n)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + step)
        takes_model = len(inspect.signature(mf.batch).parameters) >= 2
        return mf.batch(n, model) if takes_model else mf.batch(n)


def build_model(mf, seed: int):
    """The model with its parameters on the meta device (buffers real), to be materialised shard by shard
    by its own initialisation; or, when it has none (no init_weights() method or function), built whole
    on the CPU under the run's seed, so every rank holds the weights its constructor draws (what one
    process would train), at the cost of the whole model in each process's memory while building."""
    with rt.build_meta_parameters():
        model = getattr(mf, FACTORY)()
    if hasattr(model, "init_weights") or hasattr(mf, "init_weights"):
        return model, False
    if dist.get_rank() == 0:
        print(f"{type(model).__name__} has no init_weights(): built whole on each process's CPU to keep its "
              "constructor's initialisation (define init_weights() to build shard by shard)", flush=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(mf, FACTORY)(), True


def init_fn(mf, constructed: bool):
    """The model's own initialisation: its init_weights() method, or the file's init_weights(model); None
    when the constructor initialised. A Hugging Face model runs its `initialize_weights()` (its
    init_weights() also re-ties weights, which fails where the chunk holds only one side of a tie; ties
    across stages are kept by the program): transformers marks modules initialised when it builds them
    and skips marked ones, and the chunk's tensors are new, so the marks are dropped first."""
    if constructed:
        return None

    def init(part):
        if any(c.__name__ == "PreTrainedModel" for c in type(part).__mro__):
            for obj in [*part.modules(), *part.parameters(), *part.buffers()]:
                obj.__dict__.pop("_is_hf_initialized", None)
            part.initialize_weights()
        elif hasattr(part, "init_weights"):
            part.init_weights()
        else:
            mf.init_weights(part)
    return init


def parallelize(part, c: int, mesh, device, init, seed: int):
    """Chunk c's parallelisms in torchtitan's order: tensor parallel -> activation checkpointing ->
    FSDP -> materialise -> DDP (DDP only without TP: it cannot take DTensors; with TP the gradients
    are all-reduced after the backward instead)."""
    if TP > 1:
        rt.apply_tp(part, mesh["tp"], TP_PLAN, blocks=BLOCKS, sequence_parallel=SEQUENCE_PARALLEL,
                    first_block=0, last_block=NUM_BLOCKS - 1)
    rt.apply_recompute(part, BLOCKS, *RECOMPUTE[c])
    if ZERO and DP > 1:
        dp_mesh = mesh[tuple(a for a in MESH_AXES if a.startswith("dp"))]
        param_dtype = getattr(torch, DTYPE) if device.type == "cuda" and DTYPE != "float32" else None
        rt.apply_fsdp(part, dp_mesh, blocks=BLOCKS, reshard_after_forward=ZERO == 3, param_dtype=param_dtype)
    rt.attach_chunk_hooks(part)
    rt.materialise(part, device, init, seed=seed, world_mesh=mesh)
    if ZERO == 0 and DP > 1 and TP == 1:
        part = rt.apply_ddp(part, dp_group(mesh))
    return part


def dp_group(mesh):
    """The process group of all data-parallel ranks (replicate x shard flattened under HSDP)."""
    axes = [a for a in MESH_AXES if a.startswith("dp")]
    return mesh[tuple(axes)]._flatten().get_group() if len(axes) > 1 else mesh[axes[0]].get_group()


def build(mf, model, init, mesh, device, args, data):
    """This rank's chunks of the (meta) model: split at the plan's stage boundaries, then parallelised."""
    units = list(dict.fromkeys(n for stage in STAGES for n in stage if not (BLOCKS and n.startswith(BLOCKS + "."))))
    pp_rank = mesh["pp"].get_local_rank()
    n = PP * VPP
    chunks = [c for c in range(n) if c % PP == pp_rank]
    parts = [parallelize(rt.split_chunk(model, STAGES[c], blocks=BLOCKS, units=units, first=c == 0, last=c == n - 1),
                         c, mesh, device, init, args.seed) for c in chunks]
    tied = rt.TiedWeights(TIED, STAGES, mesh, parts)
    tied.broadcast()
    if args.init_from:
        rt.load_full(parts, torch.load(args.init_from, map_location="cpu", weights_only=True))
    return chunks, parts, tied


def state(parts, optimizers):
    options = StateDictOptions(flatten_optimizer_state_dict=True)
    model_sd, optim_sd = {}, {}
    for part, opt in zip(parts, optimizers):
        m, o = get_state_dict(part, opt, options=options)
        model_sd.update(m)
        optim_sd.update(o)
    return {"model": model_sd, "optim": optim_sd}


def save_checkpoint(root: Path, step: int, parts, optimizers, before_commit=None) -> None:
    """Write step-N under a temporary name, then rename it and point `latest` at it (rank 0, last), so
    a checkpoint that `latest` names is always complete."""
    final, tmp = root / f"step-{step}", root / f"step-{step}.tmp"
    if dist.get_rank() == 0 and tmp.exists():
        shutil.rmtree(tmp)  # left by an attempt that died before committing it
    dist.barrier()
    dcp.save(state(parts, optimizers), checkpoint_id=str(tmp))
    if before_commit:
        before_commit(step)
    dist.barrier()
    if dist.get_rank() == 0:
        (tmp / "train.json").write_text(json.dumps({"step": step}))
        if final.exists():
            os.rename(final, root / f"step-{step}.old-{time.time_ns()}")
        os.rename(tmp, final)
        (root / "latest.tmp").write_text(final.name)
        os.replace(root / "latest.tmp", root / "latest")
    dist.barrier()


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    return root / pointer.read_text().strip() if pointer.is_file() else None


def load_checkpoint(path: Path, parts, optimizers) -> int:
    sd = state(parts, optimizers)
    dcp.load(sd, checkpoint_id=str(path))
    options = StateDictOptions(flatten_optimizer_state_dict=True)
    for part, opt in zip(parts, optimizers):
        names = {rt.clean_name(n) for n in part.state_dict()}
        model_sd = {k: v for k, v in sd["model"].items() if rt.clean_name(k) in names}
        set_state_dict(part, opt, model_state_dict=model_sd, optim_state_dict=sd["optim"], options=options)
    return json.loads((path / "train.json").read_text())["step"]


def export(args) -> int:
    """Turn the latest checkpoint into one plain state_dict with the model's own parameter names."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    path = latest_checkpoint(Path(args.checkpoint_dir))
    if path is None:
        sys.exit(f"no checkpoint under {args.checkpoint_dir}; train with --checkpoint-every first")
    tmp = Path(args.export).with_suffix(".full.tmp")
    dcp_to_torch_save(str(path), str(tmp))
    full = torch.load(tmp, map_location="cpu", weights_only=False)
    torch.save(full["model"], args.export)
    tmp.unlink()
    print(f"wrote {args.export} ({len(full['model'])} tensors) from {path}")
    return 0


class Diagnostics:
    """The test hooks of --diagnose, in one place; none of them runs unless asked for."""

    def __init__(self, checks: list[str]):
        spec = dict(c.partition("=")[::2] for c in checks)
        unknown = set(spec) - {"grads", "activations", "kill-at-checkpoint"}
        if unknown:
            sys.exit(f"--diagnose {sorted(unknown)[0]}: use grads=DIR, activations or kill-at-checkpoint=STEP[:RANK]")
        self.grads = Path(spec["grads"]) if spec.get("grads") else None
        self.activations = "activations" in spec
        self.kill = spec.get("kill-at-checkpoint")

    def meter(self, parts, step: int, first: int, last: int):
        """The saved-activation meter for step 2 (step 1 if it is the only one): in step 1 torch's
        pipelining infers shapes with one extra forward whose graph lives until the step ends."""
        measured = first + 1 if last >= first + 1 else first
        return rt.ActivationMeter(parts) if self.activations and step == measured else None

    def after_clip(self, parts, mesh, step: int, first: int) -> None:
        """Full (unsharded) gradients by plain-model name, one file per pipeline rank."""
        if self.grads is None or step != first:
            return
        full = {}
        for part in parts:
            for name, p in rt.named_local_params(part):
                g = p.grad
                full[name] = (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().cpu().clone()
        if not any(mesh[a].get_local_rank() for a in MESH_AXES if a != "pp"):
            self.grads.mkdir(parents=True, exist_ok=True)
            torch.save(full, self.grads / f"grads-pp{mesh['pp'].get_local_rank()}.pt")

    def before_commit(self, step: int) -> None:
        """kill-at-checkpoint=STEP[:RANK]: that rank SIGKILLs itself after writing its shard of step
        STEP's checkpoint, before it is committed (first attempt only, so torchrun's restart recovers)."""
        if not self.kill or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
            return
        at, _, who = self.kill.partition(":")
        if int(at) == step and dist.get_rank() == int(who or 0):
            print(f"rank {dist.get_rank()}: injected fault, SIGKILL before committing step-{step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def log(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export:
        return export(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    planned = PP * DP * TP
    if world != planned:
        sys.exit(f"this plan needs {planned} processes (pp{PP} x dp{DP} x tp{TP}), got WORLD_SIZE={world}; "
                 f"launch with --nproc-per-node {planned} (or NNODES x GPUS = {planned})")
    device = rt.pick_device(cpu=args.cpu)
    rt.init_distributed("nccl" if device.type == "cuda" else "gloo", device)
    try:
        return train(args, device)
    finally:
        dist.destroy_process_group()


class Run:
    """Everything one rank trains with, built once by `setup`."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def setup(args, device) -> Run:
    """Mesh, model chunks, optimizers, the pipeline schedule, and the step to start from."""
    mf = load_model_file()
    loss_fn = getattr(mf, "loss", rt.default_loss)
    mesh = init_device_mesh(device.type, MESH_SIZES, mesh_dim_names=MESH_AXES)
    model, constructed = build_model(mf, args.seed)
    pass_targets = rt.takes_targets(model, hasattr(mf, "loss"))
    fixed = rt.training_kwargs(model)  # use_cache=False for Hugging Face models
    data = load_dataset(mf, model)  # built once, indexed by step
    before = resident_bytes()
    chunks, parts, tied = build(mf, model, init_fn(mf, constructed), mesh, device, args, data)
    rank, pp_rank = dist.get_rank(), mesh["pp"].get_local_rank()
    log(args.metrics, {"rank": rank, "event": "built", "resident_bytes_added": resident_bytes() - before})
    dp_index = 0
    for a in (a for a in MESH_AXES if a.startswith("dp")):
        dp_index = dp_index * mesh[a].size() + mesh[a].get_local_rank()
    # fused on GPUs (one kernel reads weight, gradient and moments once and writes them once: the 28
    # bytes an element the planner prices, as Megatron-LM's and torchtitan's fused Adam do); torch's
    # default multi-tensor path makes several passes (a GPT-3 1.3B step on an H200 ran 0.05 s over
    # the prediction with it, 2026-12-04)
    optimizers = [torch.optim.AdamW(p.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                                    weight_decay=args.weight_decay, fused=device.type == "cuda") for p in parts]
    pp_group = mesh["pp"].get_group() if PP > 1 else None
    schedule = None
    if PP > 1:
        def computed(loss, index):  # the last chunk returns its micro-batch's loss (see planner_runtime.pipeline)
            return loss.sum()
        stages = [PipelineStage(p, c, PP * VPP, device, group=pp_group) for p, c in zip(parts, chunks)]
        for stage, part in zip(stages, parts):
            rt.watch_inference(stage, part)
        if SCHEDULE == "interleaved":
            schedule = ScheduleInterleaved1F1B(stages, NUM_MICRO_BATCHES, loss_fn=computed)
        else:
            cls = ScheduleGPipe if SCHEDULE == "gpipe" else Schedule1F1B
            schedule = cls(stages[0], NUM_MICRO_BATCHES, loss_fn=computed)
    start = 0
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0  # torchrun restarted us
    latest = latest_checkpoint(Path(args.checkpoint_dir)) if args.resume or restarted else None
    if latest is not None:
        start = load_checkpoint(latest, parts, optimizers)
        if rank == 0:
            print(f"resumed from {latest} at step {start}", flush=True)
    return Run(mf=mf, model=model, data=data, loss_fn=loss_fn, pass_targets=pass_targets, fixed=fixed, mesh=mesh, device=device, parts=parts, tied=tied,
               optimizers=optimizers, schedule=schedule, pp_group=pp_group, rank=rank, pp_rank=pp_rank,
               first=pp_rank == 0, last=pp_rank == PP - 1, dp_index=dp_index, start=start,
               manual_dp=ZERO == 0 and DP > 1 and TP > 1, dp_group=dp_group(mesh) if DP > 1 else None,
               diagnostics=Diagnostics(args.diagnose),
               autocast=torch.autocast("cuda", dtype=getattr(torch, DTYPE), enabled=device.type == "cuda"
                                       and ZERO == 0 and DTYPE != "float32"))


def train_step(run: Run, args, step: int, last_step: int) -> dict:
    """One optimizer step on this rank's share of the global batch; the step's metrics."""
    t0 = time.perf_counter()
    x, y = make_batch(run.mf, run.model, GLOBAL_BATCH, step, args.seed, run.data)
    tokens = rt.token_count(x)
    per_dp = GLOBAL_BATCH // DP
    x, y = rt.batch_map(lambda t: t[run.dp_index * per_dp:(run.dp_index + 1) * per_dp].contiguous().to(run.device),
                      (x, y))
    for opt in run.optimizers:
        opt.zero_grad(set_to_none=True)
    meter = run.diagnostics.meter(run.parts, step, run.start + 1, last_step)
    with run.autocast, (meter() if meter else contextlib.nullcontext()):
        losses = run_step(run, x, y)
    if run.manual_dp:
        rt.allreduce_grads(run.parts, run.dp_group)
    run.tied.sum_grads()
    norm = rt.clip_grad_norm(run.parts, args.clip, run.pp_group, run.tied.duplicates())
    run.diagnostics.after_clip(run.parts, run.mesh, step, run.start + 1)
    lr = rt.cosine_lr(step, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup, total=args.steps)
    for opt in run.optimizers:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    loss = torch.tensor(sum(losses) / len(losses) if run.last else 0.0, dtype=torch.float64, device=run.device)
    dist.all_reduce(loss)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    dt = time.perf_counter() - t0
    return {"step": step, "loss": loss.item() / (DP * TP), "grad_norm": norm.item(), "lr": lr, "step_time_s": dt,
            "predicted_step_s": PREDICTED_STEP_S, "measured_over_predicted": dt / PREDICTED_STEP_S if PREDICTED_STEP_S else None,
            "tokens_per_s": tokens / dt, "activation_peak_bytes": meter.peak if meter else None}


def log_step(run: Run, args, record: dict) -> None:
    """Metrics of one step: the held bytes after the first step and the activation peak (per rank),
    the step's line (rank 0) in metrics.jsonl and on stdout."""
    step, dt = record["step"], record["step_time_s"]
    ident = {"rank": run.rank, "pp_rank": run.pp_rank}
    if step == run.start + 1:  # what this rank really holds, to compare with plan.json
        log(args.metrics, {**ident, "event": "held", **rt.held_bytes(run.parts, run.optimizers),
                           "peak_memory_bytes": peak_memory(run.device)})
    activations = record.pop("activation_peak_bytes")
    if activations is not None:
        log(args.metrics, {**ident, "event": "activations", "step": step, "activation_peak_bytes": activations})
    peak = torch.tensor(peak_memory(run.device), dtype=torch.float64, device=run.device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    record["peak_memory_bytes"] = int(peak.item())
    if run.device.type == "cuda" and PEAK_FLOPS:
        record["tflops_per_gpu"] = FLOPS_PER_STEP / dt / dist.get_world_size() / 1e12
        record["mfu"] = FLOPS_PER_STEP / dt / dist.get_world_size() / PEAK_FLOPS
    if run.rank == 0:
        log(args.metrics, record)
        print(f"step {step:>5}  loss {record['loss']:.6f}  {record['tokens_per_s']:,.0f} tokens/s  "
              f"{dt * 1e3:.0f} ms  peak {record['peak_memory_bytes'] / 2**20:.0f} MiB", flush=True)


def summarize(run: Run, args, records: list[dict]) -> None:
    """The run in one line (rank 0), and a `summary` record: loss from first to last step, and the
    median step time after the first (warm-up) step against the plan's prediction."""
    if run.rank != 0 or not records:
        return
    times = sorted(r["step_time_s"] for r in (records[1:] or records))
    median = times[len(times) // 2]
    first, last = records[0]["loss"], records[-1]["loss"]
    ratio = median / PREDICTED_STEP_S if PREDICTED_STEP_S else None
    log(args.metrics, {"event": "summary", "steps": len(records), "first_loss": first, "last_loss": last,
                       "median_step_time_s": median, "predicted_step_s": PREDICTED_STEP_S,
                       "measured_over_predicted": ratio})
    change = f"{last / first - 1:+.0%}" if first else "n/a"
    versus = f", {ratio:.2f}x the predicted {PREDICTED_STEP_S:.3g} s" if ratio else ""
    print(f"done: loss {first:.4f} -> {last:.4f} ({change}) over {len(records)} steps; median step "
          f"{median:.3g} s{versus}", flush=True)


def train(args, device) -> int:
    run = setup(args, device)
    last_step = min(args.steps, args.stop_after or args.steps)
    records = []
    for step in range(run.start + 1, last_step + 1):
        records.append(train_step(run, args, step, last_step))
        log_step(run, args, records[-1])
        if args.checkpoint_every and step % args.checkpoint_every == 0 or step == last_step:
            save_checkpoint(Path(args.checkpoint_dir), step, run.parts, run.optimizers,
                            run.diagnostics.before_commit)
    summarize(run, args, records)
    return 0


def run_step(run: Run, x, y) -> list[float]:
    """Forward and backward of this rank's share of the global batch; returns the micro-batch losses
    (on the last pipeline rank). Gradients are the mean over the global batch once DP has reduced them.
    On a CPU, RMSNorm and dropout run as the GPU build runs them (`rt.as_on_gpu`)."""
    micro = [rt.batch_map(lambda t, i=i: t.chunk(NUM_MICRO_BATCHES)[i], (x, y)) for i in range(NUM_MICRO_BATCHES)]
    if run.schedule is not None:
        for part in run.parts:
            rt.set_micro_batches(part, micro, run.loss_fn, run.pass_targets, run.fixed)
        losses: list[torch.Tensor] = []
        index = torch.arange(NUM_MICRO_BATCHES, device=run.device)
        with rt.as_on_gpu(run.device):
            run.schedule.step(*((index,) if run.first else ()), target=index if run.last else None,
                              losses=losses if run.last else None)
        return [float(t.detach()) for t in losses]
    (part,) = run.parts
    out = []
    for i, (xm, ym) in enumerate(micro):
        sync = i == NUM_MICRO_BATCHES - 1
        if hasattr(part, "set_requires_gradient_sync"):
            part.set_requires_gradient_sync(sync)
            part.set_reshard_after_backward(sync)
        ctx = part.no_sync() if hasattr(part, "no_sync") and not sync else contextlib.nullcontext()
        with ctx, rt.as_on_gpu(run.device):
            loss = rt.forward_loss(part, xm, ym, run.loss_fn, run.pass_targets, run.fixed)
            (loss / NUM_MICRO_BATCHES).backward()
        out.append(loss.item())
    return out


if __name__ == "__main__":
    sys.exit(main())
