"""fvcore (multiply-add = 1 FLOP, forward only) as an independent check of the profiler's GEMM FLOPs.

fvcore traces with torch.jit on meta tensors passed in from outside; it counts linear/matmul/conv and
skips attention kernels, so the comparison is on the profiler's matmul and convolution FLOPs. The large
shapes are cut to two blocks to stay fast.
"""
from __future__ import annotations

import logging

import pytest
from fvcore.nn import FlopCountAnalysis

from planner import load, profile
from planner.load.model_file import build_meta, sample_batch
from conftest import EXAMPLES

TWO_BLOCKS = {
    "gpt3_175b": "import sys; sys.path.insert(0, {ex!r})\nfrom gpt import GPT, GPTConfig, batch\n"
                 "def model(): return GPT(GPTConfig(n_layer=2, n_embd=12288, n_head=96))\n",
    "llama3_70b": "import sys; sys.path.insert(0, {ex!r})\nfrom llama import Llama, LlamaConfig, batch\n"
                  "def model(): return Llama(LlamaConfig(n_layers=2, dim=8192, n_heads=64, n_kv_heads=8, "
                  "ffn_dim=28672, seq_len=2048))\n",
    "resnet": "import sys; sys.path.insert(0, {ex!r})\nfrom resnet import ResNet, batch\n"
              "def model(): return ResNet(depth=2)\n",
}


@pytest.mark.parametrize("name", TWO_BLOCKS)
def test_fvcore_agrees_on_forward_gemm_flops(tmp_path, name):
    f = tmp_path / f"{name}.py"
    f.write_text(TWO_BLOCKS[name].format(ex=str(EXAMPLES)))
    source = load(str(f))
    p = profile(source, micro_batch=1, dtype="float32")
    ours = sum(g.flops for layer in p.layers for g in layer.gemms)
    # BatchNorm's checks do not trace on meta tensors; the small CNN is traced on real CPU tensors
    model = source.build() if name == "resnet" else build_meta(source)
    inputs = sample_batch(source, 1, model)[0].to(next(model.parameters()).device)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    counted = analysis.by_operator()
    theirs = 2 * sum(v for op, v in counted.items() if op in ("linear", "matmul", "addmm", "bmm", "conv", "einsum"))
    assert theirs > 0
    assert abs(ours / theirs - 1) < 0.01, counted
