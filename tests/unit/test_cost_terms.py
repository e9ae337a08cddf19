"""Cost terms on hand-made cases, with the arithmetic written out here: vocabulary-parallel embedding and
LM head, the sequence-parallel stage boundary, the memory fraction, the loss's backward transient,
FSDP's buffers, the what-ifs, causal flash attention."""
import dataclasses
import json

import pytest
import torch.nn as nn

import planner
from planner.cluster.hardware import Device
from planner.cost.layer import layer_costs
from planner.cost.memory import local_numel
from planner.cost.model import RUNTIME_RESERVE, CostModel
from planner.load.structure import find_blocks, vocab_parallel
from planner.types.profile import Gemm, LayerProfile, ModelProfile, ParamTensor

S, H, V, T = 1024, 256, 4096, 4
PEAK = 1e12
DEV = Device(name="test", description="ideal GEMMs", memory_bytes=1 << 34, hbm_bandwidth=1e12, hbm_efficiency=1.0,
             peak_flops={"bf16": PEAK}, matmul_max_efficiency=1.0, matmul_half_dim=0.0, default_node="")
RATE = {"all_reduce": 2e-9, "all_gather": 1e-9, "reduce_scatter": 1e-9}
"""Fake collective seconds per byte, so each collective's bytes can be read back off its time."""


def _layer(name, kind, modules, gemms=(), out=0, tensors=()):
    flops = sum(g.flops for g in gemms)
    return LayerProfile(name=name, kind=kind, modules=modules, params=0, param_bytes=0, fwd_flops=flops,
                        bwd_flops=2 * flops, gemms=gemms, attention=(), fwd_mem_bytes=0,
                        saved={m: () for m in ("none", "selective", "full")}, output_bytes=out, tensors=tensors)


def profile(vocab: bool) -> ModelProfile:
    hidden = 2 * S * H  # bf16 hidden state of one sample
    head = Gemm(m=S, n=V, k=H, tp=vocab)
    layers = (_layer("prefix", "prefix", ("wte",), out=hidden,
                     tensors=(ParamTensor(name="wte.weight", shape=(V, H), tp_dim=0 if vocab else -1),)),
              _layer("blocks.0", "block", ("blocks.0",), gemms=(Gemm(m=S, n=H, k=H, tp=True),), out=hidden),
              _layer("suffix", "suffix", ("lm_head",), gemms=(head,)))
    plan = {"blocks.*.fc": "rowwise", **({"wte": "vocab_embedding", "lm_head": "vocab_head"} if vocab else {})}
    return ModelProfile(ref="hand.py:model", model_name="Hand", file_sha256="", micro_batch=1, seq_len=S,
                        dtype="bfloat16", params=0, layers=layers, blocks_path="blocks", tp_plan=plan,
                        tp_degrees=(1, 2, 4))


def costs(vocab: bool, tp: int, sp: bool = False):
    return layer_costs(profile(vocab), DEV, tp, sp, 1, lambda op, nbytes: RATE[op] * nbytes)


def test_vocab_parallel_head_and_embedding_terms():
    pre, _, head = costs(True, T)
    gemm = 2 * S * V * H / PEAK  # the whole head GEMM at peak
    assert head.fwd == pytest.approx(gemm / T)  # V/t output columns per rank
    assert head.bwd == pytest.approx(2 * gemm / T)  # dA and dB, each the forward's size
    assert head.tp_fwd == pytest.approx(1e-9 * S * V * 2)  # logits all-gathered along the vocabulary (bf16)
    assert head.tp_bwd == pytest.approx(2e-9 * S * H * 2)  # input gradient all-reduced (partial sums of V/t)
    assert head.model_flops == pytest.approx(3 * 2 * S * V * H / T)
    assert pre.tp_fwd == pytest.approx(2e-9 * 2 * S * H) and pre.tp_bwd == 0  # embedding's partial sums
    assert local_numel(profile(True).layers[0].tensors[0], T) == V * H // T


