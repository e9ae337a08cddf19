"""FLOPs and parameter counts of the GPT examples against the Megatron-LM closed forms."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from planner import load, profile
from planner.load.model_file import build_meta
from conftest import example

GPT_SHAPES = {  # factory: (L, h, heads, V, s)
    "gpt2": (12, 768, 12, 50257, 1024),
    "gpt3_1_3b": (24, 2048, 16, 51200, 2048),
    "gpt3_6_7b": (32, 4096, 32, 51200, 2048),
    "gpt3_13b": (40, 5120, 40, 51200, 2048),
    "gpt3_175b": (96, 12288, 96, 51200, 2048),
    "gpt_1t": (128, 25600, 160, 51200, 2048),
}


@pytest.mark.parametrize("factory", GPT_SHAPES)
def test_gpt_parameter_count_is_exact(factory):
    L, h, _, V, s = GPT_SHAPES[factory]
    model = build_meta(load(example(f"gpt.py:{factory}")))
    assert sum(p.numel() for p in model.parameters()) == 12 * L * h * h + 13 * L * h + V * h + s * h + 2 * h


@pytest.mark.parametrize("factory", ["gpt3_1_3b", "gpt3_175b", "gpt_1t"])
def test_gpt_flops_match_megatron_formula(factory):
    L, h, _, V, s = GPT_SHAPES[factory]
    b = 1
    p = profile(example(f"gpt.py:{factory}"), micro_batch=b)
    assert len(p.blocks) == L
    for block in p.blocks:
        assert block.fwd_flops == 24 * b * s * h * h + 4 * b * s * s * h
        assert block.bwd_flops == 2 * block.fwd_flops
    total = p.fwd_flops + p.bwd_flops
    megatron = 72 * b * s * L * h * h * (1 + s / (6 * h) + V / (12 * h * L))
    assert abs(total / megatron - 1) < 0.005
    assert p.params == sum(x.numel() for x in build_meta(load(example(f"gpt.py:{factory}"))).parameters())


@settings(max_examples=12, deadline=None)
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), head_dim=st.sampled_from([8, 16]),
       seq=st.sampled_from([8, 16, 32]), batch=st.integers(1, 3))
def test_block_flops_formula_holds_for_any_shape(tmp_path_factory, layers, heads, head_dim, seq, batch):
    h = heads * head_dim
    f = tmp_path_factory.mktemp("m") / "m.py"
    f.write_text(f"import sys; sys.path.insert(0, {str(example(''))!r})\n"
                 "from gpt import GPT, GPTConfig, batch\n"
                 f"def model(): return GPT(GPTConfig(n_layer={layers}, n_embd={h}, n_head={heads}, "
                 f"vocab_size=64, seq_len={seq}))\n")
    p = profile(str(f), micro_batch=batch, dtype="float32")
    for block in p.blocks:
        assert block.fwd_flops == 24 * batch * seq * h * h + 4 * batch * seq * seq * h
        assert block.bwd_flops == 2 * block.fwd_flops
        assert sum(g.flops for g in block.gemms) == 24 * batch * seq * h * h
        assert sum(a.flops for a in block.attention) == 4 * batch * seq * seq * h
    assert p.params == 12 * layers * h * h + 13 * layers * h + 64 * h + seq * h + 2 * h


def test_identical_blocks_are_profiled_once(monkeypatch):
    import planner.profiling.profiler as prof
    calls = []
    real = prof.block_run
    monkeypatch.setattr(prof, "block_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = profile(example("gpt.py:gpt3_175b"))
    assert len(p.blocks) == 96 and len(calls) == 2  # the block, and its TP-narrowed twin
    assert len({l.signature for l in p.blocks}) == 1


def test_llama_and_resnet_profiles():
    llama = profile(example("llama.py:llama3_8b"))
    assert llama.params == 8_030_261_248  # Llama 3 8B, as published
    assert llama.tp_degrees == (1, 2, 4, 8)  # 8 K/V heads
    resnet = profile(example("resnet.py"))
    assert resnet.tp_degrees == (1,) and "no attention or MLP" in resnet.tp_note
    assert all(l.gemms for l in resnet.blocks) and all(not g.tp for l in resnet.layers for g in l.gemms)
    assert torch.__version__  # profiling never needed real weights: nothing above allocated them


def test_profile_json_round_trip():
    p = profile(example("llama.py:tiny"), micro_batch=2, dtype="float32")
    from planner import ModelProfile
    assert ModelProfile.from_json(p.to_json()) == p


def test_profile_is_cached(monkeypatch):
    import planner.api as api
    first = profile(example("gpt.py:tiny"))

    def again(*a, **k):
        raise RuntimeError("profiled again")
    monkeypatch.setattr(api, "profile_model", again)
    assert profile(example("gpt.py:tiny")) == first
    with pytest.raises(RuntimeError, match="profiled again"):
        profile(example("gpt.py:tiny"), micro_batch=3)  # other shapes are another key


def test_cache_is_keyed_by_the_model_built(tmp_path, monkeypatch):
    """One file whose depth comes from the environment (and a config module it imports) builds two
    models: each gets its own profile, and changing the imported module's forward re-profiles too."""
    (tmp_path / "shape.py").write_text("import torch.nn as nn\n\nclass Act(nn.Module):\n"
                                       "    def forward(self, x):\n        return x.relu()\n")
    (tmp_path / "m.py").write_text(
        "import os\nimport torch\nimport torch.nn as nn\nfrom shape import Act\n\n"
        "class Block(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(16, 16)\n        self.act = Act()\n\n"
        "    def forward(self, x):\n        return self.act(self.fc(x))\n\n"
        "class Net(nn.Module):\n    def __init__(self, depth):\n        super().__init__()\n"
        "        self.blocks = nn.ModuleList(Block() for _ in range(depth))\n        self.head = nn.Linear(16, 4)\n\n"
        "    def forward(self, x):\n        for b in self.blocks:\n            x = b(x)\n        return self.head(x)\n\n"
        "def model():\n    return Net(int(os.environ['DEPTH']))\n\n"
        "def batch(n):\n    return torch.randn(n, 16), torch.randint(0, 4, (n,))\n")
    monkeypatch.setenv("DEPTH", "2")
    shallow = profile(str(tmp_path / "m.py"))
    monkeypatch.setenv("DEPTH", "6")
    deep = profile(str(tmp_path / "m.py"))
    assert (len(shallow.blocks), len(deep.blocks)) == (2, 6)
    assert deep.params > shallow.params
    import sys
    sys.modules.pop("shape", None)
    (tmp_path / "shape.py").write_text("import torch.nn as nn\n\nclass Act(nn.Module):\n"
                                       "    def forward(self, x):\n        return x.relu() * x.sigmoid()\n")
    again = profile(str(tmp_path / "m.py"))
    assert again.layers[1].fwd_mem_bytes > deep.layers[1].fwd_mem_bytes  # the new forward was measured


