"""Planning the zoo's full-size models from the users' files: exact parameter counts (the published
ones: Llama 3 8B, GPT-2 small, torchvision's ResNet-50 and ViT-B/16), the structure found in each module
tree, tensor parallel taken from the model's own plan, and one-line refusals that name the module."""
from __future__ import annotations

from pathlib import Path

import pytest

import planner
from planner.errors import PlannerError

ZOO = Path(__file__).resolve().parent / "models"


@pytest.mark.parametrize("ref, params, blocks", [
    ("hf_llama.py:llama3_8b", 8_030_261_248, ("model.layers", 32)),     # Meta's Llama 3 8B
    ("hf_gpt2.py:gpt2", 124_439_808, ("transformer.h", 12)),            # GPT-2 small (Hugging Face)
    ("tv_resnet.py:resnet50", 25_557_032, ("layer3", 6)),               # torchvision.models.resnet50
    ("tv_vit.py:vit_b_16", 86_567_656, ("encoder.layers", 12)),         # torchvision.models.vit_b_16
    ("nanogpt.py:gpt2", 124_475_904, ("transformer.h", 12)),            # nanoGPT's GPT-2 (vocab padded to 50304)
])
def test_full_size_models_profile_with_their_published_parameter_counts(ref, params, blocks):
    prof = planner.profile(str(ZOO / ref))
    assert prof.params == params
    assert (prof.blocks_path, len(prof.blocks)) == blocks
    assert sum(layer.params for layer in prof.layers) >= params  # every parameter sits in some layer


def test_llama3_8b_plans_and_takes_tp_from_its_own_plan():
    prof = planner.profile(str(ZOO / "hf_llama.py:llama3_8b"))
    assert prof.tp_degrees == (1, 2, 4, 8)  # 8 key/value heads
    assert prof.tp_plan["model.layers.*.self_attn.k_proj"] == "colwise"
    assert "base_model_tp_plan" in prof.tp_note
    for tp in (4, 8):
        plan = planner.plan(str(ZOO / "hf_llama.py:llama3_8b"), "8x4", "h100-sxm", tp=tp, time_limit=10)
        assert plan.strategy.tp == tp and plan.model.params == 8_030_261_248


@pytest.mark.parametrize("ref, module", [
    ("nanogpt.py", "transformer.h.*.attn.c_attn"),
    ("hf_gpt2.py", "transformer.h.*.attn.c_attn"),
    ("tv_vit.py", "encoder.layers.*.self_attention"),
])
def test_fused_projections_are_refused_by_name(ref, module):
    with pytest.raises(PlannerError) as e:
        planner.plan(str(ZOO / ref), "4", "cpu", global_batch=8, tp=2)
    message = str(e.value)
    assert "\n" not in message and f"fused projection {module}" in message
    assert "data and pipeline parallel are" in message
    plan = planner.plan(str(ZOO / ref), "4", "cpu", global_batch=8, pp=2)  # what is still possible
    assert plan.strategy.pp == 2


def test_tp_plan_on_conv1d_is_refused(tmp_path):
    """Hugging Face GPT-2's MLP is Conv1D (weight stored transposed): a TP_PLAN naming it is refused in
    one line instead of splitting the wrong dimension."""
    (tmp_path / "gpt2_tp.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom hf_gpt2 import model, batch  # noqa: F401\n"
        "TP_PLAN = {'transformer.h.*.mlp.c_fc': 'colwise', 'transformer.h.*.mlp.c_proj': 'rowwise'}\n" % str(ZOO))
    with pytest.raises(PlannerError, match=r"transformer\.h\.\*\.mlp\.c_fc, a Conv1D .*data and pipeline parallel are"):
        planner.plan(str(tmp_path / "gpt2_tp.py"), "4", "cpu", global_batch=8, tp=2)
