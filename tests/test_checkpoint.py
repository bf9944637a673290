"""edgevit.load_checkpoint: the official script's containers, DDP / compile prefixes, paths,
EMA weights, and strict errors that name every mismatched key."""
import pytest
import torch

import edgevit
from edgevit.checkpoint import load_checkpoint, unwrap_state_dict


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return edgevit.edgevit_xxs()


def _target():
    torch.manual_seed(1)
    return edgevit.edgevit_xxs()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrap", ["plain", "official", "state_dict", "ddp", "compiled"])
def test_containers_and_prefixes(source, wrap, tmp_path):
    sd = source.state_dict()
    ckpt = {
        "plain": sd,
        "official": {"model": sd, "optimizer": {}, "epoch": 299},
        "state_dict": {"state_dict": sd, "arch": "edgevit_xxs"},
        "ddp": {"model": {"module." + k: v for k, v in sd.items()}},
        "compiled": {"_orig_mod." + k: v for k, v in sd.items()},
    }[wrap]
    torch.save(ckpt, tmp_path / "c.pth")
    model = _target()
    assert not _same_weights(model, source)
    assert load_checkpoint(model, tmp_path / "c.pth") is model
    assert _same_weights(model, source)
    assert _same_weights(load_checkpoint(_target(), ckpt), source)


def test_ema_weights_only_when_asked(source):
    sd = source.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    ckpt = {"model": sd, "model_ema": ema}
    assert _same_weights(load_checkpoint(_target(), ckpt), source)
    model = load_checkpoint(_target(), ckpt, use_ema=True)
    assert torch.equal(model.state_dict()["head.weight"], ema["head.weight"])
    with pytest.raises(KeyError, match="use_ema=True but it has no 'model_ema'"):
        load_checkpoint(_target(), {"model": sd}, use_ema=True)


def test_strict_names_every_mismatch_and_leaves_the_model_untouched(source):
    sd = dict(source.state_dict())
    sd.pop("head.weight")
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    model = _target()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError) as e:
        load_checkpoint(model, sd)
    msg = str(e.value)
    assert "missing keys (2): head.weight, head.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sd.pop("extra.weight")
    load_checkpoint(model, sd, strict=False)  # the rest loads
    assert torch.equal(model.state_dict()["patch_embed1.proj.weight"],
                       source.state_dict()["patch_embed1.proj.weight"])


def test_shape_mismatch_names_the_parameter(source):
    sd = dict(source.state_dict())
    sd["head.weight"] = torch.zeros(10, sd["head.weight"].shape[1])
    with pytest.raises(RuntimeError, match="head.weight"):
        load_checkpoint(_target(), sd)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at"):
        load_checkpoint(_target(), tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="expected a state_dict or a dict holding one, got list"):
        unwrap_state_dict([1, 2])
    with pytest.raises(TypeError, match="entry 'epoch' is a int, not a tensor"):
        unwrap_state_dict({"epoch": 3})


def test_constructors_load_a_path_and_take_timm_kwargs(source, tmp_path):
    torch.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "xxs.pth")
    model = edgevit.edgevit_xxs(use_fused=True, pretrained=tmp_path / "xxs.pth", drop_block_rate=None)
    assert _same_weights(model, source) and model.use_fused
    with pytest.raises(ValueError, match="pretrained=True, but no weights are downloaded"):
        edgevit.edgevit_xxs(pretrained=True)
    with pytest.raises(ValueError, match="drop_block_rate must be None"):
        edgevit.edgevit_xxs(drop_block_rate=0.1)


# ---------------------------------------------------------------------------------------------
# birder's layout (birder-project/birder, birder/net/edgevit.py).


