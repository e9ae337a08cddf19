"""The Megatron-LM paper's 1T GPT on 384 DGX A100 nodes: with TP across nodes allowed, the plan keeps
TP inside a node because the cost model says so, and beats (or equals) the paper's tp8-pp64-dp6, which
is itself feasible and priced by the same model; the output shows both and what separates them."""
import pytest

from conftest import example
from planner import plan
from planner.report.plan import print_plan


@pytest.mark.slow
def test_gpt_1t_on_3072_a100(capsys):
    p = plan(example("gpt.py:gpt_1t"), "8x384", "a100-80gb", global_batch=3072, tp_across_nodes=True,
             compare="tp8-pp64-dp6", time_limit=60)
    assert p.strategy.tp <= 8  # inside a node
    fixed = p.comparison.estimate
    assert fixed is not None and fixed.feasible
    assert p.estimate.tokens_per_s >= fixed.tokens_per_s
    print_plan(p)
    out = capsys.readouterr().out
    assert "tp8-pp64-dp6" in out and p.strategy.label() in out and "compared" in out


@pytest.mark.slow
def test_megatron_1t_layout_prices_near_what_megatron_measured():
    """SC'21 Table 1 measured 163 TFLOP/s per GPU (hardware FLOPs by Megatron's formula, full recompute)
    for tp8-pp64-dp6, micro-batch 1, 1F1B, no sequence parallel; the cost model's step time for that exact
    layout, counted the same way, is within 10% of it."""
    import planner
    from planner.cost.model import CostModel
    from planner.search.pricing import evaluate_fixed
    from planner.types.strategy import Strategy
    prof = planner.profile(example("gpt.py:gpt_1t"), micro_batch=1)
    cm = CostModel(prof, planner.clusters("8x384", "a100-80gb")[0])
    s = Strategy(dp=6, tp=8, pp=64, micro_batch_size=1, num_micro_batches=512, schedule="1f1b", zero=0,
                 sequence_parallel=False, recompute=("full",) * 64)
    e = evaluate_fixed(cm, s, 3072, recompute="full").estimate
    assert e is not None and e.feasible
    b, seq, l, h, v = 3072, 2048, 128, 25600, 51200
    megatron = 96 * b * seq * l * h * h * (1 + seq / (6 * h) + v / (16 * l * h))
    tflops = megatron / e.step_time_s / 3072 / 1e12
    print(f"tp8-pp64-dp6: {tflops:.1f} TFLOP/s per GPU (Megatron measured 163)")
    assert tflops == pytest.approx(163, rel=0.10), tflops


@pytest.mark.slow
def test_zero3_throughput_falls_with_the_per_gpu_batch_as_measured():
    """SC'21 Table 2 measured GPT-3 175B with ZeRO-3 (DeepSpeed, global batch 1536, no TP or PP) at 144,
    88 and 44 TFLOP/s per GPU on 384, 768 and 1,536 A100s (micro-batch 4, 2, 1): the same gathers and
    reduce-scatters per step spread over less compute per GPU. The cost model must show that fall,
    not price 1,536-way sharding as free: each halving of the per-GPU batch loses throughput, a quarter
    of it over the range, while the exposed data-parallel share of the step grows to at least a quarter
    at 1,536 GPUs; every layout fits. The model predicts 217, 194, 156 (2026-12-01): a fall of 28%
    where DeepSpeed's measured 69%. FSDP2 prefetches the next layer's gather and shards per parameter
    (DeepSpeed's 2021 ZeRO-3 fetched parameters on demand in hooks), so it is expected to hold more of
    its throughput; the direction and the growing communication share are the claim, not the figures."""
    import planner
    from planner.cost.model import CostModel
    from planner.types.strategy import Strategy
    prof = planner.profile(example("gpt.py:gpt3_175b"), micro_batch=1)
    seen = []
    for gpus, mbs in ((384, 4), (768, 2), (1536, 1)):
        cm = CostModel(prof, planner.clusters(f"8x{gpus // 8}", "a100-80gb")[0])
        s = Strategy(dp=gpus, tp=1, pp=1, dp_shard=gpus, zero=3, micro_batch_size=mbs, num_micro_batches=1,
                     recompute=("full",))
        e = cm.estimate(s, 1536)
        assert e.feasible, gpus
        seen.append((e.hardware_tflops_per_gpu, e.breakdown["dp_comm"] / e.step_time_s))
    print("hardware TFLOP/s per GPU at 384/768/1536 (measured 144/88/44):", [round(t) for t, _ in seen])
    assert seen[0][0] > seen[1][0] > seen[2][0] and seen[2][0] < 0.75 * seen[0][0], seen
    assert seen[0][1] < seen[1][1] < seen[2][1] and seen[2][1] >= 0.25, seen
