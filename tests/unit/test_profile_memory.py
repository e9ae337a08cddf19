"""Saved-activation bytes and their shard tags against real CPU forwards and against a narrower block.

Relation to the published formula: Korthikanti et al. 2022 give s·b·h·(34 + 5·a·s/h) bytes per GPT
layer with 16-bit activations, 1-byte dropout masks and materialised attention scores. The bf16 GPT
block profiled here keeps 32.03·s·b·h: no dropout (2·s·b·h of masks gone), flash attention (the
5·a·s/h score/softmax term gone), plus the kernel's fp32 log-sum-exp (4·a·s·b bytes = 0.03·s·b·h at
h/a = 128). `test_bf16_gpt_block_relates_to_korthikanti` pins that relation.
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch.profiler import ProfilerActivity, profile as torch_profile
from torch.utils.checkpoint import checkpoint

from planner import profile
from planner.program.runtime.cuda_ops import FusedOnCuda
from planner.program.runtime.policy import selective_context
from conftest import EXAMPLES, example

sys.path.insert(0, str(EXAMPLES))
import gpt  # noqa: E402
import llama  # noqa: E402
import resnet  # noqa: E402


def allocated_growth(fn) -> tuple[int, object]:
    """Net bytes the CPU allocator handed out during `fn()` and still holds after it (torch profiler)."""
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    return sum(e.self_cpu_memory_usage for e in prof.key_averages()), out


def run_block(block, args, mode):
    if mode == "none":
        return block(*args)
    ctx = {"context_fn": selective_context} if mode == "selective" else {}
    return checkpoint(block, *args, use_reentrant=False, **ctx)


CASES = {  # file:factory, a function giving (block, args) of the real model
    "gpt.py:tiny": lambda m, x: (m.blocks[1], (x,)),
    "llama.py:tiny": lambda m, x: (m.layers[1], (x, *llama.rotary(32, 16, 10000.0, "cpu"))),
    "resnet.py:tiny": lambda m, x: (m.blocks[1], (x,)),
}


@pytest.mark.parametrize("mode", ["none", "selective", "full"])
@pytest.mark.parametrize("ref", CASES)
def test_saved_bytes_equal_real_memory_growth(ref, mode):
    """growth = saved − (saved tensors that already existed: the block's inputs) + the block's output.
    The real block runs with RMSNorm as the GPU build runs it (`FusedOnCuda`), which the profile describes."""
    b = 2
    p = profile(example(ref), micro_batch=b, dtype="float32")
    layer = p.blocks[1]
    torch.manual_seed(0)
    module = {"gpt.py:tiny": gpt, "llama.py:tiny": llama, "resnet.py:tiny": resnet}[ref]
    model = getattr(module, ref.split(":")[1])()
    hidden = torch.randn(_hidden_shape(p), requires_grad=True)
    block, args = CASES[ref](model, hidden)
    with FusedOnCuda():
        growth, out = allocated_growth(lambda: run_block(block, args, mode))
    pre_existing = sum(t.nbytes for t in layer.saved[mode] if t.op == "input")
    new_output = 0 if mode == "none" and _saves_its_output(block, args) else out.numel() * out.element_size()
    assert growth == layer.saved_bytes(mode) - pre_existing + new_output


def _saves_its_output(block, args) -> bool:
    """True when autograd keeps the block's own output (ResNet's final ReLU saves its result)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = block(*args)
    return any(t.untyped_storage()._cdata == out.untyped_storage()._cdata for t in saved)


def _hidden_shape(p) -> tuple[int, ...]:
    return next(t.shape for t in p.blocks[0].saved["full"])


def test_dropout_masks_are_counted():
    """With dropout on, a GPU's `native_dropout` keeps a 1-byte mask per dropout (the profile's
    `FusedOnCuda`; the CPU build's own dropout would keep one in the activation dtype)."""
    torch.manual_seed(0)
    block = gpt.Block(gpt.GPTConfig(n_layer=1, n_embd=64, n_head=4, vocab_size=64, seq_len=32, dropout=0.1))
    x = torch.randn(2, 32, 64, requires_grad=True)
    with FusedOnCuda():
        growth, out = allocated_growth(lambda: block(x))
    path = EXAMPLES.parent / "tests" / "_dropout_model.py"
    p = profile(str(_dropout_file(path)), micro_batch=2, dtype="float32")
    layer = p.blocks[0]
    pre = sum(t.nbytes for t in layer.saved["none"] if t.op == "input")
    assert growth == layer.saved_bytes("none") - pre + out.numel() * 4
    # the two residual dropouts keep an h-wide 1-byte mask each on top of the dropout-free block
    plain = profile(example("gpt.py:tiny"), micro_batch=2, dtype="float32").blocks[0]
    assert layer.saved_bytes("none", "sp") == plain.saved_bytes("none", "sp") + 2 * 2 * 32 * 64 * 1
    path.unlink()


