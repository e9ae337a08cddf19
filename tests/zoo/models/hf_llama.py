"""A Hugging Face Llama, as a transformers user writes it: the model from a `LlamaConfig` (its defaults
kept, `use_cache` included), no weights downloaded, and a `loss()` that reads `outputs.logits` (the model
returns a `CausalLMOutputWithPast`)."""
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

SEQ_LEN = 32


def model():
    """Tiny: 4 layers, hidden 64, 4 query heads sharing 2 key/value heads (grouped-query attention)."""
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ_LEN)
    return LlamaForCausalLM(config)


def llama3_8b():
    """Meta Llama 3 8B's shape (8,030,261,248 parameters)."""
    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                         rope_theta=500000.0, rms_norm_eps=1e-5)
    return LlamaForCausalLM(config)


def batch(batch_size, model=None):
    seq = 8192 if model is not None and model.config.hidden_size == 4096 else SEQ_LEN
    vocab = model.config.vocab_size if model is not None else 256
    tokens = torch.randint(0, vocab, (batch_size, seq + 1))
    return tokens[:, :-1], tokens[:, 1:]


def loss(outputs, targets):
    logits = outputs.logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
