"""Hugging Face GPT-2: `GPT2LMHeadModel(GPT2Config(...))` (Conv1D layers with transposed weights, a fused
`c_attn` q/k/v projection, tied embeddings) and no `loss()`: the planner's default reads `.logits`."""
import torch
from transformers import GPT2Config, GPT2LMHeadModel


def model():
    """Tiny: 4 layers, hidden 64, 4 heads, 32 positions; no dropout (as pretraining runs today), so runs
    of different layouts draw the same numbers."""
    return GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=4, n_head=4,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False))


def gpt2():
    """GPT-2 small: 124,439,808 parameters."""
    return GPT2LMHeadModel(GPT2Config(use_cache=False))


def batch(batch_size, model=None):
    config = model.config if model is not None else GPT2Config(vocab_size=256, n_positions=32)
    tokens = torch.randint(0, config.vocab_size, (batch_size, config.n_positions + 1))
    return tokens[:, :-1], tokens[:, 1:]
