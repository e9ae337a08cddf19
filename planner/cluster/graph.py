"""The cluster as a networkx graph, from `--gpus 8x6`, a GPU name, or a cluster file (TOML).

Vertices: ("gpu", node, i) carrying the `Device`; ("switch", node) for NVSwitch / PCIe / Infinity Fabric;
("nic", node, c); ("leaf", l) top-of-rack switches; ("spine",) when there is more than one leaf.
Edges are directed (one per direction), each with `bandwidth` (bytes/s per direction), `latency` (s),
`efficiency` (achievable fraction, one per link class) and `kind` (the link class). GPU i of a node
reaches NIC `i * nics // gpus` over PCIe (rail alignment, as on DGX systems). A leaf's uplink to the
spine carries the sum of its nodes' NIC bandwidth divided by the oversubscription ratio.
"""
from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from planner.errors import PlannerError
from planner.cluster.hardware import DEFAULT_GPU, Device, NodeSpec, device, node_preset

__all__ = ["Cluster", "parse_gpus", "build_cluster", "load_cluster_file"]

_NODE_KEYS = {"preset", "count", "gpu", "gpus_per_node", "intra", "nic", "pcie"}
_FABRIC_KEYS = {"nodes_per_leaf", "oversubscription"}


@dataclass(frozen=True, eq=False)
class Cluster:
    """Nodes (one `NodeSpec` each, in rank order) and the graph that joins their GPUs."""

    name: str
    nodes: tuple[NodeSpec, ...]
    graph: nx.DiGraph = field(repr=False)
    nodes_per_leaf: int = 32
    oversubscription: float = 1.0
    first_ranks: tuple[int, ...] = field(init=False, repr=False)
    """Global rank of each node's GPU 0 (derived)."""
    links: dict = field(init=False, repr=False)
    """Directed edge -> (achievable bytes/s, latency s), derived from the graph: collective pricing
    reads them millions of times in a search, and networkx's edge views cost microseconds each."""

    vertices: tuple[tuple, ...] = field(init=False, repr=False)
    """Each global rank's GPU vertex (derived): collective pricing looks ranks up millions of times."""
    routes: dict = field(init=False, repr=False)
    """Rank pair -> its route (filled as routes are asked for; a route never changes)."""
    edge_ids: dict = field(init=False, repr=False)
    """Directed edge -> its index in `edge_bandwidth` (derived)."""
    edge_bandwidth: np.ndarray = field(init=False, repr=False)
    """Each edge's achievable bytes/s, by `edge_ids` index (derived)."""
    hops: dict = field(init=False, repr=False)
    """Rank pair -> (its route's edge indices, the route's latency), filled as asked for."""
    rank_nodes: np.ndarray = field(init=False, repr=False)
    """Each global rank's node index (derived): which groups contend is found by array lookups."""

    def __post_init__(self) -> None:
        starts = itertools.accumulate((n.gpus_per_node for n in self.nodes[:-1]), initial=0)
        object.__setattr__(self, "first_ranks", tuple(starts))
        object.__setattr__(self, "links", {(u, v): (d["bandwidth"] * d["efficiency"], d["latency"])
                                           for u, v, d in self.graph.edges(data=True)})
        object.__setattr__(self, "vertices", tuple(("gpu", j, i) for j, n in enumerate(self.nodes)
                                                   for i in range(n.gpus_per_node)))
        object.__setattr__(self, "routes", {})
        object.__setattr__(self, "edge_ids", {e: i for i, e in enumerate(self.links)})
        object.__setattr__(self, "edge_bandwidth", np.array([bw for bw, _ in self.links.values()]))
        object.__setattr__(self, "hops", {})
        object.__setattr__(self, "rank_nodes", np.repeat(np.arange(len(self.nodes)),
                                                         [n.gpus_per_node for n in self.nodes]))

    @property
    def num_gpus(self) -> int:
        return sum(n.gpus_per_node for n in self.nodes)

    @property
    def gpus_per_node(self) -> int:
        """GPUs per node (the smallest, for a mixed cluster: what TP groups inside a node may use)."""
        return min(n.gpus_per_node for n in self.nodes)

    @property
    def devices(self) -> tuple[str, ...]:
        """Each node's device name (a measured profile's name, not its file path)."""
        return tuple(self.graph.nodes[("gpu", j, 0)]["device"].name for j in range(len(self.nodes)))

    def device_of(self, rank: int) -> Device:
        return self.graph.nodes[self.gpu(rank)]["device"]

    def gpu(self, rank: int) -> tuple:
        """Graph vertex of global rank `rank` (ranks are numbered node by node)."""
        if not 0 <= rank < len(self.vertices):
            raise IndexError(f"rank {rank} out of range: the cluster has {self.num_gpus} GPUs")
        return self.vertices[rank]

    def node_of(self, rank: int) -> int:
        return self.gpu(rank)[1]

    def route(self, u: int, v: int) -> tuple[tuple, ...]:
        """Directed edges from rank u's GPU to rank v's: through the node switch, or NIC-fabric-NIC."""
        found = self.routes.get((u, v))
        if found is None:
            found = self.routes[(u, v)] = self._route(u, v)
        return found

    def route_hops(self, u: int, v: int) -> tuple[tuple[int, ...], float]:
        """`route(u, v)` as edge indices, with its latency summed hop by hop (kept here only: collective
        pricing asks for tens of thousands of pairs, which need not be cached twice)."""
        found = self.hops.get((u, v))
        if found is None:
            route = self._route(u, v)
            lat = 0.0
            for e in route:
                lat += self.links[e][1]
            found = self.hops[(u, v)] = (tuple(self.edge_ids[e] for e in route), lat)
        return found

    def _route(self, u: int, v: int) -> tuple[tuple, ...]:
        a, b = self.gpu(u), self.gpu(v)
        if a == b:
            return ()
        if a[1] == b[1]:
            sw = ("switch", a[1])
            return ((a, sw), (sw, b))
        na, nb = self.nic_of(a), self.nic_of(b)
        la, lb = ("leaf", a[1] // self.nodes_per_leaf), ("leaf", b[1] // self.nodes_per_leaf)
        mid = [] if la == lb else [(la, ("spine",)), (("spine",), lb)]
        return ((a, na), (na, la), *mid, (lb, nb), (nb, b))

    def nic_of(self, gpu: tuple) -> tuple:
        """The NIC vertex a GPU vertex sends through (GPUs share a node's NICs evenly, rail-aligned)."""
        spec = self.nodes[gpu[1]]
        return ("nic", gpu[1], gpu[2] * spec.nic_count // spec.gpus_per_node)

    def summary(self) -> str:
        kinds = sorted(set(self.devices))
        return f"{self.num_gpus} GPUs on {len(self.nodes)} node(s) ({', '.join(kinds)})"


def _edge(g: nx.DiGraph, u, v, kind: str, bw: float, lat: float, eff: float) -> None:
    for x, y in ((u, v), (v, u)):
        g.add_edge(x, y, kind=kind, bandwidth=bw, latency=lat, efficiency=eff)


def build_cluster(name: str, nodes: list[NodeSpec], nodes_per_leaf: int | None = None,
                  oversubscription: float | None = None) -> Cluster:
    """Wire nodes into the graph described in the module docstring."""
    per_leaf = nodes_per_leaf or nodes[0].nodes_per_leaf
    over = oversubscription if oversubscription is not None else nodes[0].oversubscription
    if per_leaf < 1 or over < 1:
        raise PlannerError(f"{name}: nodes_per_leaf must be >= 1 and oversubscription >= 1 "
                           f"(got {per_leaf} and {over})")
    g = nx.DiGraph()
    devices: dict[str, Device] = {}
    leaves = (len(nodes) + per_leaf - 1) // per_leaf
    uplink = [0.0] * leaves
    for j, spec in enumerate(nodes):
        dev = devices.setdefault(spec.gpu, device(spec.gpu))
        sw = ("switch", j)
        g.add_node(sw, kind=spec.intra.kind)
        for c in range(spec.nic_count):
            nic, leaf = ("nic", j, c), ("leaf", j // per_leaf)
            _edge(g, nic, leaf, spec.nic.kind, spec.nic.bandwidth, spec.nic.latency / 2, spec.nic.efficiency)
            uplink[j // per_leaf] += spec.nic.bandwidth
        for i in range(spec.gpus_per_node):
            gpu = ("gpu", j, i)
            g.add_node(gpu, device=dev)
            i_lat = spec.intra.latency / 2
            _edge(g, gpu, sw, spec.intra.kind, spec.intra.bandwidth, i_lat, spec.intra.efficiency)
            _edge(g, gpu, ("nic", j, i * spec.nic_count // spec.gpus_per_node), "pcie", spec.pcie_bandwidth, 0.0, 1.0)
    if leaves > 1:
        eff = min(n.nic.efficiency for n in nodes)
        for leaf in range(leaves):
            _edge(g, ("leaf", leaf), ("spine",), "spine", uplink[leaf] / over, 0.5e-6, eff)
    return Cluster(name=name, nodes=tuple(nodes), graph=g, nodes_per_leaf=per_leaf, oversubscription=over)


_SHORTHAND = re.compile(r"^(\d+)(?:x(\d+))?$")


def _shorthand(spec: str, gpu: str) -> Cluster:
    m = _SHORTHAND.match(spec)
    if not m:
        raise PlannerError(f"gpus={spec}: expected GPUSxNODES (e.g. 8x6 = 8 GPUs per node, 6 nodes), "
                           "GPUS for one node, or a cluster .toml file")
    per_node, nodes = int(m[1]), int(m[2] or 1)
    if per_node < 1 or nodes < 1:
        what = "GPUs per node" if per_node < 1 else "number of nodes"
        raise PlannerError(f"gpus={spec}: the {what} must be at least 1 (8x6 = 8 GPUs per node, 6 nodes)")
    dev = device(gpu)
    spec_node = node_preset(dev.default_node, {"gpu": gpu, "gpus_per_node": per_node}, table=dev.node)
    return build_cluster(spec, [spec_node] * nodes)


def load_cluster_file(path: Path) -> Cluster:
    """A TOML file: `[[nodes]]` tables (preset, count; optional gpu, gpus_per_node, intra/nic/pcie
    overrides) and an optional `[fabric]` (nodes_per_leaf, oversubscription)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise PlannerError(f"{path}: cannot read the cluster file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise PlannerError(f"{path}: not valid TOML ({e})") from None
    unknown = set(data) - {"nodes", "fabric"}
    if unknown or not data.get("nodes"):
        raise PlannerError(f"{path}: " + (f"unknown field '{sorted(unknown)[0]}'; " if unknown else
                           "missing field 'nodes'; ") + "a cluster file has [[nodes]] tables and an optional [fabric]")
    nodes: list[NodeSpec] = []
    for i, entry in enumerate(data["nodes"]):
        where = f"{path}: nodes[{i}]"
        for key in ("preset", "count"):
            if key not in entry:
                raise PlannerError(f"{where} is missing field '{key}'")
        extra = set(entry) - _NODE_KEYS
        if extra:
            raise PlannerError(f"{where} has unknown field '{sorted(extra)[0]}'; known: {', '.join(sorted(_NODE_KEYS))}")
        if not isinstance(entry["count"], int) or entry["count"] < 1:
            raise PlannerError(f"{where}: count must be a positive integer, got {entry['count']!r}")
        overrides = {k: v for k, v in entry.items() if k not in ("preset", "count")}
        try:
            spec = node_preset(entry["preset"], overrides, where)
        except PlannerError as e:
            raise PlannerError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
        nodes += [spec] * entry["count"]
    fabric = data.get("fabric", {})
    extra = set(fabric) - _FABRIC_KEYS
    if extra:
        raise PlannerError(f"{path}: [fabric] has unknown field '{sorted(extra)[0]}'; known: {', '.join(sorted(_FABRIC_KEYS))}")
    return build_cluster(str(path), nodes, fabric.get("nodes_per_leaf"), fabric.get("oversubscription"))


def parse_gpus(spec: str, gpu: str | None = None) -> list[Cluster]:
    """`8x6`, `8`, `cluster.toml`, or a comma list of these (clusters to compare)."""
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise PlannerError(f"gpus='{spec}': empty entry; e.g. gpus=8x6 or gpus=8x6,8x12")
    out = []
    for part in parts:
        if part.endswith(".toml") or Path(part).is_file():
            if not Path(part).is_file():
                raise PlannerError(f"gpus={part}: no such cluster file")
            out.append(load_cluster_file(Path(part)))
        else:
            out.append(_shorthand(part, (gpu or DEFAULT_GPU).lower()))
    return out
