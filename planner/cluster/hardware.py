"""Device profiles and node presets, read from the TOML files in `profiles/` (each number sourced there).

A device's achievable matmul throughput depends on the GEMM's shape: small GEMMs (what is left of a
layer after a wide tensor-parallel split) run at a lower fraction of peak than large ones. The default
curve is a fit; a measured table (`profiles/measured/<gpu>.toml`, rows of m, n, k, dtype, flops) from a
real GPU overrides it for that device.
"""
from __future__ import annotations

import importlib.resources
import math
import tomllib
from pathlib import Path
from dataclasses import dataclass, field, replace

from planner.errors import PlannerError

__all__ = ["Device", "LinkSpec", "NodeSpec", "device", "node_preset", "known_devices", "known_presets",
           "DEFAULT_GPU"]

DEFAULT_GPU = "a100-80gb"


@dataclass(frozen=True, kw_only=True, slots=True)
class Device:
    """One accelerator's peak rates and achievable fractions."""

    name: str
    description: str
    memory_bytes: int
    hbm_bandwidth: float
    """Bytes/s of device memory."""
    hbm_efficiency: float
    """Achievable fraction of `hbm_bandwidth` for memory-bound kernels."""
    peak_flops: dict[str, float]
    """Dense FLOP/s per dtype name (`bf16`, `fp16`, `fp32`, `tf32`, `fp8`)."""
    matmul_max_efficiency: float
    matmul_half_dim: float
    default_node: str
    source: str = ""
    """Where the numbers come from: `datasheet` or `measured DATE ...` (a `plan calibrate` file)."""
    node: dict | None = field(default=None, compare=False)
    """A node preset carried in the device's own file (what `plan calibrate` writes), else None."""
    op_overhead: float = 0.0
    """Host seconds per dispatched operator that add to its compute: eager CPU execution runs dispatch
    and kernel on one thread. 0 for GPUs, whose launches run ahead of (and hide behind) the kernels."""
    tp_op_overhead: float = 0.0
    """Host seconds a tensor-parallel (DTensor) projection adds per forward + backward on a host-bound
    device (its sharding propagation and redistribution bookkeeping); 0 for GPUs, where it overlaps."""
    comm_interference: float = 0.0
    """Compute seconds lost per second of data-parallel collective running beside it (NCCL's kernels
    hold SMs and memory bandwidth the GEMMs would use); 0 where collectives take no compute units
    (a CPU's gloo). Fitted, see the GPU files."""
    measured: tuple[tuple[int, int, int, str, float], ...] = field(default=())
    """Measured (m, n, k, dtype, FLOP/s) rows; when present they replace the fitted curve."""
    attention: tuple[tuple[int, int, int, str, float], ...] = field(default=())
    """Measured causal fused attention (q_len, kv_len, head_dim, dtype, FLOP/s of the kernel's work,
    `cost.layer.causal_work` of the square); when present they replace the GEMM curve for attention."""

    def peak(self, dtype: str) -> float:
        key = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
        if key not in self.peak_flops:
            raise PlannerError(f"{self.name} has no {dtype} peak; use one of {', '.join(self.peak_flops)}")
        return self.peak_flops[key]

    def matmul_efficiency(self, m: int, n: int, k: int, dtype: str = "bfloat16") -> float:
        """Fraction of peak a GEMM of this shape reaches (measured table if any, else the fitted curve)."""
        rows = [r for r in self.measured if r[3] == dtype]
        if rows:
            return _nearest(rows, m, n, k) / self.peak(dtype)
        h = self.matmul_half_dim
        return self.matmul_max_efficiency * (m / (m + h)) * (n / (n + h)) * (k / (k + h))

    def attention_rate(self, q_len: int, kv_len: int, head_dim: int, dtype: str) -> float | None:
        """Measured FLOP/s of the nearest (in log-shape) attention row, or None without one."""
        rows = [r for r in self.attention if r[3] == dtype]
        return _nearest(rows, q_len, kv_len, head_dim) if rows else None

    def matmul_time(self, m: int, n: int, k: int, dtype: str = "bfloat16", batch: int = 1) -> float:
        """Seconds for batch x (m, k) @ (k, n): FLOPs over the shape's achievable rate."""
        return 2 * batch * m * n * k / (self.peak(dtype) * self.matmul_efficiency(m, n, k, dtype))

    def slowed(self, gemm: float) -> "Device":
        """This device with every GEMM (and fused attention) `gemm` times slower: a what-if."""
        return replace(self, matmul_max_efficiency=self.matmul_max_efficiency / gemm,
                       measured=tuple((m, n, k, d, f / gemm) for m, n, k, d, f in self.measured),
                       attention=tuple((q, kv, h, d, f / gemm) for q, kv, h, d, f in self.attention))

    def memory_time(self, nbytes: float) -> float:
        return nbytes / (self.hbm_bandwidth * self.hbm_efficiency)


