"""GPT-2 / GPT-3 style decoder (the Megatron-LM GPT), written as a planner model file.

Pre-LayerNorm blocks, learned positions, GELU MLP of width 4h, input and output embeddings tied
(as in GPT-2, GPT-3 and Megatron-LM), causal attention through `F.scaled_dot_product_attention`.
Q, K and V are separate projections so a column-wise tensor-parallel split gives each rank whole heads,
and attention reshapes with `view(B, S, -1, head_dim)` so the local head count follows the shard.

Factories (the planner calls them under the meta device): tiny, gpt2, gpt3_1_3b, gpt3_6_7b,
gpt3_13b, gpt3_175b, gpt_1t (Megatron-LM's 1T: 128 layers, hidden 25600, 160 heads).

Data: `dataset(model)` is real text that needs no download: the bytes of some of Python's own
standard-library modules, as next-byte windows of the model's sequence length (so the tiny GPT's loss
falls from ln 256 = 5.55 within a few dozen steps); `batch()` stays the synthetic shape sample the
planner profiles with.
"""
from __future__ import annotations

import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 51200
    seq_len: int = 2048
    dropout: float = 0.0  # attention and hidden dropout; GPT-3/Megatron trained with 0.1


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.head_dim = cfg.n_embd // cfg.n_head
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.o_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).reshape(b, s, -1)
        return self.resid_drop(self.o_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.fc2 = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2/GPT-3/Megatron-LM

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L)."""
        std = 0.02
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = 1 / math.sqrt(2 * self.config.n_layer) if name.endswith(("o_proj", "fc2")) else 1.0
                nn.init.normal_(module.weight, 0.0, std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()


def _gpt(**kw) -> GPT:
    return GPT(GPTConfig(**kw))


def tiny() -> GPT:
    """4 layers, hidden 64: trains on a CPU in seconds."""
    return _gpt(n_layer=4, n_embd=64, n_head=4, vocab_size=256, seq_len=32)


_GPT2 = GPTConfig(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, seq_len=1024)


def gpt2() -> GPT:
    """GPT-2 small (124M with its 50257 vocabulary and 1024 positions)."""
    return GPT(_GPT2)


def gpt3_1_3b() -> GPT:
    return _gpt(n_layer=24, n_embd=2048, n_head=16)


def gpt3_6_7b() -> GPT:
    return _gpt(n_layer=32, n_embd=4096, n_head=32)


def gpt3_13b() -> GPT:
    return _gpt(n_layer=40, n_embd=5120, n_head=40)


def gpt3_175b() -> GPT:
    return _gpt(n_layer=96, n_embd=12288, n_head=96)


def gpt_1t() -> GPT:
    """Megatron-LM paper (Narayanan et al. 2021, Table 1): 128 layers, hidden 25600, 160 heads."""
    return _gpt(n_layer=128, n_embd=25600, n_head=160)


model = gpt2


def batch(batch_size: int, model: GPT | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and next-token targets, shaped for `model` (or GPT-2 when not given)."""
    cfg = model.config if model is not None else _GPT2
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len + 1))
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


CORPUS = ("textwrap.py", "string.py", "heapq.py", "bisect.py", "functools.py", "dataclasses.py", "argparse.py",
          "inspect.py")
"""Standard-library modules whose source makes the corpus (those present in this Python are used)."""


class ByteCorpus:
    """Next-byte samples: window i is (bytes [i*S, i*S+S), the same shifted by one), in a fixed shuffled
    order, so sample k of the run is the same on every machine with this Python."""

    def __init__(self, text: bytes, seq_len: int):
        self.data = torch.tensor(list(text), dtype=torch.long)
        self.seq_len = seq_len
        windows = (len(self.data) - 1) // seq_len
        self.order = torch.randperm(windows, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(self.order[i]) * self.seq_len
        chunk = self.data[start:start + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


def dataset(model: GPT | None = None) -> ByteCorpus:
    """Real text, no download: the bytes of `CORPUS` from this Python's standard library (byte ids fit
    every vocabulary here), windows of the model's sequence length."""
    cfg = model.config if model is not None else _GPT2
    root = Path(sysconfig.get_paths()["stdlib"])
    text = b"".join((root / name).read_bytes() for name in CORPUS if (root / name).is_file())
    if len(text) <= cfg.seq_len:
        raise RuntimeError(f"found too little standard-library source under {root} for a {cfg.seq_len}-byte window")
    return ByteCorpus(text, cfg.seq_len)