def test_loss_gradients_are_transient_memory_of_the_suffix():
    """The suffix's backward holds the log-softmax's gradient and the logits' gradient at once, each the
    size of the fp32 log-softmax it saved (S x V x 4 bytes per sample); blocks hold no such term."""
    from planner.types.profile import SavedTensor
    logsm = SavedTensor(nbytes=S * V * 4, shard="replicated", op="_log_softmax", shape=(S, V), dtype="float32")
    suffix = dataclasses.replace(profile(True).layers[2], saved={m: (logsm,) for m in ("none", "selective", "full")})
    prof = dataclasses.replace(profile(True), layers=profile(True).layers[:2] + (suffix,))
    for mbs in (1, 2):
        cost = layer_costs(prof, DEV, T, False, mbs, lambda op, nbytes: RATE[op] * nbytes)
        assert cost[2].transient("none") == 2 * mbs * S * V * 4
        assert cost[1].transient("none") == 2 * mbs * 2 * S * H  # a block: gradient in and out
        assert cost[1].loss_grad == 0


def test_fsdp_buffers_of_the_largest_layer():
    """One 1T GPT block (12 h^2 parameters, h = 25600) at tp2 in bf16: its unsharded bf16 gradients
    (7.9 GB), the fp32 reduce-scatter input (15.7 GB) and the previous layer's still in flight (15.7 GB);
    ZeRO 3 adds two gathered bf16 layers (15.7 GB)."""
    from planner.cost.model import fsdp_buffer
    big = 12 * 25600 ** 2 // 2
    assert fsdp_buffer(big, 2, False) == 2 * big + 4 * big + 4 * big
    assert fsdp_buffer(big, 2, True) - fsdp_buffer(big, 2, False) == 2 * 2 * big
    assert fsdp_buffer(big, 2, False) / 1e9 == pytest.approx(39.3, abs=0.1)


def test_replicated_edges_and_tp1_pay_nothing_extra():
    pre, _, head = costs(False, T)
    assert head.fwd == pytest.approx(2 * S * V * H / PEAK) and head.tp_fwd == head.tp_bwd == pre.tp_fwd == 0
    pre1, _, head1 = costs(True, 1)
    assert head1.fwd == pytest.approx(2 * S * V * H / PEAK) and head1.tp_fwd == pre1.tp_fwd == 0


def test_sequence_parallel_stage_boundary_sends_the_shard():
    """With SP a block's output is its sequence shard (the program gathers only after the last block)."""
    assert costs(True, T, sp=True)[1].out_bytes == 2 * S * H // T
    assert costs(True, T, sp=False)[1].out_bytes == 2 * S * H


def test_memory_fraction_is_taken_after_the_reserve():
    prof = profile(True)
    cluster = planner.clusters("8", "a100-80gb")[0]
    cap = 80 * 2**30
    assert CostModel(prof, cluster).usable == RUNTIME_RESERVE + int(0.9 * (cap - RUNTIME_RESERVE))
    assert CostModel(prof, cluster, memory_fraction=1.0).usable == cap


