"""timm's model interface on the EdgeViT models: the keyword arguments create_model passes,
pretrained_cfg, forward_head / reset_classifier, num_features, no_weight_decay, timm's registry,
and backbone mode (features_only, out_indices, feature_info), fused on CPU like the classifier."""
import sys

import pytest
import torch
import torch.nn as nn

import edgevit
import edgevit.model as em
from edgevit import edgevit_s, edgevit_xs, edgevit_xxs

from test_models import _randomize_  # tests/ is on sys.path (conftest.py)

FACTORIES = {"edgevit_xxs": edgevit_xxs, "edgevit_xs": edgevit_xs, "edgevit_s": edgevit_s}
WIDTHS = {"edgevit_xxs": [36, 72, 144, 288], "edgevit_xs": [48, 96, 240, 384],
          "edgevit_s": [48, 96, 240, 384]}


def _timm_or_skip():
    try:
        import timm  # noqa: F401
        from timm.models import create_model  # noqa: F401
    except Exception as e:  # timm 1.0 imports torchvision, which has no build for torch 2.13
        pytest.skip(f"timm is not importable here ({type(e).__name__}: {e})")
    return sys.modules["timm"]


# ---------------------------------------------------------------------------------------------
# Constructors and the classifier interface.


def test_constructors_take_what_timm_create_model_passes():
    # What timm 1.0's create_model hands an entrypoint (None-valued kwargs pruned, then these).
    model = edgevit_xxs(pretrained=False, pretrained_cfg={"crop_pct": 0.95, "hf_hub_id": None},
                        pretrained_cfg_overlay={"interpolation": "bilinear"}, cache_dir=None,
                        drop_rate=0.0, drop_path_rate=0.1, drop_block_rate=None,
                        global_pool="avg", in_chans=1, num_classes=10)
    assert model.patch_embed1.proj.in_channels == 1 and model.head.out_features == 10
    assert model.num_classes == 10
    assert model.blocks4[-1].SelfAttn.drop_path.drop_prob == pytest.approx(0.1)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["crop_pct"] == 0.95 and cfg["interpolation"] == "bilinear"
    assert "hf_hub_id" not in cfg  # None-valued entries do not replace defaults
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    assert edgevit_xxs(drop_block_rate=0).num_classes == 1000


@pytest.mark.parametrize("bad", [0.1, 1])
def test_drop_block_rate_other_than_none_or_zero_raises(bad):
    with pytest.raises(ValueError, match=rf"drop_block_rate must be None or 0.*got {bad!r}"):
        edgevit_xxs(drop_block_rate=bad)


def test_bad_global_pool_and_pretrained_cfg_raise():
    with pytest.raises(ValueError, match=r"global_pool: expected one of \('avg', ''\).*got 'max'"):
        edgevit_xxs(global_pool="max")
    with pytest.raises(ValueError, match=r"global_pool='' .* needs num_classes=0.*got num_classes=1000"):
        edgevit_xxs(global_pool="")
    with pytest.raises(TypeError, match="pretrained_cfg must be a dict, got str"):
        edgevit_xxs(pretrained_cfg="imagenet")


