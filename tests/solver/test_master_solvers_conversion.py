"""`benchmarks/master_solvers.py` compares CP-SAT with MIP solvers on the master's models converted by
`as_mip`: the conversion must keep every assignment's feasibility and the optimum, or the benchmark
compares different problems. Small random models with the master's kinds of rows (plain linear rows,
rows with holes in their domains, rows enforced by literals, bool_or no-goods), solved both ways."""
from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings, strategies as st
from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from master_solvers import as_mip  # noqa: E402

ROW = st.tuples(st.lists(st.integers(-4, 4), min_size=3, max_size=3), st.integers(-6, 6), st.integers(0, 6),
                st.sampled_from(["plain", "hole", "enforced", "negated"]))


def _model(rows, no_good: bool) -> tuple[cp_model.CpModel, list]:
    m = cp_model.CpModel()
    x = [m.new_int_var(-3, 5, f"x{i}") for i in range(3)]
    b = m.new_bool_var("b")
    for coeffs, lo, width, kind in rows:
        expr = sum(a * v for a, v in zip(coeffs, x))
        if kind == "plain":
            m.add_linear_constraint(expr, lo, lo + width)
        elif kind == "hole":  # expr outside (lo, lo + width)
            m.add_linear_expression_in_domain(expr, cp_model.Domain.from_intervals([[-100, lo], [lo + width + 1, 100]]))
        else:
            m.add_linear_constraint(expr, lo, lo + width).only_enforce_if(b if kind == "enforced" else b.Not())
    if no_good:
        flags = [m.new_bool_var("") for _ in x]
        for f, v in zip(flags, x):
            m.add(v != 1).only_enforce_if(f)
        m.add_bool_or(flags)
    m.minimize(sum((i + 2) * v for i, v in enumerate(x)) + 3 * b)
    return m, x


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(ROW, min_size=1, max_size=4), st.booleans())
def test_the_mip_conversion_keeps_the_optimum(rows, no_good):
    m, _ = _model(rows, no_good)
    sat = cp_model.CpSolver()
    sat.parameters.num_workers = 1
    status = sat.solve(m)
    mip = as_mip(m, "HIGHS")
    assert mip is not None
    mstatus = mip.Solve()
    if status == cp_model.INFEASIBLE:
        assert mstatus == pywraplp.Solver.INFEASIBLE
    else:
        assert status == cp_model.OPTIMAL and mstatus == pywraplp.Solver.OPTIMAL
        assert round(mip.Objective().Value()) == round(sat.objective_value)
