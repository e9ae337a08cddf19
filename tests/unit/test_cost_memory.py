"""Activation memory against Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", Sec. 4) for a block that matches the paper's assumptions, and where ours differ."""
import pytest

from planner.cost.layer import activation_bytes
from planner.types.profile import LayerProfile, SavedTensor

S, B, H, A = 2048, 1, 4096, 32


def _t(nbytes, shard, op="x"):
    return SavedTensor(nbytes=int(nbytes), shard=shard, op=op, shape=(1,), dtype="bfloat16")


def paper_block() -> LayerProfile:
    """The paper's list: 16-bit activations, 1-byte dropout masks, attention scores materialised."""
    sbh, as2b = S * B * H, A * S * S * B
    none = (
        _t(2 * sbh, "sp", "layer_norm"),     # LN1 input
        _t(2 * sbh, "sp", "layer_norm"),     # QKV input (LN1 output)
        _t(4 * sbh, "tp"),                   # Q, K
        _t(2 * as2b, "tp"),                  # softmax output
        _t(as2b, "tp"),                      # softmax dropout mask
        _t(2 * as2b, "tp"),                  # dropout output (attention over V)
        _t(2 * sbh, "tp"),                   # V
        _t(2 * sbh, "tp"),                   # projection input
        _t(sbh, "sp"),                       # attention dropout mask
        _t(2 * sbh, "sp", "layer_norm"),     # LN2 input
        _t(2 * sbh, "sp", "layer_norm"),     # fc1 input (LN2 output)
        _t(8 * sbh, "tp"),                   # GeLU input
        _t(8 * sbh, "tp"),                   # fc2 input
        _t(sbh, "sp"),                       # MLP dropout mask
    )
    return LayerProfile(name="blocks.0", kind="block", modules=("blocks.0",), params=0, param_bytes=0, fwd_flops=0,
                        bwd_flops=0, gemms=(), attention=(), fwd_mem_bytes=0,
                        saved={"none": none, "selective": none, "full": (_t(2 * sbh, "sp", "input"),)},
                        output_bytes=2 * sbh)


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_korthikanti_formulas(t):
    layer, sbh, ratio = paper_block(), S * B * H, A * S / H
    megatron = dict(sp_gathers_inputs=False, colwise_inputs=2)
    if t == 1:
        assert activation_bytes(layer, "none", 1, 1, False) == pytest.approx(sbh * (34 + 5 * ratio))
    assert activation_bytes(layer, "none", 1, t, False, **megatron) == pytest.approx(sbh * (10 + 24 / t + 5 * ratio / t))
    if t > 1:
        assert activation_bytes(layer, "none", 1, t, True, **megatron) == pytest.approx(sbh * (34 / t + 5 * ratio / t))
        # torch's SequenceParallel + ColwiseParallel save the gathered (full) QKV and fc1 inputs:
        torch_sp = activation_bytes(layer, "none", 1, t, True, colwise_inputs=2)
        assert torch_sp == pytest.approx(sbh * (34 / t + 5 * ratio / t + 4 * (1 - 1 / t)))
    assert activation_bytes(layer, "full", 1, t, False) == 2 * sbh
    assert activation_bytes(layer, "full", 1, t, t > 1) == 2 * sbh // t


def test_bundled_gpt_differs_as_documented():
    """The profiled GPT block (CPU flash attention, no dropout) keeps 32 sbh + fp32 log-sum-exp and no
    s^2 term: the paper's 34 less the two dropout masks, and 5as/h gone with flash attention."""
    import planner
    from conftest import example
    prof = planner.profile(example("gpt.py:gpt3_1_3b"), micro_batch=1)
    block = prof.blocks[0]
    h, s, a = 2048, 2048, block.attention[0].heads
    lse, ln_stats = 4 * a * s, 8 * s
    assert activation_bytes(block, "none", 1, 1, False) == 32 * s * h + lse + ln_stats
