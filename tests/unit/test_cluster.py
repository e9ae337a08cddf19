"""Cluster graph and collective costs against nccl-tests figures, placement, specs and errors.

Reference bus bandwidths (nccl-tests all_reduce_perf, large messages): DGX A100 ~230 GB/s inside a
node and ~24 GB/s per HDR NIC across nodes; DGX H100 ~370 GB/s inside and ~46 GB/s per NDR NIC (the
figures cited in profiles/clusters/dgx-*.toml).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cli import main
from planner.cluster.graph import build_cluster, parse_gpus
from planner.cluster.collectives import bus_bandwidth, collective_time, p2p_time
from planner.errors import PlannerError
from planner.cluster.hardware import known_devices, node_preset
from planner.cluster.placement import link_classes, place

REFERENCE = {"dgx-a100": (230e9, 24e9), "dgx-h100": (370e9, 46e9)}
SIZES = [2**20, 2**24, 2**28, 2**30]


def cluster(preset: str, nodes: int, nics: int | None = None):
    spec = node_preset(preset, {"nic": {"count": nics}} if nics else None)
    return build_cluster(f"{preset}x{nodes}", [spec] * nodes)


def busbw(c, groups, nbytes):
    return bus_bandwidth("all_reduce", len(groups[0]), nbytes, collective_time(c, "all_reduce", groups, nbytes))


@pytest.mark.parametrize("preset", REFERENCE)
@pytest.mark.parametrize("nics", [8, 1])
def test_all_reduce_matches_nccl_tests(preset, nics):
    intra, per_nic = REFERENCE[preset]
    c = cluster(preset, 8, nics)
    one_node = [list(range(8))]
    two_nodes = [list(range(16))]
    rails = [[j * 8 + i for j in range(8)] for i in range(8)]  # 8 groups, one GPU per node each
    for nbytes in SIZES:
        figures = {"node": busbw(c, one_node, nbytes),
                   "2 nodes, per NIC": busbw(c, two_nodes, nbytes) / nics,
                   "8 rails, per NIC": busbw(c, rails, nbytes) * 8 / nics}
        expected = {"node": intra, "2 nodes, per NIC": per_nic, "8 rails, per NIC": per_nic}
        for key, bw in figures.items():
            if nbytes >= 2**28:  # bandwidth-bound: within 15% of nccl-tests
                assert abs(bw / expected[key] - 1) < 0.15, (key, nbytes, bw)
            else:  # latency-bound: below the asymptote, and rising with size
                assert bw < expected[key] * 1.15
    for group in (one_node, two_nodes, rails):
        bws = [busbw(c, group, s) for s in SIZES]
        assert bws == sorted(bws)


@settings(max_examples=30, deadline=None)
@given(a=st.integers(1, 2**31), b=st.integers(1, 2**31), n=st.sampled_from([2, 4, 8]),
       op=st.sampled_from(["all_reduce", "all_gather", "reduce_scatter", "all_to_all"]))
def test_more_bytes_never_cost_less(a, b, n, op):
    c = cluster("dgx-a100", 2)
    groups = [list(range(0, 16, 16 // n))]
    lo, hi = sorted((a, b))
    assert collective_time(c, op, groups, lo) <= collective_time(c, op, groups, hi)


@settings(max_examples=20, deadline=None)
@given(n=st.sampled_from([2, 4, 8]), nbytes=st.integers(2**10, 2**31),
       preset=st.sampled_from(["dgx-a100", "dgx-h100", "pcie-server", "ethernet"]))
def test_inside_a_node_never_slower_than_across(n, nbytes, preset):
    c = cluster(preset, 2)
    inside = collective_time(c, "all_reduce", [list(range(n))], nbytes)
    across = collective_time(c, "all_reduce", [[*range(n // 2), *range(8, 8 + n // 2)]], nbytes)
    assert inside <= across


@settings(max_examples=20, deadline=None)
@given(over=st.floats(1.0, 8.0), nbytes=st.integers(2**10, 2**31))
def test_oversubscribed_spine_never_faster(over, nbytes):
    spec = node_preset("dgx-a100")
    flat = build_cluster("flat", [spec] * 8, nodes_per_leaf=8)
    spine = build_cluster("spine", [spec] * 8, nodes_per_leaf=2, oversubscription=over)
    groups = [[j * 8 + i for j in range(8)] for i in range(8)]
    assert collective_time(spine, "all_reduce", groups, nbytes) >= collective_time(flat, "all_reduce", groups, nbytes)


def test_p2p_in_node_faster_than_across():
    c = cluster("dgx-a100", 2)
    assert p2p_time(c, [(0, 1)], 2**26) < p2p_time(c, [(0, 8)], 2**26)


def test_routes_are_shortest_paths():
    import networkx as nx
    c = parse_gpus("examples/clusters/oversubscribed.toml")[0]
    for u, v in [(0, 1), (0, 9), (3, 60), (17, 18)]:
        path = [e[0] for e in c.route(u, v)] + [c.gpu(v)]
        assert len(path) == len(nx.shortest_path(c.graph, c.gpu(u), c.gpu(v)))


def test_placement_puts_tp_inside_nodes():
    c = parse_gpus("8x4")[0]
    mesh = place(c, {"pp": 2, "dp": 2, "tp": 8})
    assert mesh.axes == ("pp", "dp", "tp")
    assert all(len({c.node_of(r) for r in g}) == 1 for g in mesh.groups("tp"))
    assert link_classes(c, mesh, "tp") == ["nvlink3"]
    assert "ib-hdr" in link_classes(c, mesh, "dp")
    assert sorted(r for g in mesh.groups("pp") for r in g) == list(range(32))
    flipped = place(c, {"pp": 2, "dp": 2, "tp": 8}, traffic={"pp": 10.0})
    assert flipped.axes[-1] == "pp"
    with pytest.raises(PlannerError, match="pp2 x dp2 x tp4 = 16 ranks, but the cluster has 32 GPUs"):
        place(c, {"pp": 2, "dp": 2, "tp": 4})


def test_mixed_cluster_file():
    c = parse_gpus("examples/clusters/mixed-a100-h100.toml")[0]
    assert c.num_gpus == 32 and c.devices.count("h100-sxm") == 2
    assert c.device_of(31).name == "h100-sxm" and c.device_of(0).name == "a100-80gb"


def test_device_profiles_exist_and_gemm_efficiency_grows_with_size():
    for name in ["a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "v100-32gb", "l40s", "mi300x", "cpu"]:
        assert name in known_devices()
    from planner.cluster.hardware import device
    d = device("a100-80gb")
    assert d.matmul_efficiency(2048, 1536, 12288) < d.matmul_efficiency(2048, 12288, 12288) < 1


def test_measured_table_overrides_fit():
    from dataclasses import replace
    from planner.cluster.hardware import device
    d = replace(device("h100-sxm"), measured=((4096, 4096, 4096, "bfloat16", 600e12), (256, 256, 256, "bfloat16", 50e12)))
    assert d.matmul_efficiency(4000, 4000, 4000) == pytest.approx(600e12 / 989.5e12)
    assert d.matmul_efficiency(300, 200, 256) == pytest.approx(50e12 / 989.5e12)


BAD_SPECS = {
    "8x0": "the number of nodes must be at least 1",
    "0x8": "the GPUs per node must be at least 1",
    "x6": "expected GPUSxNODES",
    "8x6x2": "expected GPUSxNODES",
    "abc": "expected GPUSxNODES",
    "8x6,": "empty entry",
    "missing.toml": "no such cluster file",
}


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_gpus_spec(capsys, spec):
    assert main(["cluster", "--gpus", spec]) == 2
    err = capsys.readouterr().err
    assert BAD_SPECS[spec] in err and err.count("\n") == 1


def test_unknown_gpu_lists_known(capsys):
    assert main(["cluster", "--gpus", "8", "--gpu", "a200"]) == 2
    assert "unknown GPU 'a200'; known: a100-40gb, a100-80gb" in capsys.readouterr().err


@pytest.mark.parametrize("text,expected", [
    ("[[nodes]]\ncount = 2\n", "nodes[0] is missing field 'preset'"),
    ("[[nodes]]\npreset = 'dgx-a100'\n", "nodes[0] is missing field 'count'"),
    ("[[nodes]]\npreset = 'dgx-z'\ncount = 1\n", "unknown node preset 'dgx-z'"),
    ("[[nodes]]\npreset = 'dgx-a100'\ncount = 1\ncolor = 'red'\n", "unknown field 'color'"),
    ("[fabric]\nnodes_per_leaf = 2\n", "missing field 'nodes'"),
    ("[[nodes]\n", "not valid TOML"),
])
def test_bad_cluster_file(tmp_path, capsys, text, expected):
    f = tmp_path / "c.toml"
    f.write_text(text)
    assert main(["cluster", "--gpus", str(f)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(f) in err and err.count("\n") == 1


def test_cluster_command_and_drawing(tmp_path, capsys):
    png = tmp_path / "c.png"
    assert main(["cluster", "--gpus", "8x2", "--draw", str(png)]) == 0
    out = capsys.readouterr().out
    assert "nvlink3" in out and "230.7" in out
    from PIL import Image
    with Image.open(png) as im:
        im.verify()
        assert im.format == "PNG"
    assert main(["cluster", "--gpus", "8x2", "--draw", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_detect_without_cuda_is_one_line(capsys):
    import torch
    if torch.cuda.is_available():
        assert main(["cluster", "--detect"]) == 0
    else:
        assert main(["cluster", "--detect"]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_a_calibrated_gpu_keeps_the_fitted_collective_interference():
    """`plan calibrate` cannot measure it; a GPU file takes its base node's GPU value (nonzero, fitted to
    published runs), a CPU file 0 (gloo takes no compute units)."""
    from planner.calibration.fit import _interference_line
    from planner.cluster.hardware import device, node_preset
    base = node_preset("dgx-h100")
    assert device(base.gpu).comm_interference > 0
    assert _interference_line("bfloat16", base).startswith(f"comm_interference = {device(base.gpu).comm_interference:.6g} ")
    assert _interference_line("float32", node_preset("cpu-host")).startswith("comm_interference = 0.0 ")


@settings(max_examples=40, deadline=None)
@given(nodes=st.sampled_from([1, 2, 3, 6, 40]), split=st.data())
def test_contending_groups_and_loads_as_defined(nodes, split):
    """The array form of "the groups sharing a node with the first" keeps the same groups in the same
    order as the list form, and the edges' loads summed by `np.bincount` are those of a loop over the
    flows (the definition), for every axis of a random (pp, dp, tp) mesh on a rail-optimised cluster
    that spans leaves (32 nodes a leaf)."""
    from collections import defaultdict
    from planner.cluster.collectives import _contending, _loads, _ring_flows, contending_rows
    cluster = build_cluster("c", [node_preset("dgx-a100")] * nodes)
    world = cluster.num_gpus
    tp = split.draw(st.sampled_from([d for d in (1, 2, 4, 8) if world % d == 0]))
    pp = split.draw(st.sampled_from([d for d in (1, 2, 3, 4, 5) if (world // tp) % d == 0]))
    mesh = place(cluster, {"tp": tp, "pp": pp, "dp": world // tp // pp})
    for axis in mesh.axes:
        rows = contending_rows(cluster, mesh.group_array(axis))
        assert rows == [list(g) for g in _contending(cluster, mesh.groups(axis))]
        flows = [f for g in rows for f in _ring_flows(cluster, g)]
        load, worst = defaultdict(float), 0.0
        for a, b, share in flows:
            worst = max(worst, sum(cluster.links[e][1] for e in cluster.route(a, b)))
            for e in cluster.route(a, b):
                load[e] += share * 3.0
        busiest = max((v / cluster.links[e][0] for e, v in load.items()), default=0.0)
        assert _loads(cluster, flows, 3.0) == (busiest, worst)