@pytest.mark.parametrize("name", list(FACTORIES))
def test_pretrained_cfg_names_real_modules(name):
    model = FACTORIES[name]()
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "num_classes",
                "first_conv", "classifier"):
        assert key in cfg, key
    assert cfg["architecture"] == name
    first, head = model.get_submodule(cfg["first_conv"]), model.get_submodule(cfg["classifier"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == cfg["input_size"][0]
    assert isinstance(head, nn.Linear) and head.out_features == cfg["num_classes"]
    # pool_size: the final map of an input_size image.
    with torch.no_grad():
        f = model.eval().forward_features(torch.randn(1, *cfg["input_size"]))
    assert tuple(f.shape[-2:]) == cfg["pool_size"]
    # The official evaluation transform (saic-fi/edgevit src/datasets.py): Resize(256) bicubic,
    # CenterCrop(224), ImageNet mean/std.
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert em.default_cfgs[name]["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_num_features_is_the_final_width(name):
    model = FACTORIES[name]()
    assert model.num_features == model.head_hidden_size == WIDTHS[name][-1]
    assert isinstance(model.num_features, int)
    assert model.embed_dims == WIDTHS[name]
    assert model.head.in_features == model.num_features


def test_no_weight_decay_names_existing_one_dimensional_parameters():
    model = edgevit_xxs()
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names and names <= params.keys()
    assert {"head.bias", "norm.weight", "patch_embed1.norm.weight",
            "blocks1.0.SelfAttn.attn.qkv.bias"} <= names
    assert not {"head.weight", "patch_embed1.proj.weight",
                "blocks1.0.SelfAttn.attn.qkv.weight"} & names
    assert all(params[n].ndim == 1 for n in names)


def test_forward_is_forward_head_of_forward_features():
    torch.manual_seed(0)
    model = _randomize_(edgevit_xxs()).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        f = model.forward_features(x)
        pooled = model.forward_head(f, pre_logits=True)
        logits = model.forward_head(f)
        y = model(x)
    assert f.shape == (2, 288, 2, 3) and pooled.shape == (2, 288)
    torch.testing.assert_close(pooled, f.mean((2, 3)))
    torch.testing.assert_close(logits, model.head(pooled))
    torch.testing.assert_close(y, logits)


def test_reset_classifier():
    torch.manual_seed(0)
    model = _randomize_(edgevit_xxs()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(7)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 7
    assert model.head.in_features == model.num_features and model.num_classes == 7
    assert model.get_classifier() is model.head
    assert torch.all(model.head.bias == 0)  # freshly initialised (trunc normal, zero bias)
    model.reset_classifier(0)
    assert isinstance(model.head, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled)  # no head: the pooled features
    model.reset_classifier(0, global_pool="")
    with torch.no_grad():
        assert model(x).shape == (1, 288, 2, 2)  # no pooling: the final map
    with pytest.raises(ValueError, match="global_pool='' .* needs num_classes=0.*got num_classes=5"):
        model.reset_classifier(5)
    model.reset_classifier(5, "avg")
    assert model(x).shape == (1, 5)
    with pytest.raises(ValueError, match=r"num_classes: expected an int >= 0, got -1"):
        model.reset_classifier(-1)


def test_register_timm_without_timm_returns_false(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    monkeypatch.setitem(sys.modules, "timm.models", None)
    assert edgevit.register_timm() is False


def test_timm_registry_and_create_model():
    timm = _timm_or_skip()
    assert edgevit.register_timm() is True
    assert edgevit.register_timm() is True  # idempotent
    assert {"edgevit_xxs", "edgevit_xs", "edgevit_s"} <= set(timm.list_models("edgevit_*"))
    model = timm.create_model("edgevit_xs", pretrained=False, num_classes=10, drop_path_rate=0.1,
                              use_fused=True)
    assert isinstance(model, edgevit.EdgeVit) and model.use_fused and model.num_classes == 10
    assert model.pretrained_cfg["first_conv"] == "patch_embed1.proj"
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["crop_pct"] == 0.875 and data_cfg["interpolation"] == "bicubic"
    backbone = timm.create_model("edgevit_xxs", features_only=True, out_indices=(1, 3))
    assert backbone.feature_info.channels() == [72, 288]


# ---------------------------------------------------------------------------------------------
# Backbone mode.


def _stage_sizes(h, w):
    sizes = []
    h, w = h // 4, w // 4
    for _ in range(4):
        sizes.append((h, w))
        h, w = h // 2, w // 2
    return sizes


@pytest.mark.parametrize("name", list(FACTORIES))
def test_feature_info(name):
    model = FACTORIES[name](features_only=True)
    info = model.feature_info
    assert info.channels() == WIDTHS[name] and info.reduction() == [4, 8, 16, 32]
    assert len(info) == 4 and info.out_indices == (0, 1, 2, 3)
    assert [d["num_chs"] for d in info] == WIDTHS[name]
    assert info[2]["reduction"] == 16 and info.channels(2) == WIDTHS[name][2]
    assert info.get_dicts(keys=("num_chs",))[0] == {"num_chs": WIDTHS[name][0]}
    depth = em._CONFIGS[name]["depth"]
    # The modules are real, and their outputs are the stage maps (hooks on them see them).
    seen = {}
    for i, mod_name in enumerate(info.module_name()):
        assert mod_name == f"blocks{i + 1}.{depth[i] - 1}"
        model.get_submodule(mod_name).register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(i, out))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert all(torch.equal(seen[i], outs[i]) for i in range(4))
    # The classifier exposes the same list, all four stages.
    assert FACTORIES[name]().feature_info.get_dicts() == info.get_dicts()


@pytest.mark.parametrize("hw", [(224, 224), (256, 256), (200, 296), (97, 33), (32, 32)])
def test_features_only_shapes(hw):
    model = edgevit_xs(features_only=True).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == 4
    for out, c, (h, w) in zip(outs, WIDTHS["edgevit_xs"], _stage_sizes(*hw)):
        assert out.shape == (2, c, h, w)
    assert not hasattr(model.head, "weight") and isinstance(model.norm, nn.Identity)
    assert not any(k.startswith(("head.", "norm.")) for k in model.state_dict())


def test_out_indices():
    model = edgevit_xxs(features_only=True, out_indices=(1, -1)).eval()
    assert model.out_indices == (1, 3)
    assert model.feature_info.channels() == [72, 288]
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [72, 288]
    assert edgevit_xxs(features_only=True, out_indices=2).out_indices == (2, 3)  # the last 2
    for bad, match in [((4,), r"out_indices: expected stage indices in -4..3 .*got \(4,\)"),
                       ((0, 0), r"out_indices: expected distinct stages, got \(0, 0\)"),
                       (0, r"out_indices: an int n means the last n .* got 0"),
                       ((), r"out_indices: expected stage indices .*got \(\)")]:
        with pytest.raises(ValueError, match=match):
            edgevit_xxs(features_only=True, out_indices=bad)
    with pytest.raises(RuntimeError, match="reset_classifier: a features_only model has no classifier"):
        model.reset_classifier(10)


def _backbone_pair(name="edgevit_xs", seed=0):
    torch.manual_seed(seed)
    ref = _randomize_(FACTORIES[name](), seed).eval()
    sd = ref.state_dict()
    ref_bb = FACTORIES[name](features_only=True).eval()
    fused_bb = FACTORIES[name](features_only=True, use_fused=True).eval()
    for m in (ref_bb, fused_bb):
        edgevit.load_checkpoint(m, sd)  # a classifier's checkpoint: norm and head are dropped
    return ref, ref_bb, fused_bb


@pytest.mark.parametrize("hw", [(224, 224), (200, 296), (97, 33)])
def test_fused_backbone_runs_the_plan_and_matches(hw, monkeypatch):
    ref, ref_bb, fused_bb = _backbone_pair()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        expected = ref_bb(x)
        stages = ref.forward_features(x, return_stages=True)
    assert all(map(torch.equal, expected, stages))  # the backbone is the classifier's stages

    calls = {"prepared": 0}
    real = torch.ops.edgevit.lgl_fused_prepared

    def spy(*args):
        calls["prepared"] += 1
        return real(*args)

    def no_module_tree(self, x):
        raise AssertionError("the fused backbone ran the module tree")

    monkeypatch.setattr(torch.ops.edgevit, "lgl_fused_prepared", spy)
    monkeypatch.setattr(em.LGLBlock, "forward", no_module_tree)
    with torch.no_grad():
        outs = fused_bb(x)
    assert fused_bb._inference_plan is not None and fused_bb._inference_plan._built is not None
    assert calls["prepared"] == sum(em._CONFIGS["edgevit_xs"]["depth"])  # one per block: 6
    for out, exp in zip(outs, expected):
        assert out.shape == exp.shape
        assert (out - exp).abs().max() <= 1e-4 * max(1.0, exp.abs().max().item())
