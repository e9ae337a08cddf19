"""`plan cluster`: print the cluster, its link classes and what each mesh axis would run over."""
from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from planner.cluster.graph import Cluster
from planner.cluster.collectives import bus_bandwidth, collective_time
from planner.cluster.placement import Mesh, link_classes
from planner.report.text import gib, table

__all__ = ["print_cluster", "draw_cluster"]


def print_cluster(cluster: Cluster, mesh: Mesh, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print(f"cluster {cluster.name}: {cluster.summary()}", file=out)
    rows = []
    for (spec, gpu), count in Counter((n.name, n.gpu) for n in cluster.nodes).items():
        n = next(x for x in cluster.nodes if x.name == spec and x.gpu == gpu)
        dev = cluster.graph.nodes[("gpu", cluster.nodes.index(n), 0)]["device"]
        rows.append([spec, str(count), f"{n.gpus_per_node} x {gpu}", gib(dev.memory_bytes),
                     f"{dev.peak('bf16') / 1e12:.0f}", f"{n.intra.kind}", f"{n.nic_count} x {n.nic.kind}"])
    table(["node type", "nodes", "GPUs", "memory", "bf16 TFLOP/s", "in node", "NICs"], rows, out=out)
    links: dict[tuple, tuple[dict, set]] = {}
    for u, v, d in cluster.graph.edges(data=True):
        entry = links.setdefault((d["kind"], d["bandwidth"]), (d, set()))
        entry[1].update(_where(cluster, u, v))
    print(file=out)
    table(["link class", "GB/s per direction", "achievable", "latency us", "where"],
          [[k, f"{bw / 1e9:.1f}", f"{d['efficiency']:.0%}", _latency(d["latency"]), ", ".join(sorted(at))]
           for (k, bw), (d, at) in sorted(links.items())], out=out)
    rows = []
    for axis, size in zip(mesh.axes, mesh.sizes):
        groups = mesh.groups(axis)
        op = "p2p" if axis == "pp" else "all_reduce"
        if size > 1 and op == "all_reduce":
            t = collective_time(cluster, op, groups, 2**30)
            bw = f"{bus_bandwidth(op, size, 2**30, t) / 1e9:.1f}"
        else:
            bw = "-"
        rows.append([axis, str(size), str(len(groups)), ", ".join(link_classes(cluster, mesh, axis)) or "-", bw])
    print(file=out)
    table(["axis", "size", "groups", "links", "all-reduce busbw 1 GiB, GB/s"], rows, out=out,
          title=f"mesh {' x '.join(f'{a}{s}' for a, s in zip(mesh.axes, mesh.sizes))} (outer to inner), all groups at once")


def _where(cluster: Cluster, u: tuple, v: tuple) -> set[str]:
    """The node types an edge lies in, or `fabric` between nodes."""
    inside = {cluster.nodes[x[1]].name for x in (u, v) if x[0] in ("gpu", "switch", "nic")}
    return {f"{n} {'GPU-NIC' if 'nic' in (u[0], v[0]) and 'gpu' in (u[0], v[0]) else 'in node'}" for n in inside} \
        if u[0] != "leaf" and v[0] != "leaf" else {"fabric"}


def _latency(seconds: float) -> str:
    """Microseconds, or `-` where the hop's latency is counted on another edge of the path."""
    return f"{seconds * 1e6:.2f}" if seconds else "-"


MAX_DRAWN_NODES = 8
"""Nodes drawn at most (the fabric of larger clusters is drawn for the first ones and said so)."""


def _positions(cluster: Cluster, g) -> dict:
    """One column block per node (GPUs, its switch, its NICs), leaf switches above, the spine on top."""
    pos = {}
    width = 5.0
    for v in g.nodes:
        kind = v[0]
        if kind in ("gpu", "switch", "nic"):
            gpn = cluster.nodes[v[1]].gpus_per_node
            x0 = v[1] * width
            if kind == "gpu":
                pos[v] = (x0, -v[2])
            elif kind == "switch":
                pos[v] = (x0 + 1.5, -(gpn - 1) / 2)
            else:
                nics = cluster.nodes[v[1]].nic_count
                pos[v] = (x0 + 3.0, -v[2] * (gpn - 1) / max(1, nics - 1))
        elif kind == "leaf":
            shown = min(len(cluster.nodes), MAX_DRAWN_NODES)
            first = v[1] * cluster.nodes_per_leaf
            last = min(first + cluster.nodes_per_leaf, shown) - 1
            pos[v] = ((first + last) / 2 * width + 1.5, 3.0)
        else:
            pos[v] = ((min(len(cluster.nodes), MAX_DRAWN_NODES) - 1) / 2 * width + 1.5, 6.0)
    return pos


def draw_cluster(cluster: Cluster, path: str) -> None:
    """Draw GPUs, node switches, NICs and the fabric, one labelled column per node (the first
    `MAX_DRAWN_NODES` of a larger cluster), link classes as colours."""
    import networkx as nx
    from planner.report.figure import figure, save
    shown = min(len(cluster.nodes), MAX_DRAWN_NODES)
    keep = [v for v in cluster.graph.nodes
            if (v[0] in ("gpu", "switch", "nic") and v[1] < shown)
            or (v[0] == "leaf" and v[1] * cluster.nodes_per_leaf < shown) or v[0] not in ("gpu", "switch", "nic", "leaf")]
    g = cluster.graph.subgraph(keep).to_undirected()
    pos = _positions(cluster, g)
    kinds = sorted({d["kind"] for _, _, d in g.edges(data=True)})
    plt, (fig, ax) = figure(min(40, 4 + 2.2 * shown), 8)
    colours = {k: plt.cm.tab10(i) for i, k in enumerate(kinds)}
    for k in kinds:
        nx.draw_networkx_edges(g, pos, ax=ax, edge_color=[colours[k]], label=k, width=1.2,
                               edgelist=[(u, v) for u, v, d in g.edges(data=True) if d["kind"] == k])
    style = {"gpu": ("tab:green", "s", 120), "switch": ("tab:blue", "D", 160), "nic": ("tab:orange", "o", 80)}
    for kind, (colour, marker, size) in style.items():
        nx.draw_networkx_nodes(g, pos, ax=ax, nodelist=[v for v in g.nodes if v[0] == kind], node_color=colour,
                               node_shape=marker, node_size=size, label=kind.upper() if kind != "switch" else "node switch")
    nx.draw_networkx_nodes(g, pos, ax=ax, nodelist=[v for v in g.nodes if v[0] in ("leaf", "spine")],
                           node_color="tab:gray", node_shape="h", node_size=300, label="leaf / spine switch")
    for j in range(shown):
        n = cluster.nodes[j]
        ax.text(j * 5.0 + 1.5, 1.0, f"node {j}\n{n.name}: {n.gpus_per_node} x {n.gpu}", ha="center", fontsize=7)
    more = f" (first {shown} of {len(cluster.nodes)} nodes drawn)" if shown < len(cluster.nodes) else ""
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    ax.set_title(f"{cluster.name}: {cluster.summary()}{more}", fontsize=9)
    ax.axis("off")
    save(plt, fig, path)
