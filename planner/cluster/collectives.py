"""Collective costs from the cluster graph, for all the groups of a mesh axis running at once.

Model (the alpha-beta model of NCCL's ring and tree algorithms, with link contention):
- Ring. Each group's members form a ring in rank order (placement keeps node-mates adjacent). A group
  inside one node uses one ring through the node switch. A group spanning nodes runs C channels, one per
  NIC rail its members use (NCCL opens at least one channel per NIC); channel c enters each node at the
  member on rail c and leaves by the next rail, so every NIC carries one channel each way. A channel
  carries 1/C of the message.
- Bandwidth term. Every flow (one ring hop of one channel of one group) is routed on the graph; each
  directed edge's load is the bytes of all flows through it. A ring moves `factor x bytes` over every
  hop, so time = factor x max over edges of load / (bandwidth x efficiency). factor is NCCL's bus
  factor: 2(n-1)/n for all-reduce, (n-1)/n for all-gather / reduce-scatter / all-to-all.
- Latency term. steps x the slowest hop's path latency: 2(n-1) steps for a ring all-reduce, n-1 for
  the gathers. For an all-reduce that spans nodes, NCCL's tree is also priced (same bandwidth term,
  2·ceil(log2 nodes) inter-node steps plus the intra-node chain) and the faster of the two is used.
- all-to-all: every member sends bytes/n to every other; p2p: given pairs, bytes each, all at once.
Bus bandwidth (what nccl-tests prints as busbw) = factor x bytes / time.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

from planner.cluster.graph import Cluster

__all__ = ["collective_time", "collective_model", "ring_loads", "p2p_time", "p2p_model", "bus_bandwidth", "bus_factor", "OPS"]

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def bus_factor(op: str, n: int) -> float:
    """NCCL's bus-bandwidth factor for a group of n."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    raise ValueError(f"unknown collective {op!r}; one of {OPS}")


def _ring_flows(cluster: Cluster, group: Sequence[int]) -> list[tuple[int, int, float]]:
    """(src, dst, share of the message) for each hop of each channel of one group's ring."""
    by_node: dict[int, list[int]] = defaultdict(list)
    for r in group:
        by_node[cluster.node_of(r)].append(r)
    nodes = list(by_node)
    if len(nodes) == 1:
        return [(a, b, 1.0) for a, b in zip(group, [*group[1:], group[0]])]
    rails = {cluster.nic_of(cluster.gpu(r))[2] for r in by_node[nodes[0]]}
    channels = len(rails)
    flows = []
    for c in range(channels):
        order = []
        for j in nodes:
            members = by_node[j]
            k = c % len(members)
            order += members[k:] + members[:k]
        flows += [(a, b, 1.0 / channels) for a, b in zip(order, [*order[1:], order[0]])]
    return flows


def _loads(cluster: Cluster, flows: list[tuple[int, int, float]], nbytes: float) -> tuple[float, float]:
    """(max over edges of load / achievable bandwidth, slowest path latency) for concurrent flows.
    Each edge's load is summed in flow order (`np.bincount` adds in input order), so it equals the sum
    a loop over the flows makes; a 2,048-node axis routes a million hops."""
    ids: list[int] = []
    weights: list[float] = []
    worst_latency = 0.0
    hops = cluster.route_hops
    for src, dst, share in flows:
        route, lat = hops(src, dst)
        ids += route
        weights += [share * nbytes] * len(route)
        if lat > worst_latency:
            worst_latency = lat
    if not ids:
        return 0.0, worst_latency
    load = np.bincount(ids, weights, minlength=len(cluster.edge_bandwidth))
    used = load > 0
    return float((load[used] / cluster.edge_bandwidth[used]).max()), worst_latency


def contending_rows(cluster: Cluster, rows: np.ndarray) -> list[list[int]]:
    """`_contending` of a (groups, size) array of ranks, by array lookups: the rows with a rank on a
    node of row 0's, in their order, as lists."""
    nodes = cluster.rank_nodes[rows]
    return rows[np.isin(nodes, nodes[0]).any(axis=1)].tolist()


