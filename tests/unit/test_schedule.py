"""Pipeline orders equal what torch's schedule classes run; the simulation and in-flight counts."""
import pytest
from torch.distributed.pipelining.schedules import ScheduleInterleaved1F1B

from planner.cost.schedule import check, in_flight, rank_orders, simulate


def _torch_interleaved(pp, vpp, n, rank):
    """torch's private order (pinned here: the cost model re-implements it)."""
    o = ScheduleInterleaved1F1B.__new__(ScheduleInterleaved1F1B)
    o.pp_group_size, o.n_local_stages, o._n_microbatches = pp, vpp, n
    o.number_of_rounds = max(1, n // pp)
    o.microbatches_per_round = n // o.number_of_rounds
    ops = o._calculate_single_rank_operations(rank)
    return [(a.stage_index, "F" if a.computation_type.value == "F" else "B", a.microbatch_index)
            for a in ops if a is not None]


@pytest.mark.parametrize("pp,vpp,n", [(2, 2, 4), (4, 2, 8), (4, 3, 4), (4, 2, 12), (2, 4, 6), (8, 2, 3), (3, 2, 9)])
def test_interleaved_order_matches_torch(pp, vpp, n):
    mine = rank_orders("interleaved", pp, vpp, n)
    for r in range(pp):
        assert mine[r] == _torch_interleaved(pp, vpp, n, r)


def test_rejects_what_torch_rejects():
    assert check("interleaved", 4, 2, 6) == ""  # rounds = max(1, 6 // 4) = 1
    assert "multiple" in check("interleaved", 4, 2, 9)  # rounds 2, 9 % 2 != 0: torch raises
    with pytest.raises(ValueError, match="multiple of max"):
        rank_orders("interleaved", 4, 2, 9)
    assert "at least" in check("1f1b", 4, 1, 3)  # torch: n_microbatches >= num_stages
    assert check("gpipe", 2, 2, 4)  # one stage per rank


def test_1f1b_times_and_memory():
    orders = rank_orders("1f1b", 4, 1, 8)
    t = simulate(orders, [1.0] * 4, [2.0] * 4)
    assert t.makespan == pytest.approx((8 + 3) * 3)  # (n + pp - 1)(F + B)
    assert [in_flight(orders[r], 1, 4) for r in range(4)] == [[(4,)], [(3,)], [(2,)], [(1,)]]
    g = rank_orders("gpipe", 4, 1, 8)
    assert simulate(g, [1.0] * 4, [2.0] * 4).makespan == pytest.approx(33)
    assert in_flight(g[0], 1, 4) == [(8,)]


def test_interleaved_bubble_shrinks_with_chunks():
    w = 12.0
    one = simulate(rank_orders("1f1b", 4, 1, 8), [w / 3] * 4, [2 * w / 3] * 4).makespan
    two = simulate(rank_orders("interleaved", 4, 2, 8), [w / 6] * 8, [w / 3] * 8).makespan
    assert one == pytest.approx((8 + 3) * w)
    assert two == pytest.approx(8 * w + 3 * w / 2)  # torch's (n + (pp-1)/v) per-rank work


def test_sends_delay_the_pipeline():
    orders = rank_orders("1f1b", 2, 1, 2)
    base = simulate(orders, [1.0, 1.0], [2.0, 2.0]).makespan
    slow = simulate(orders, [1.0, 1.0], [2.0, 2.0], [0.5, 0.0], [0.0, 0.5]).makespan
    assert slow == pytest.approx(base + 1.0)


def test_in_flight_closed_forms_used_by_the_bounds():
    """bounds._room uses GPipe's n and 1F1B's min(n, pp - r) instead of walking the orders."""
    from planner.cost.schedule import in_flight, rank_orders
    for pp in (1, 2, 5):
        for n in (pp, pp + 3, 4 * pp):
            for sched, k in (("gpipe", lambda r: n), ("1f1b", lambda r: min(n, pp - r))):
                orders = rank_orders(sched, pp, 1, n)
                assert [max(sum(v) for v in in_flight(o, 1, pp)) for o in orders] == [k(r) for r in range(pp)]


def test_in_flight_keeps_exactly_the_maximal_vectors():
    """Against the definition: every vector seen right after a forward, less those another covers."""
    for pp, vpp, n in [(2, 2, 4), (4, 2, 8), (4, 3, 8), (3, 4, 6), (8, 2, 16)]:
        for order in rank_orders("interleaved", pp, vpp, n):
            held, seen = [0] * vpp, set()
            for c, kind, _ in order:
                held[c // pp] += 1 if kind == "F" else -1
                if kind == "F":
                    seen.add(tuple(held))
            maximal = {v for v in seen if not any(w != v and all(a <= b for a, b in zip(v, w)) for w in seen)}
            got = in_flight(order, vpp, pp)
            assert set(got) == maximal and len(got) == len(maximal)


def _by_definition(orders, fwd, bwd, send_fwd, send_bwd):
    """Each action's end from the definition, memoised recursion over what it waits on: its rank's
    previous action; F(c, m) on F(c-1, m) plus its send; B(c, m) on F(c, m) and on B(c+1, m) plus its
    send back."""
    last = len(fwd) - 1
    before = {b: a for order in orders for a, b in zip(order, order[1:])}
    memo = {}

    def end(a):
        if a not in memo:
            c, kind, m = a
            waits = [end(before[a])] if a in before else [0.0]
            if kind == "F" and c:
                waits.append(end((c - 1, "F", m)) + send_fwd[c - 1])
            if kind == "B":
                waits.append(end((c, "F", m)))
                if c < last:
                    waits.append(end((c + 1, "B", m)) + send_bwd[c + 1])
            memo[a] = max(waits) + (fwd[c] if kind == "F" else bwd[c])
        return memo[a]
    return [end(order[-1]) for order in orders], memo


@pytest.mark.parametrize("schedule,pp,vpp,n", [("gpipe", 3, 1, 4), ("1f1b", 4, 1, 6), ("1f1b", 1, 1, 3),
                                               ("interleaved", 2, 2, 4), ("interleaved", 4, 3, 8),
                                               ("interleaved", 3, 2, 9), ("interleaved", 4, 2, 6)])
def test_compiled_program_times_every_action_by_definition(schedule, pp, vpp, n):
    """`simulate` runs the compiled orders (`schedule.program`): every action's end, each rank's finish
    and busy time equal the definition's, with and without sends, at integer and fractional times."""
    import random
    from planner.cost.schedule import program
    rng = random.Random(pp * 100 + vpp * 10 + n)
    orders = rank_orders(schedule, pp, vpp, n)
    k = pp * vpp
    for trial in range(20):
        draw = (lambda: rng.randint(1, 40)) if trial % 2 else (lambda: rng.uniform(0.1, 4.0))
        fwd, bwd = [draw() for _ in range(k)], [draw() for _ in range(k)]
        sends = [draw() for _ in range(k - 1)] + [0] if trial % 3 else [0] * k
        finish, ends = _by_definition(orders, fwd, bwd, sends, [0] + sends[:-1])
        events = []
        t = simulate(program(schedule, pp, vpp, n), fwd, bwd, sends, [0] + sends[:-1], events)
        assert list(t.finish) == pytest.approx(finish, rel=1e-12) and t.makespan == pytest.approx(max(finish), rel=1e-12)
        assert {(c, kind, m): e for _, c, kind, m, _, e in events} == pytest.approx(ends, rel=1e-12)
        assert len(events) == sum(len(o) for o in orders)
        for r in range(pp):
            assert t.busy[r] == pytest.approx(sum(fwd[c] if kind == "F" else bwd[c] for c, kind, _ in orders[r]))
        assert simulate(orders, fwd, bwd, sends, [0] + sends[:-1]) == t  # plain orders compile the same


def test_an_order_that_waits_on_itself_is_refused():
    """Rank 0 runs B(0, 0) before the F(0, 0) it needs: no order of the actions can run it."""
    with pytest.raises(ValueError, match="deadlocks"):
        simulate([[(0, "B", 0), (0, "F", 0)]], [1.0], [2.0])
    with pytest.raises(ValueError, match="deadlocks"):  # across ranks: each waits on the other's second action
        simulate([[(0, "F", 0), (0, "B", 1), (0, "F", 1), (0, "B", 0)], [(1, "F", 1), (1, "F", 0), (1, "B", 0), (1, "B", 1)]],
                 [1.0, 1.0], [1.0, 1.0])
