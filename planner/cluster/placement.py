"""Rank placement: map a (pp, dp, tp) mesh onto ranks so that the chattiest axis gets the fastest links.

Ranks are numbered node by node, so the innermost mesh axis (consecutive ranks) stays inside a node.
By default the axes are ordered by their traffic per step, TP (several collectives per block) innermost,
then DP (one gradient reduction per step), then PP (point-to-point activations) outermost, as
Megatron-LM and torchtitan lay them out; pass measured traffic to reorder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.cluster.graph import Cluster
from planner.errors import PlannerError

__all__ = ["Mesh", "place", "link_classes", "DEFAULT_TRAFFIC"]

DEFAULT_TRAFFIC = {"tp": 3.0, "dp_shard": 2.5, "dp": 2.0, "dp_replicate": 1.5, "pp": 1.0}
"""HSDP: the shard group (gathers every layer) sits inside the replicate group (one all-reduce)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Mesh:
    """Axis sizes in outer-to-inner order; rank of a coordinate is its row-major index."""

    axes: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def world(self) -> int:
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def rank(self, coord: dict[str, int]) -> int:
        r = 0
        for axis, size in zip(self.axes, self.sizes):
            r = r * size + coord[axis]
        return r

    def groups(self, axis: str) -> list[list[int]]:
        """All groups of `axis`: ranks that differ only in that axis' coordinate, in row-major order of
        the other axes."""
        return self.group_array(axis).tolist()

    def group_array(self, axis: str) -> np.ndarray:
        """`groups` as a (groups, size) array: a 16,384-rank mesh is priced hundreds of times per
        search, and pricing needs only the few groups that share nodes with the first
        (`collectives.contending_rows`); turning all of them into lists took 2.7 ms a mesh."""
        k = self.axes.index(axis)
        ranks = np.arange(self.world).reshape(self.sizes)
        return np.moveaxis(ranks, k, -1).reshape(-1, self.sizes[k])


def place(cluster: Cluster, sizes: dict[str, int], traffic: dict[str, float] | None = None) -> Mesh:
    """Order the axes by traffic (least outermost) and check the mesh covers the cluster."""
    traffic = {**DEFAULT_TRAFFIC, **(traffic or {})}
    axes = tuple(sorted(sizes, key=lambda a: traffic.get(a, 0.0)))
    mesh = Mesh(axes=axes, sizes=tuple(sizes[a] for a in axes))
    if mesh.world != cluster.num_gpus:
        arith = " x ".join(f"{a}{sizes[a]}" for a in axes)
        raise PlannerError(f"{arith} = {mesh.world} ranks, but the cluster has {cluster.num_gpus} GPUs")
    return mesh


def link_classes(cluster: Cluster, mesh: Mesh, axis: str) -> list[str]:
    """The link classes the axis' neighbouring ranks talk over (e.g. ['nvlink3'] or ['pcie', 'ib-hdr'])."""
    kinds: set[str] = set()
    for group in mesh.groups(axis):
        for a, b in zip(group, group[1:]):
            kinds.update(cluster.graph.edges[e]["kind"] for e in cluster.route(a, b))
    return sorted(kinds)


