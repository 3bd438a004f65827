"""The six reference models against timm: keys, shapes, counts and outputs."""
from __future__ import annotations

import inspect

import pytest
import torch

from twins_deploy import (InputShapeError, Twins, UnknownModelError, count_params, create_model,
                          get_config, list_models, resolve_name)
from twins_deploy import twins as twins_module
from twins_deploy.errors import OptionError

from conftest import ALL_VARIANTS, ours_from, timm_reference

SIZES = [(224, 224), (256, 320), (230, 301)]  # no padding / padding everywhere / odd sizes


def test_list_models_is_the_papers_six():
    assert list_models() == ALL_VARIANTS


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_parameter_count_exact(name):
    with torch.device("meta"):
        model = Twins(get_config(name))
    assert count_params(model) == get_config(name).num_params


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_state_dict_keys_and_shapes_equal_timm(name):
    ref = timm_reference(name).state_dict()
    with torch.device("meta"):
        ours = Twins(get_config(name)).state_dict()
    assert list(ours) == list(ref) or set(ours) == set(ref)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_logits_match_timm(name, hw):
    ref = timm_reference(name)
    ours = ours_from(ref, name)
    x = torch.randn(2, 3, *hw) * 1.2
    with torch.no_grad():
        expected = ref(x)
        for impl in ("explicit", "sdpa"):
            got = ours.set_attention_impl(impl)(x)
            assert got.shape == expected.shape == (2, 1000)
            diff = (got - expected).abs().max().item()
            assert diff <= 1e-5, f"{name} {hw} {impl}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_backbone_maps_match_timm_forward_intermediates(name):
    ref = timm_reference(name)
    ours = ours_from(ref, name, features=True).set_attention_impl("explicit")
    x = torch.randn(1, 3, 230, 301)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        got = ours(x)
    assert isinstance(got, tuple) and len(got) == 4
    for stage, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape
        assert g.shape[1] == get_config(name).embed_dims[stage]
        # maps carry the residual stream (|x| up to ~50), so the bound is relative to it
        scale = max(1.0, e.abs().max().item())
        assert (g - e).abs().max().item() <= 1e-6 * scale * 10, f"stage {stage}"


def test_backbone_strides():
    model = create_model("svt_s", features=True)
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 256, 320))
    assert [tuple(m.shape[2:]) for m in maps] == [(64, 80), (32, 40), (16, 20), (8, 10)]


def test_attention_paths_agree_on_padded_windows():
    model = create_model("svt_s", seed=3)
    x = torch.randn(3, 3, 230, 301)
    with torch.no_grad():
        a = model.set_attention_impl("explicit")(x)
        b = model.set_attention_impl("sdpa")(x)
    assert (a - b).abs().max().item() <= 1e-5
    assert a.std().item() > 0.1  # random weights give a real spread of logits


def test_padding_is_not_masked_like_timm():
    """Padded tokens take part in LSA as keys/values (timm / official detection code)."""
    ref = timm_reference("svt_s")
    ours = ours_from(ref, "svt_s")
    x = torch.randn(1, 3, 32 * 7 + 4, 32 * 7 + 4)  # every stage pads both axes
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


def test_smallest_input_works_and_smaller_is_refused():
    model = create_model("pcpvt_s")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 33)).shape == (1, 1000)
        with pytest.raises(InputShapeError, match=">= 32"):
            model(torch.randn(1, 3, 31, 64))
        with pytest.raises(InputShapeError, match="channels"):
            model(torch.randn(1, 1, 64, 64))


def test_no_roll_anywhere():
    src = inspect.getsource(twins_module)
    assert "roll(" not in src
    model = create_model("svt_s", attn_impl="explicit")
    graph = torch.jit.trace(model, torch.randn(1, 3, 230, 301), check_trace=False).inlined_graph
    kinds = {n.kind() for n in graph.nodes()}
    assert "aten::roll" not in kinds
    assert "aten::matmul" in kinds and "aten::softmax" in kinds


def test_trace_at_224_still_crops_at_padded_size():
    """timm's ``if pad > 0`` crop is frozen by a trace at 224; ours must not be."""
    model = create_model("svt_s", attn_impl="explicit")
    traced = torch.jit.trace(model, torch.randn(2, 3, 224, 224), check_trace=False)
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        assert (traced(x) - model(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("alias,short", [
    ("twins_svt_small", "svt_s"), ("twins_pcpvt_large.in1k", "pcpvt_l"),
    ("timm/twins_svt_base.in1k", "svt_b"), ("alt_gvt_large", "svt_l"), ("SVT_S", "svt_s"),
])
def test_aliases(alias, short):
    assert resolve_name(alias) == short


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean.*svt_s"):
        create_model("svt_ss")
    with pytest.raises(UnknownModelError, match="known: pcpvt_s"):
        resolve_name("resnet50")


def test_preprocessing_metadata():
    pre = get_config("svt_s").preprocess
    assert pre.input_size == (3, 224, 224)
    assert pre.interpolation == "bicubic" and pre.crop_pct == 0.9
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert get_config("twins_pcpvt_small").hf_hub_id == "timm/twins_pcpvt_small.in1k"


def test_default_weights_are_seeded_random_and_labelled():
    a, b = create_model("svt_s", seed=7), create_model("svt_s", seed=7)
    c = create_model("svt_s", seed=8)
    assert a.weights_info.source == "random" and "meaningless for accuracy" in a.weights_info.note
    assert torch.equal(a.head.bias, b.head.bias) and not torch.equal(a.head.bias, c.head.bias)
    # every bias and LayerNorm affine is non-zero (timm's init leaves them at 0)
    for key, p in a.state_dict().items():
        if key.endswith("bias"):
            assert p.abs().min().item() > 0, key


@pytest.mark.parametrize("kw", [dict(num_classes=-1), dict(num_classes=2.5), dict(seed=-1), dict(seed="0")])
def test_create_model_refuses_what_the_cli_refuses(kw):
    with pytest.raises(OptionError, match="must be a whole number >= 0"):
        create_model("svt_s", **kw)
