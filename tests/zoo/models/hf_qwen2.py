"""A Hugging Face Qwen2 (q/k/v projections with biases, grouped-query attention, tied embeddings), fed
the way the transformers Trainer feeds it: keyword inputs with an attention mask and labels, so the model
computes its own (shifted) loss and returns it in `outputs.loss`."""
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

SEQ_LEN = 32


def model():
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ_LEN,
                         tie_word_embeddings=True, use_cache=False)
    return Qwen2ForCausalLM(config)


def batch(batch_size):
    input_ids = torch.randint(0, 256, (batch_size, SEQ_LEN))
    attention_mask = torch.ones_like(input_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": input_ids}, None
