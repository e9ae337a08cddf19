"""The cost model against steps measured on a real GPU, and the calibration's GPU profile.

Measured 2026-12-04 on one lent NVIDIA H200 (torch 2.11.0+cu130) by `python benchmarks/fidelity_gpu.py`:
GPT-3 1.3B (examples/gpt.py:gpt3_1_3b, bf16, sequence 2048), global batch 16 on one GPU, the emitted
program's median step over steps 3-8 and its `torch.cuda.max_memory_allocated`. The same run measured
`profiles/measured/h200.toml`, which the `h200` profile reads."""
from __future__ import annotations

import dataclasses
import tomllib

import pytest

import planner
from planner.calibration.fit import profile_toml
from planner.cluster.hardware import device
from planner.cost.layer import _attention_times, causal_work
from conftest import example

# layout knobs -> (measured seconds per step, measured peak bytes); the program with fused AdamW
# (before it, with torch's multi-tensor AdamW: 0.6694, 0.6897 and 0.7774 s)
MEASURED = {("mb4", 4, "none"): (0.6452, 45_033_664_000),
            ("mb8", 8, "selective"): (0.6431, 53_398_220_288),
            ("mb8", 8, "full"): (0.7314, 37_267_951_104)}


@pytest.fixture(scope="module")
def plans():
    return {key: planner.plan(example("gpt.py:gpt3_1_3b"), "1", "h200", global_batch=16, tp=1, pp=1, dp=1,
                              zero=0, micro_batch=mb, recompute=rc)
            for key in MEASURED for _, mb, rc in [key]}


@pytest.mark.parametrize("key", list(MEASURED))
def test_h200_step_time_and_memory_agree_with_the_measured_steps(plans, key):
    """Within 15% in time (measured 1.00-1.11x the prediction) and 5% in memory (0.99-1.03x). Before the
    calibration was fixed, a calibrated profile of the same GPU predicted 8-9x too slow."""
    seconds, peak = MEASURED[key]
    est = plans[key].estimate
    assert abs(seconds / est.step_time_s - 1) < 0.15, (seconds, est.step_time_s)
    assert abs(peak / max(est.memory_bytes_per_pp_rank) - 1) < 0.05, (peak, est.memory_bytes_per_pp_rank)


@pytest.mark.xfail(strict=True, reason="full recompute is priced at a whole forward of the blocks (0.151 s "
                   "a step over selective); the H200 measured 0.088 s (0.088 s again after fused AdamW) (a probe of the same model measured "
                   "0.067 s per 8-sample micro-batch against the 0.082 s predicted): not explained yet")
def test_recompute_costs_what_was_measured(plans):
    """Full recompute's extra time over selective: measured 0.088 s a step."""
    extra = plans[("mb8", 8, "full")].estimate.step_time_s - plans[("mb8", 8, "selective")].estimate.step_time_s
    assert 0.06 < extra < 0.12, extra


def test_the_h200_profile_reads_its_measured_attention():
    h200 = device("h200")
    assert len(h200.measured) == 64 and len(h200.attention) == 8
    prof = planner.profile(example("gpt.py:gpt3_1_3b"), micro_batch=1, dtype="bfloat16")
    block = prof.blocks[0]
    (a,) = block.attention
    row = min(h200.attention, key=lambda r: abs(r[0] - a.q_len) + abs(r[2] - a.head_dim))
    fwd, _ = _attention_times(h200, block, 4, 1)
    assert fwd == pytest.approx(4 * a.flops * causal_work(a.q_len, a.kv_len) / row[4])
    bare = _attention_times(dataclasses.replace(h200, attention=()), block, 4, 1)[0]
    assert bare != pytest.approx(fwd)  # without rows: the GEMM curve


RAW = {"device": "NVIDIA H200", "ranks": 1, "threads_per_rank": 16, "torch": "2.11.0", "backend": "nccl",
       "memory_bytes": 150_109_880_320, "memory_bandwidth": 4.2e12, "op_overhead": 1.36e-5, "tp_op_overhead": 0.0,
       "gemm": [[4096, 4096, 4096, "bfloat16", 6.4e14], [256, 256, 256, "bfloat16", 3e13]],
       "attention": [[2048, 2048, 128, "bfloat16", 4.57e14]], "collectives": {}}


def test_a_gpu_calibration_writes_no_host_overhead_and_its_attention(tmp_path):
    """A GPU's launches hide behind its kernels: the measured host seconds per operator (13.6 us on the
    H200, which would have added 0.58 s to a 0.67 s step) stay a comment. A CPU keeps its own."""
    out = tmp_path / "gpu.toml"
    out.write_text(profile_toml(RAW, base_node="dgx-h100", command="plan calibrate --ranks 1"))
    data = tomllib.loads(out.read_text())
    assert data["op_overhead"] == 0 and "1.36e-05" in out.read_text()
    gpu = device(str(out))
    assert gpu.op_overhead == 0 and gpu.attention == ((2048, 2048, 128, "bfloat16", 4.57e14),)
    assert gpu.attention_rate(4096, 4096, 128, "bfloat16") == 4.57e14
    cpu = dict(RAW, device="cpu", gemm=[[64, 64, 64, "float32", 1e10]], attention=[], backend="gloo")
    text = profile_toml(cpu, base_node="cpu-host", command="plan calibrate --ranks 1")
    assert tomllib.loads(text)["op_overhead"] == pytest.approx(1.36e-5)
