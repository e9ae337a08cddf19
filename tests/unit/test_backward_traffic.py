"""The backward's memory-bound bytes, measured from the block's own backward ops (not assumed twice the
forward's), and RMSNorm profiled as the GPU build runs it (one fused kernel, not the CPU composite).
Every expected number is worked out by hand from the kernels' reads and writes."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from planner.profiling.blocks import block_run
from planner.program.runtime.cuda_ops import FusedOnCuda
from planner.profiling.recorder import fakeify
from planner.cost.layer import ELEMENTWISE_BWD_FACTOR, layer_costs
from planner.types.profile import LayerProfile, ModelProfile

N = 4 * 64 * 64  # elements of the score-like tensor below


class SoftmaxDropout(nn.Module):
    def forward(self, x):
        return F.dropout(x.softmax(-1), 0.1, self.training)


def _run(module: nn.Module, shape, dtype=torch.bfloat16):
    mode = FakeTensorMode()
    fakeify(module, mode, dtype)
    with mode:
        x = torch.empty(shape, dtype=dtype, requires_grad=True)
    return block_run(module, (x,), {}, mode, {}, backward=True)


def test_softmax_and_dropout_backward_bytes_by_hand():
    """bf16, n elements, dropout as a GPU runs it (`native_dropout`). Forward: softmax reads 2n and
    writes 2n; dropout reads 2n, writes 2n and a 1-byte mask: 9n. Backward: dropout's gradient reads 2n
    + the mask n and writes 2n (5n); softmax's reads the gradient and its output (4n) and writes 2n
    (6n): 11n, not the 18n of twice the forward. The CPU build's dropout (a bf16 mask filled by
    bernoulli_, scaled in place, then a multiply) would be 14n forward."""
    with FusedOnCuda():
        run = _run(SoftmaxDropout(), (4, 64, 64))
    assert run.record.mem_bytes == 9 * N
    assert run.backward.mem_bytes == 11 * N
    assert {t.dtype for t in run.record.saved.values()} == {torch.bool, torch.bfloat16}
    assert _run(SoftmaxDropout(), (4, 64, 64)).record.mem_bytes == 14 * N


def test_cost_uses_the_measured_backward_bytes_and_the_factor_only_where_unmeasured():
    """A block with 1 GB forward and 0.5 GB backward memory-bound bytes on a 1 TB/s device: forward
    1 ms, backward 0.5 ms; with the backward unmeasured (None), ELEMENTWISE_BWD_FACTOR x 1 ms."""
    from planner.cluster.hardware import Device
    dev = Device(name="t", description="", memory_bytes=1 << 34, hbm_bandwidth=1e12, hbm_efficiency=1.0,
                 peak_flops={"bf16": 1e15}, matmul_max_efficiency=1.0, matmul_half_dim=0.0, default_node="")
    block = LayerProfile(name="blocks.0", kind="block", modules=("blocks.0",), params=0, param_bytes=0, fwd_flops=0,
                         bwd_flops=0, gemms=(), attention=(), fwd_mem_bytes=10**9, bwd_mem_bytes=5 * 10**8,
                         saved={m: () for m in ("none", "selective", "full")}, output_bytes=0, signature="b")
    prof = ModelProfile(ref="hand.py:model", model_name="Hand", file_sha256="", micro_batch=1, seq_len=1,
                        dtype="bfloat16", params=0, layers=(block,), blocks_path="blocks", tp_plan={}, tp_degrees=(1,))
    measured = layer_costs(prof, dev, 1, False, 1, lambda op, b: 0.0)[0]
    assert measured.fwd == pytest.approx(1e-3) and measured.bwd == pytest.approx(0.5e-3)
    unmeasured = dataclasses.replace(prof, layers=(dataclasses.replace(block, bwd_mem_bytes=None),))
    assert layer_costs(unmeasured, dev, 1, False, 1, lambda op, b: 0.0)[0].bwd == pytest.approx(ELEMENTWISE_BWD_FACTOR * 1e-3)


def test_fused_rms_norm_matches_torch_values_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    ref = F.rms_norm(x, [16], w, 1e-5)
    gx, gw = torch.autograd.grad(ref.pow(3).sum(), [x, w])
    with FusedOnCuda():
        y = nn.functional.rms_norm(x, [16], w, 1e-5)
        hx, hw = torch.autograd.grad(y.pow(3).sum(), [x, w])
    assert "fused_rms_norm" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(hx, gx)
    torch.testing.assert_close(hw, gw)


def test_rms_norm_is_one_kernel_saving_input_and_rstd():
    """bf16 (t tokens, h = 64): the CUDA kernel reads x (2th) and w (2h), writes y (2th) and rstd (4t);
    autograd keeps x and rstd (derivatives.yaml: `_fused_rms_norm_backward(grad, input, rstd, weight)`).
    Its backward reads grad, x, rstd, w and writes dx and dw. The CPU composite would keep two fp32
    copies of x as well (8th bytes)."""
    t, h = 4 * 32, 64
    norm = nn.RMSNorm(h, eps=1e-5)
    with FusedOnCuda():
        run = _run(norm, (4, 32, h))
    assert run.record.mem_bytes == 2 * t * h + 2 * h + 2 * t * h + 4 * t
    assert sorted(s.numel() * s.element_size() for s in run.record.saved.values()) == [4 * t, 2 * t * h]
    assert run.backward.mem_bytes == (2 * t * h + 2 * t * h + 4 * t + 2 * h) + (2 * t * h + 2 * h)
    plain = _run(nn.RMSNorm(h, eps=1e-5), (4, 32, h))  # the composite: several ops, fp32 copies kept
    assert plain.record.ops > 1 and sum(s.numel() * s.element_size() for s in plain.record.saved.values()) >= 8 * t * h


def test_rms_norm_keeps_the_composite_where_torch_does():
    """torch's rms_norm falls back to the composite when the weight's dtype differs from the input's;
    dropout outside training or with p = 0 stays as written."""
    x = torch.randn(2, 8, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64)
    with FusedOnCuda(), pytest.warns(UserWarning, match="Mismatch dtype"):
        y = F.rms_norm(x, [8], w, 1e-5)
    assert "fused_rms_norm" not in type(y.grad_fn).__name__
    with FusedOnCuda():
        assert F.dropout(x, 0.1, training=False) is x
        assert "NativeDropout" not in type(F.dropout(x, 0.0, training=True).grad_fn).__name__
