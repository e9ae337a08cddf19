"""A Hugging Face Qwen2 (q/k/v projections with biases, grouped-query attention, tied embeddings), fed
the way the transformers Trainer feeds it: keyword inputs with an attention mask and labels, so the model
computes its own (shifted) loss and returns it in `outputs.loss`. Its `dataset()` is a tokenized dataset
as `datasets` yields one: a dict per sample (and no target beside it)."""
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


class TokenizedDataset:
    """Fixed random 'documents' of SEQ_LEN tokens, one dict per sample, as a tokenized dataset gives them."""

    def __init__(self, size: int = 256):
        self.ids = torch.randint(0, 256, (size, SEQ_LEN), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}, None


def dataset():
    return TokenizedDataset()
