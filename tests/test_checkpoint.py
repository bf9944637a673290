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