EXPLICIT_ATTENTION = '''import math
import sys
import torch
sys.path.insert(0, {examples!r})
from gpt import GPT, CausalSelfAttention, GPTConfig, batch  # noqa: F401


class Attention(CausalSelfAttention):
    """nanoGPT's path without flash attention: the scores are materialised by explicit matmuls."""

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        att = att.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, s, -1))


def model():
    m = GPT(GPTConfig(n_layer=2, n_embd=64, n_head=4, vocab_size=256, seq_len=32))
    for block in m.blocks:
        block.attn.__class__ = Attention
    return m
'''


def test_explicit_attention_matmuls_are_split_by_tensor_parallel(tmp_path):
    """Attention written as matmuls over the heads (nanoGPT without flash, HF eager): TP divides the
    heads, so each rank runs 1/t of QK^T and PV. The profiler finds them by the block narrowed by t, and
    every GEMM of the block then costs a rank 1/t of its FLOPs."""
    from planner.cost.layer import _scaled
    path = tmp_path / "explicit.py"
    path.write_text(EXPLICIT_ATTENTION.format(examples=str(example(""))))
    prof = profile(str(path), micro_batch=2, dtype="float32", use_cache=False)
    block = prof.blocks[0]
    batched = [g for g in block.gemms if g.batch > 1]
    assert len(batched) == 2 and all(g.tp for g in batched)  # QK^T and PV, batch = samples x heads
    assert all(g.batch == 2 * 4 for g in batched)
    for t in (2, 4):
        assert sum(_scaled(g, 1.0, t).flops for g in block.gemms) * t == sum(g.flops for g in block.gemms)


FUNCTIONAL_HEAD = '''import sys
import torch
sys.path.insert(0, {examples!r})
from gpt import GPT, GPTConfig, batch  # noqa: F401


class FunctionalHead(GPT):
    """The LM head as a product with the embedding's weight, no Linear module."""

    def __init__(self, cfg):
        super().__init__(cfg)
        del self.lm_head

    def forward(self, idx):
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T


def model():
    return FunctionalHead(GPTConfig(n_layer=2, n_embd=64, n_head=4, vocab_size=256, seq_len=32))
'''


def test_embedding_read_outside_its_module_stays_whole(tmp_path):
    """A weight an op outside the embedding and head reads (`x @ wte.weight.T`) cannot be split along the
    vocabulary (that op would get a DTensor): the profile keeps it whole; the tied Linear head of the
    bundled GPT is split with its embedding."""
    path = tmp_path / "functional_head.py"
    path.write_text(FUNCTIONAL_HEAD.format(examples=str(example(""))))
    prof = profile(str(path), micro_batch=1, dtype="float32", use_cache=False)
    assert not [s for s in prof.tp_plan.values() if s.startswith("vocab_")] and prof.tp_degrees != (1,)
    assert all(t.tp_dim == -1 for layer in prof.layers for t in layer.tensors if t.name.startswith("wte"))
    tied = profile(example("gpt.py:tiny"), micro_batch=1, dtype="float32")
    assert {k: v for k, v in tied.tp_plan.items() if v.startswith("vocab_")} == \
        {"wte": "vocab_embedding", "lm_head": "vocab_head"}