def _nearest(rows, m: int, n: int, k: int) -> float:
    """Measured FLOP/s of the row closest in log-shape to (m, n, k)."""
    def dist(r):
        return sum(math.log(a / b) ** 2 for a, b in zip(r[:3], (m, n, k)))
    return min(rows, key=dist)[4]


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkSpec:
    """One class of link: per-direction bandwidth (bytes/s), per-hop latency (s), achievable fraction."""

    kind: str
    bandwidth: float
    latency: float
    efficiency: float


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeSpec:
    """A node type: its GPUs, how they are joined, its NICs, and the fabric it expects."""

    name: str
    description: str
    gpu: str
    gpus_per_node: int
    intra: LinkSpec
    nic: LinkSpec
    nic_count: int
    pcie_bandwidth: float
    nodes_per_leaf: int
    oversubscription: float


def _data_dir(kind: str):
    return importlib.resources.files("profiles").joinpath(kind)


def _names(kind: str) -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in _data_dir(kind).iterdir() if p.name.endswith(".toml"))


def known_devices() -> list[str]:
    return _names("gpus")


def known_presets() -> list[str]:
    return _names("clusters")


def _read(kind: str, name: str, what: str, known: list[str]) -> dict:
    if name not in known:
        raise PlannerError(f"unknown {what} '{name}'; known: {', '.join(known)}")
    return tomllib.loads(_data_dir(kind).joinpath(f"{name}.toml").read_text())


def _field(data: dict, key: str, where: str):
    try:
        return data[key]
    except KeyError:
        raise PlannerError(f"{where}: missing field '{key}'") from None


def device(name: str) -> Device:
    """The device profile `name` (see `known_devices()`) with its measured table if one exists, or a
    device file (`plan calibrate` writes one) given by its path."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise PlannerError(f"gpu={name}: no such device profile file; write one with `plan calibrate`")
        d, where = tomllib.loads(path.read_text()), str(path)
        rows, attn = d.get("gemm", []), d.get("attention", [])
    else:
        d = _read("gpus", name.lower(), "GPU", known_devices())
        where = f"profiles/gpus/{name}.toml"
        table = _data_dir("measured").joinpath(f"{name.lower()}.toml")
        tables = tomllib.loads(table.read_text()) if table.is_file() else {}
        rows, attn = tables.get("gemm", []), tables.get("attention", [])
    measured = tuple((r["m"], r["n"], r["k"], r["dtype"], float(r["flops"])) for r in rows)
    attention = tuple((r["q_len"], r["kv_len"], r["head_dim"], r["dtype"], float(r["flops"])) for r in attn)
    mm = _field(d, "matmul", where)
    return Device(name=d["name"], description=d.get("description", d["name"]),
                  memory_bytes=int(_field(d, "memory_bytes", where)),
                  hbm_bandwidth=float(_field(d, "hbm_bandwidth", where)),
                  hbm_efficiency=float(_field(d, "hbm_efficiency", where)),
                  peak_flops={k: float(v) for k, v in _field(d, "peak_flops", where).items()},
                  matmul_max_efficiency=float(_field(mm, "max_efficiency", where)),
                  matmul_half_dim=float(_field(mm, "half_dim", where)),
                  default_node=_field(d, "default_node", where), op_overhead=float(d.get("op_overhead", 0.0)),
                  tp_op_overhead=float(d.get("tp_op_overhead", 0.0)),
                  comm_interference=float(d.get("comm_interference", 0.0)),
                  source=str(d.get("source", f"datasheet ({where})")), node=d.get("node"), measured=measured,
                  attention=attention)


def _link(d: dict, where: str) -> LinkSpec:
    return LinkSpec(kind=str(_field(d, "kind", where)), bandwidth=float(_field(d, "bandwidth", where)),
                    latency=float(_field(d, "latency", where)), efficiency=float(_field(d, "efficiency", where)))


def node_preset(name: str, overrides: dict | None = None, where: str | None = None,
                table: dict | None = None) -> NodeSpec:
    """A node preset from `profiles/clusters/` (or the `table` a device file carries), with fields a
    cluster file overrides."""
    d = table if table is not None else _read("clusters", name, "node preset", known_presets())
    o = overrides or {}
    where = where or f"profiles/clusters/{name}.toml"
    fabric = {**d.get("fabric", {}), **o.get("fabric", {})}
    nic = {**_field(d, "nic", where), **o.get("nic", {})}
    return NodeSpec(name=name, description=d.get("description", name), gpu=o.get("gpu", _field(d, "gpu", where)),
                    gpus_per_node=int(o.get("gpus_per_node", _field(d, "gpus_per_node", where))),
                    intra=_link({**_field(d, "intra", where), **o.get("intra", {})}, where),
                    nic=_link(nic, where), nic_count=int(_field(nic, "count", where)),
                    pcie_bandwidth=float(_field({**d.get("pcie", {}), **o.get("pcie", {})}, "bandwidth", where)),
                    nodes_per_leaf=int(fabric.get("nodes_per_leaf", 32)),
                    oversubscription=float(fabric.get("oversubscription", 1.0)))
