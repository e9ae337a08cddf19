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
    links = {}
    for _, _, d in cluster.graph.edges(data=True):
        links.setdefault((d["kind"], d["bandwidth"]), d)
    print(file=out)
    table(["link class", "GB/s per direction", "achievable", "latency us"],
          [[k, f"{bw / 1e9:.1f}", f"{d['efficiency']:.0%}", f"{d['latency'] * 1e6:.2f}"]
           for (k, bw), d in sorted(links.items())], out=out)
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


def draw_cluster(cluster: Cluster, path: str) -> None:
    """Draw GPUs, switches, NICs and the fabric, one column per node, with link classes as colours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    g = cluster.graph.to_undirected()
    pos = {}
    for v in g.nodes:
        if v[0] == "gpu":
            pos[v] = (v[1] * 3 + 0.0, -v[2])
        elif v[0] == "switch":
            pos[v] = (v[1] * 3 + 1.0, -cluster.nodes[v[1]].gpus_per_node / 2)
        elif v[0] == "nic":
            pos[v] = (v[1] * 3 + 2.0, -v[2])
        elif v[0] == "leaf":
            pos[v] = ((v[1] + 0.5) * cluster.nodes_per_leaf * 3, 3.0)
        else:
            pos[v] = (len(cluster.nodes) * 1.5, 6.0)
    kinds = sorted({d["kind"] for _, _, d in g.edges(data=True)})
    colours = {k: plt.cm.tab10(i) for i, k in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(min(40, 3 + 1.5 * len(cluster.nodes)), 7))
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=60,
                           node_color=["tab:green" if v[0] == "gpu" else "tab:gray" for v in g.nodes])
    for k in kinds:
        nx.draw_networkx_edges(g, pos, ax=ax, edge_color=[colours[k]], label=k,
                               edgelist=[(u, v) for u, v, d in g.edges(data=True) if d["kind"] == k])
    ax.legend(loc="lower right")
    ax.set_title(f"{cluster.name}: {cluster.summary()}")
    ax.axis("off")
    fig.savefig(path, format="svg" if path.endswith(".svg") else "png", bbox_inches="tight")
    plt.close(fig)