def _dropout_file(path):
    path.write_text(f"import sys; sys.path.insert(0, {str(EXAMPLES)!r})\n"
                    "from gpt import GPT, GPTConfig, batch\n"
                    "def model(): return GPT(GPTConfig(n_layer=2, n_embd=64, n_head=4, vocab_size=64, "
                    "seq_len=32, dropout=0.1))\n")
    return path


def test_bf16_gpt_block_relates_to_korthikanti():
    p = profile(example("gpt.py:gpt3_175b"))
    s, b, h, a = 2048, 1, 12288, 96
    layer = p.blocks[0]
    lse = 4 * a * s * b  # flash attention's fp32 log-sum-exp
    ln_stats = 4 * 2 * s * b  # two LayerNorms' mean and rstd, kept in bf16 by the CPU kernel
    assert layer.saved_bytes("none") == 32 * s * b * h + lse + ln_stats  # 34·sbh − 2·sbh of masks
    rng = 5056  # the CPU generator state checkpointing keeps
    assert layer.saved_bytes("full") == 2 * s * b * h + rng  # only the block input, as in the paper
    tp = layer.saved_bytes("none", "tp")
    assert tp == 24 * s * b * h + lse  # q, k, v, attention out; fc1 out, gelu out: the paper's 24/t
    # LayerNorm inputs and outputs (the linears' inputs): the paper's 10 less its 2 of dropout masks
    assert layer.saved_bytes("none", "sp") == 8 * s * b * h + ln_stats


TP_MODEL = """
import torch, torch.nn as nn, torch.nn.functional as F
HEADS, FFN = {heads}, {ffn}
class Attn(nn.Module):
    def __init__(self):
        super().__init__(); self.head_dim = 16
        self.q_proj = nn.Linear(64, HEADS * 16); self.k_proj = nn.Linear(64, HEADS * 16)
        self.v_proj = nn.Linear(64, HEADS * 16); self.o_proj = nn.Linear(HEADS * 16, 64)
    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, 16).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, -1))
class Mlp(nn.Module):
    def __init__(self):
        super().__init__(); self.fc1 = nn.Linear(64, FFN); self.fc2 = nn.Linear(FFN, 64)
    def forward(self, x): return self.fc2(F.gelu(self.fc1(x)))
class Block(nn.Module):
    def __init__(self):
        super().__init__(); self.ln1 = nn.LayerNorm(64); self.attn = Attn(); self.ln2 = nn.LayerNorm(64); self.mlp = Mlp()
    def forward(self, x):
        x = x + self.attn(self.ln1(x)); return x + self.mlp(self.ln2(x))
class Net(nn.Module):
    def __init__(self):
        super().__init__(); self.emb = nn.Embedding(64, 64)
        self.blocks = nn.ModuleList(Block() for _ in range(2)); self.head = nn.Linear(64, 64)
    def forward(self, t):
        x = self.emb(t)
        for blk in self.blocks: x = blk(x)
        return self.head(x)
def model(): return Net()
def batch(n): t = torch.randint(0, 64, (n, 33)); return t[:, :-1], t[:, 1:]
"""


@pytest.mark.parametrize("t", [2, 4])
@pytest.mark.parametrize("mode", ["none", "selective"])
def test_tp_tags_predict_a_narrower_block(tmp_path, t, mode):
    """The block one TP rank holds (heads and MLP width / t) keeps tp/t + sp + replicated bytes."""
    files = {}
    for name, heads, ffn in (("full", 8, 256), ("rank", 8 // t, 256 // t)):
        files[name] = tmp_path / f"{name}.py"
        files[name].write_text(TP_MODEL.format(heads=heads, ffn=ffn))
    full = profile(str(files["full"]), micro_batch=2, dtype="float32").blocks[0]
    rank = profile(str(files["rank"]), micro_batch=2, dtype="float32").blocks[0]
    assert full.saved_bytes(mode, "tp") > 0
    assert rank.saved_bytes(mode) == (full.saved_bytes(mode, "tp") // t + full.saved_bytes(mode, "sp")
                                      + full.saved_bytes(mode, "replicated"))
