"""The free search against every fully fixed layout a person could type: for three real models on A100
clusters (global batch 512), no feasible layout on a grid of tp, pp, micro-batch, schedule, sharding and
recompute, priced by the same cost model with its stage bounds solved, has a shorter step than the plan."""
import itertools

import pytest

import planner
from conftest import example
from planner.cost.model import CostModel
from planner.search.pricing import evaluate_fixed
from planner.types.strategy import Strategy, check_schedule

CASES = [("gpt.py:gpt3_13b", "8x4"), ("llama.py:llama3_70b", "8x16"), ("gpt.py:gpt3_175b", "8x16")]
BATCH = 512


def grid(prof, world: int):
    """tp x pp in {1, 2, 4, 8}, micro-batch 1/2/4, 1F1B or GPipe, ZeRO 0/2/3, one recompute for all blocks."""
    for tp, pp, mbs, sched, zero, rc in itertools.product((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4), ("1f1b", "gpipe"),
                                                         (0, 2, 3), ("none", "selective", "full")):
        dp = world // (tp * pp)
        if world % (tp * pp) or tp not in prof.tp_degrees or BATCH % (dp * mbs) or (zero and dp == 1):
            continue
        n = BATCH // (dp * mbs)
        if check_schedule(sched, pp, 1, n) or (pp == 1 and sched == "gpipe"):
            continue
        yield Strategy(dp=dp, tp=tp, pp=pp, dp_shard=dp if zero else 1, micro_batch_size=mbs, num_micro_batches=n,
                       schedule=sched, zero=zero, sequence_parallel=tp > 1, recompute=(rc,) * pp)


@pytest.mark.slow
@pytest.mark.parametrize("ref, gpus", CASES)
def test_no_fixed_layout_beats_the_free_search(ref, gpus):
    # 30 s: the same plans as at the default 60 s for all three (2026-12-02), in half the test's time
    p = planner.plan(example(ref), gpus, "a100-80gb", global_batch=BATCH, time_limit=30)
    cm = CostModel(planner.profile(example(ref), micro_batch=1), planner.clusters(gpus, "a100-80gb")[0])
    feasible, beaten_by = 0, []
    for s in grid(cm.profile, cm.world):
        c = evaluate_fixed(cm, s, BATCH, recompute=s.recompute[0], limit=20)
        if c.estimate is None or not c.estimate.feasible:
            continue
        feasible += 1
        if c.estimate.step_time_s < p.estimate.step_time_s * (1 - 1e-9):
            beaten_by.append((c.strategy.label(), c.estimate.step_time_s))
    assert feasible >= 20, feasible
    assert not beaten_by, (p.strategy.label(), p.estimate.step_time_s, beaten_by)