class _Gpt(nn.Module):
    def __init__(self, vocab: int, positions: int = 64, tie: bool = True):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, 32), nn.Embedding(positions, 32)
        self.blocks = nn.ModuleList(nn.Linear(32, 32) for _ in range(2))
        self.lm_head = nn.Linear(32, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight


@pytest.mark.parametrize("vocab, top, expected", [
    (256, 4, {"wte": "vocab_embedding", "lm_head": "vocab_head"}),  # positions (64 rows) stay whole
    (50257, 4, {}),  # GPT-2's vocabulary: no TP degree > 1 divides it
    (256, 1, {}),  # no tensor parallel at all
])
def test_vocab_detection(vocab, top, expected):
    m = _Gpt(vocab)
    assert vocab_parallel(m, find_blocks(m).path, top) == expected


@pytest.mark.parametrize("ref, gpus, batch, fraction", [("examples/gpt.py:gpt3_6_7b", "8", 64, 0.9),
                                                        ("examples/gpt.py:gpt3_6_7b", "8", 64, 0.6),
                                                        ("examples/llama.py:llama3_8b", "8", 32, 0.9)])
def test_chosen_plans_stay_within_the_memory_fraction(ref, gpus, batch, fraction):
    from conftest import example
    p = planner.plan(example(ref.removeprefix("examples/")), gpus, "a100-80gb", global_batch=batch, time_limit=5, memory_fraction=fraction)
    e = p.estimate
    assert e.memory_limit_bytes == RUNTIME_RESERVE + int(fraction * (e.memory_capacity_bytes - RUNTIME_RESERVE))
    assert max(e.memory_bytes_per_pp_rank) <= e.memory_limit_bytes
    for r in p.runner_ups:
        assert r.estimate is None or max(r.estimate.memory_bytes_per_pp_rank) <= e.memory_limit_bytes
    assert dataclasses.asdict(e)["memory_limit_bytes"] == e.memory_limit_bytes


def test_what_if_prices_scale_the_terms_they_name():
    """GEMMs 10% slower: the head's GEMM time x1.1 and nothing else; communication 30% slower: every
    collective (latency and bytes) x1.3, so a plan bound by exposed TP collectives moves by 1.3 there."""
    slow = layer_costs(profile(True), DEV.slowed(1.1), T, False, 1, lambda op, nbytes: RATE[op] * nbytes)
    assert slow[2].fwd == pytest.approx(1.1 * 2 * S * V * H / PEAK / T)
    assert slow[2].tp_fwd == pytest.approx(costs(True, T)[2].tp_fwd)
    from conftest import example
    from planner.types.strategy import Strategy
    prof = planner.profile(example("gpt.py:tiny"), micro_batch=1, dtype="float32")
    cluster = planner.clusters("2", "cpu")[0]
    s = Strategy(dp=1, tp=2, pp=1, micro_batch_size=4, num_micro_batches=2, recompute=("none",))
    base = CostModel(prof, cluster).estimate(s, 8).breakdown
    slowed = CostModel(prof, cluster, comm_slowdown=1.3).estimate(s, 8).breakdown
    assert base["tp_comm"] > 0 and slowed["tp_comm"] == pytest.approx(1.3 * base["tp_comm"])
    assert slowed["compute"] == pytest.approx(base["compute"])


def test_plan_reports_what_ifs_and_keeps_them_in_plan_json():
    from conftest import example
    p = planner.plan(example("gpt.py:tiny"), "8", "cpu", global_batch=16, pp=2, tp=2)
    cases = [w.case for w in p.what_if]
    assert cases == ["communication 30% slower", "GEMMs 10% slower"]
    assert all(w.step_time_s > p.estimate.step_time_s for w in p.what_if)
    assert p.what_if[0].runner_up == p.runner_ups[0].strategy.label()
    again = planner.Plan.from_json(p.to_json())
    assert again.what_if == p.what_if
    assert [w["winner_changes"] for w in json.loads(p.to_json())["what_if"]] == [w.winner_changes for w in p.what_if]


def test_causal_flash_attention_does_the_lower_triangle_of_tiles():
    """8K tokens in 128-row tiles: 64 tiles per side, the 64 on the diagonal whole and the 2016 below it,
    2080 of 4096 tiles (0.508 of the square); one tile (32 tokens) is computed whole."""
    from planner.cost.layer import _attention_times, causal_work
    from planner.types.profile import Attention
    assert causal_work(8192, 8192) == pytest.approx(2080 / 4096)
    assert causal_work(32, 32) == 1.0
    for causal in (False, True):
        a = Attention(batch=1, heads=32, q_len=8192, kv_len=8192, head_dim=128, causal=causal)
        layer = dataclasses.replace(profile(True).layers[1], attention=(a,))
        fwd, bwd = _attention_times(DEV, layer, 1.0, 1)
        assert fwd == pytest.approx(a.flops * (2080 / 4096 if causal else 1) / PEAK)  # ideal device: eff 1
        assert bwd == pytest.approx(2.5 * fwd)


def test_profiler_records_causal_attention():
    from conftest import example
    prof = planner.profile(example("llama.py:tiny"), micro_batch=1, dtype="float32")
    assert all(a.causal for a in prof.blocks[0].attention) and prof.blocks[0].attention


def _fsdp_strategy():
    from planner.types.strategy import Strategy
    return Strategy(dp=8, tp=1, pp=1, dp_shard=8, zero=3, recompute=("none",))


def test_overlapped_data_parallel_communication_costs_its_interference_share():
    """DDP's all-reduce beside the backward, FSDP's reduce-scatters and gathers (ZeRO 3: the first
    forward's and one per micro-batch's backward) cost the device's `comm_interference` share of their
    seconds in compute (here g = 1/6); DDP under TP (all-reduce after the backward, already all
    exposed) and dp = 1 nothing."""
    from planner.cost.terms import DpModel, dp_compute
    g = 1 / 6
    assert dp_compute(DpModel("ddp", 4, interference=g), 6.0, 0.0) == pytest.approx(1.0)
    assert dp_compute(DpModel("fsdp", 4, interference=g), 3.0, 1.5) == pytest.approx((3.0 + 1.5) / 6)
    assert dp_compute(DpModel("fsdp", 4, zero3=True, interference=g), 3.0, 1.5) == pytest.approx((3.0 + 5 * 1.5) / 6)
    assert dp_compute(DpModel("ddp_tp", 4, interference=g), 6.0, 0.0) == 0
    # the cost model takes it from the device file: fitted for GPUs, 0 for CPUs (gloo takes no SMs)
    s = dataclasses.replace(_fsdp_strategy(), dp=8, dp_shard=8)
    a100 = planner.clusters("8", "a100-80gb")[0]
    assert CostModel(profile(True), a100).dp_model(s).interference == a100.device_of(0).comm_interference > 0
    assert CostModel(profile(True), planner.clusters("8", "cpu")[0]).dp_model(s).interference == 0


def test_fsdp2_copies_around_each_collective():
    """The hand profile's embedding (V x H) under FSDP over 8 ranks, bf16:
    P unsharded elements, P/8 local. After each all-gather FSDP2 splits the flat buffer into the
    parameters (read + write 2P bytes each) after copying its shard in (2 x 2P/8); before the
    reduce-scatter it concatenates the bf16 gradients into an fp32 input (read 2P, write 4P) and moves
    the fp32 shard after it (8P/8). ZeRO 3 with 4 micro-batches gathers 1 + 4 times."""
    from planner.cost.terms import DpModel, dp_compute
    a100 = planner.clusters("8", "a100-80gb")[0]
    cm = CostModel(profile(False), a100)
    s = dataclasses.replace(_fsdp_strategy(), num_micro_batches=4)
    wte = cm.terms(s)[0]
    P = V * H
    bw = cm.device.hbm_bandwidth * cm.device.hbm_efficiency
    assert wte.gather_copy == pytest.approx((2 * 2 * P + 2 * 2 * P / 8) / bw)
    assert wte.sync_copy == pytest.approx((2 * P + 4 * P + 8 * P / 8) / bw)
    m = DpModel("fsdp", 4, zero3=True, interference=0.0)
    assert dp_compute(m, 0.0, 0.0, wte.sync_copy, wte.gather_copy) == pytest.approx(wte.sync_copy + 5 * wte.gather_copy)
    assert cm.terms(dataclasses.replace(s, dp_shard=1, zero=0))[0].gather_copy == 0  # DDP copies nothing
