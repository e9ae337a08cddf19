"""Invariants of the cost model and the search, checked on random strategies (hypothesis)."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import planner
from planner.cluster.graph import parse_gpus
from planner.cost.model import CostModel
from planner.cost.schedule import check as check_schedule
from planner.search.search import search
from planner.search.space import Constraints
from planner.types.strategy import Strategy

from conftest import example

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def profile_13b():
    return planner.profile(example("gpt.py:gpt3_1_3b"), micro_batch=1, dtype="bfloat16")


@pytest.fixture(scope="module")
def models(profile_13b):
    """The same 16 GPUs with 40 GB and with 80 GB each (same peak FLOP/s)."""
    return {gb: CostModel(profile_13b, parse_gpus("8x2", f"a100-{gb}gb")[0], dtype="bfloat16") for gb in (40, 80)}


@st.composite
def strategies(draw, world: int = 16, blocks: int = 24, tp_degrees=(1, 2, 4, 8, 16)):
    tp = draw(st.sampled_from([t for t in tp_degrees if world % t == 0]))
    pp = draw(st.sampled_from([p for p in (1, 2, 4, 8) if world % (tp * p) == 0 and p <= blocks]))
    dp = world // (tp * pp)
    schedule = "1f1b" if pp == 1 else draw(st.sampled_from(["gpipe", "1f1b", "interleaved"]))
    vpp = draw(st.sampled_from([2, 3])) if schedule == "interleaved" else 1
    n = draw(st.sampled_from([1, 2, 4, 8, 16]))
    assume(not check_schedule(schedule, pp, vpp, n) and pp * vpp <= blocks)
    zero = draw(st.sampled_from([0, 2, 3])) if dp > 1 else 0
    recompute = tuple(draw(st.sampled_from(["none", "selective", "full"])) for _ in range(pp * vpp))
    return Strategy(dp=dp, tp=tp, pp=pp, vpp=vpp, dp_shard=dp if zero else 1,
                    micro_batch_size=draw(st.sampled_from([1, 2, 4])), num_micro_batches=n, schedule=schedule,
                    zero=zero, sequence_parallel=tp > 1 and draw(st.booleans()), recompute=recompute)


def _batch(s: Strategy) -> int:
    return s.dp * s.micro_batch_size * s.num_micro_batches


@SETTINGS
@given(s=strategies())
def test_never_faster_than_peak_and_utilisation_at_most_one(models, profile_13b, s):
    cm = models[80]
    e = cm.estimate(s, _batch(s))
    flops = (profile_13b.fwd_flops + profile_13b.bwd_flops) * _batch(s) / profile_13b.micro_batch
    assert e.step_time_s >= flops / (cm.world * cm.device.peak("bfloat16")) * (1 - 1e-9)
    assert 0 < e.mfu <= 1 and 0 < e.hfu <= 1 and e.mfu <= e.hfu * (1 + 1e-9)
    # MFU counts the model's FLOPs once per sample, whatever the layout (tensor parallel replicates the
    # embedding, LM head and norms on every rank: that work is not model FLOPs a second time)
    peak = cm.device.peak("bfloat16")
    assert e.mfu * e.step_time_s * cm.world * peak == pytest.approx(flops, rel=1e-9)


@SETTINGS
@given(s=strategies())
def test_more_memory_never_makes_a_plan_infeasible(models, s):
    small, large = (models[gb].estimate(s, _batch(s)) for gb in (40, 80))
    assert max(small.memory_bytes_per_pp_rank) == max(large.memory_bytes_per_pp_rank)
    if small.feasible:
        assert large.feasible


@SETTINGS
@given(s=strategies())
def test_doubling_the_batch_never_shortens_the_step(models, s):
    double = dataclasses.replace(s, num_micro_batches=2 * s.num_micro_batches)
    assume(not check_schedule(double.schedule, double.pp, double.vpp, double.num_micro_batches))
    cm = models[80]
    assert cm.estimate(double, _batch(double)).step_time_s >= cm.estimate(s, _batch(s)).step_time_s * (1 - 1e-9)


@pytest.fixture(scope="module")
def tiny_search():
    prof = planner.profile(example("gpt.py:tiny"), micro_batch=1, dtype="float32")
    cm = CostModel(prof, parse_gpus("4x2", "cpu")[0], dtype="float32")
    return cm, search(cm, Constraints(global_batch=16, max_vpp=2, max_micro_batch=4))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tp=st.sampled_from([1, 2, 4]), pp=st.sampled_from([1, 2, 4]), zero=st.sampled_from([None, 0, 3]),
       schedule=st.sampled_from([None, "gpipe", "1f1b"]))
def test_search_is_never_worse_than_a_strategy_it_was_given(tiny_search, tp, pp, zero, schedule):
    cm, free = tiny_search
    fixed = search(cm, Constraints(global_batch=16, tp=tp, pp=pp, zero=zero, schedule=schedule if pp > 1 else None,
                                   max_vpp=2, max_micro_batch=4))
    assume(fixed.best is not None)
    assert free.best.estimate.step_time_s <= fixed.best.estimate.step_time_s * (1 + 1e-9)