def _birder_keys(depth, sr_ratios=(4, 2, 2, 1), head_bias=False):
    """The state_dict keys of birder's EdgeViT, listed from its module tree: body.stageN is an
    EdgeViTSage (patch_embed: proj, norm; blocks: LGLBlock(local_agg only where sr > 1,
    self_attn)); features = (BatchNorm2d, pool, flatten); classifier = Linear(bias=head_bias)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    wb = ("weight", "bias")
    keys = []
    for n, (d, sr) in enumerate(zip(depth, sr_ratios), 1):
        stage = f"body.stage{n}"
        keys += [f"{stage}.patch_embed.{m}.{p}" for m in ("proj", "norm") for p in wb]
        for j in range(d):
            blk = f"{stage}.blocks.{j}"
            if sr > 1:
                keys += [f"{blk}.local_agg.{m}.{p}" for m in ("pos_embed", "conv1", "conv2", "attn",
                                                            "mlp.fc1", "mlp.fc2") for p in wb]
                keys += [f"{blk}.local_agg.{m}.{p}" for m in ("norm1", "norm2") for p in bn]
            attn = ("attn.qkv", "attn.proj") + (("attn.local_prop", "attn.norm") if sr > 1 else ())
            keys += [f"{blk}.self_attn.{m}.{p}" for m in ("pos_embed", "norm1", "norm2", "mlp.fc1",
                                                        "mlp.fc2") + attn for p in wb]
    keys += [f"features.0.{p}" for p in bn]
    keys += ["classifier.weight"] + (["classifier.bias"] if head_bias else [])
    return keys


def _to_birder(state, head_bias=False):
    """This package's state_dict in birder's names, by plain renames (not the map's regexes)."""
    out = {}
    for k, v in state.items():
        if k == "head.bias" and not head_bias:
            continue
        if k.startswith("patch_embed"):
            k = f"body.stage{k[11]}.patch_embed{k[12:]}"
        elif k.startswith("blocks"):
            n, rest = k[6], k[8:]
            j, rest = rest.split(".", 1)
            rest = (rest.replace("LocalAgg.", "local_agg.").replace("SelfAttn.", "self_attn.")
                    .replace("LocalProp", "local_prop"))
            k = f"body.stage{n}.blocks.{j}.{rest}"
        elif k.startswith("norm."):
            k = "features.0." + k[5:]
        elif k.startswith("head."):
            k = "classifier." + k[5:]
        out[k] = v
    return out


@pytest.mark.parametrize("head_bias", [False, True])
def test_birder_layout_loads(source, head_bias, tmp_path):
    torch.manual_seed(2)
    sd = dict(source.state_dict())
    if not head_bias:  # birder's default head has no bias: the same function as a zero bias
        sd["head.bias"] = torch.zeros_like(sd["head.bias"])
    birder = _to_birder(sd, head_bias)
    assert sorted(birder) == sorted(_birder_keys([1, 1, 3, 2], head_bias=head_bias))
    # birder's .pt files: {"state": state_dict, "birder_version": ..., "signature": ...}
    torch.save({"state": birder, "birder_version": "x", "signature": {"inputs": []},
                "rgb_stats": {"mean": [0.5] * 3, "std": [0.5] * 3}}, tmp_path / "b.pt")
    model = load_checkpoint(_target(), tmp_path / "b.pt")
    got = model.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    x = torch.randn(1, 3, 256, 256)  # birder's weights were trained at 256 x 256
    src = _target()
    src.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src.eval()(x), rtol=0, atol=0)


def test_birder_map_is_explicit():
    mapped = edgevit.checkpoint.from_birder(
        {k: torch.zeros(3, 3) for k in _birder_keys([1, 1, 3, 1])})
    assert set(mapped) == set(edgevit.edgevit_xs().state_dict())
    assert mapped["head.bias"].shape == (3,) and not mapped["head.bias"].any()
    with pytest.raises(KeyError, match=r"'body.stage1.blocks.0.extra.weight' .* BIRDER_KEY_MAP"):
        edgevit.checkpoint.from_birder({"body.stage1.blocks.0.extra.weight": torch.zeros(1)})


def test_birder_layout_into_a_backbone():
    backbone = edgevit.edgevit_xxs(features_only=True)
    load_checkpoint(backbone, _to_birder(_target().state_dict()))
    assert torch.equal(backbone.state_dict()["blocks4.1.SelfAttn.attn.qkv.weight"],
                       _target().state_dict()["blocks4.1.SelfAttn.attn.qkv.weight"])