def _contending(cluster: Cluster, groups: Sequence[Sequence[int]]) -> list[Sequence[int]]:
    """The groups that share a node with the first group: the only ones that load its GPUs' switch and
    NIC edges. Pricing just these keeps a 3,072-GPU axis cheap; it is exact for in-node and NIC edges
    and ignores contention on leaf/spine links from groups on other nodes."""
    nodes = {cluster.node_of(r) for r in groups[0]}
    mine = {r for j in nodes for r in range(cluster.first_ranks[j], cluster.first_ranks[j] + cluster.nodes[j].gpus_per_node)}
    return [g for g in groups if not mine.isdisjoint(g)]


def ring_loads(cluster: Cluster, groups: Sequence[Sequence[int]]) -> tuple[float, float]:
    """(the busiest edge's load / bandwidth per byte, the slowest hop's latency) of every group's ring
    at once: what all-reduce, all-gather and reduce-scatter share (their rings carry the same flows),
    so a caller pricing all three on one axis computes it once (a 2,048-node axis: 11 ms each)."""
    groups = _contending(cluster, groups)
    return _loads(cluster, [f for grp in groups for f in _ring_flows(cluster, grp)], 1.0)


def collective_model(cluster: Cluster, op: str, groups: Sequence[Sequence[int]],
                     rings: tuple[float, float] | None = None) -> tuple[float, float]:
    """(seconds per byte, fixed seconds) of `op` in every group of `groups` at once: the time for a
    buffer of B bytes is fixed + B x per_byte (see the module doc for both terms). `rings`: the groups'
    `ring_loads`, when the caller has them."""
    n = len(groups[0])
    if n <= 1:
        return 0.0, 0.0
    factor = bus_factor(op, n)
    if op == "all_to_all":
        groups = _contending(cluster, groups)
        flows = [(a, b, 1.0 / n) for grp in groups for a in grp for b in grp if a != b]
        busiest, lat = _loads(cluster, flows, 1.0)
        return busiest, (n - 1) * lat
    busiest, lat = rings if rings is not None else ring_loads(cluster, groups)
    steps = 2 * (n - 1) if op == "all_reduce" else n - 1
    fixed = steps * lat
    nodes = {cluster.node_of(r) for r in groups[0]}
    if op == "all_reduce" and len(nodes) > 1:
        intra = max(cluster.nodes[j].intra.latency for j in nodes)
        fixed = min(fixed, 2 * (math.ceil(math.log2(len(nodes))) * lat + (n // len(nodes) - 1) * intra))
    return factor * busiest, fixed


def collective_time(cluster: Cluster, op: str, groups: Sequence[Sequence[int]], nbytes: float) -> float:
    """Seconds for `op` on `nbytes` (the full buffer) in every group of `groups` at once."""
    if nbytes <= 0:
        return 0.0
    per_byte, fixed = collective_model(cluster, op, groups)
    return fixed + per_byte * nbytes


def p2p_model(cluster: Cluster, pairs: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """(seconds per byte, fixed seconds) for every (src, dst) pair sending at once."""
    if not pairs:
        return 0.0, 0.0
    pairs = _contending(cluster, pairs)
    busiest, lat = _loads(cluster, [(a, b, 1.0) for a, b in pairs], 1.0)
    return busiest, lat


def p2p_time(cluster: Cluster, pairs: Sequence[tuple[int, int]], nbytes: float) -> float:
    """Seconds for every (src, dst) pair to send `nbytes` at once (pipeline-stage boundaries)."""
    if not pairs or nbytes <= 0:
        return 0.0
    per_byte, fixed = p2p_model(cluster, pairs)
    return fixed + per_byte * nbytes


def bus_bandwidth(op: str, n: int, nbytes: float, seconds: float) -> float:
    """nccl-tests' busbw: factor x bytes / time (bytes/s)."""
    return bus_factor(op, n) * nbytes / seconds
