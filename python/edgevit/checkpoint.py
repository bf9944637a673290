"""Loading EdgeViT checkpoints: the official training script's files, DDP's prefixes, plain
state_dicts, by path or as objects.

The official script saves ``{'model': state_dict, 'optimizer': ..., 'epoch': ...}`` (timm-style
scripts also ``'state_dict'`` or ``'model_ema'``), and a model wrapped in DistributedDataParallel
saves its keys under ``module.``. ``load_checkpoint`` unwraps both, then loads with the model's own
``load_state_dict``; with ``strict=True`` a mismatch names every missing and unexpected key.

Third-party layouts are recognised by their key names and mapped by an explicit table:

* birder (birder-project/birder, ``birder/net/edgevit.py``; its published EdgeViT weights were
  trained at 256 x 256): the stages live under ``body.stageN`` (``patch_embed``, then
  ``blocks.J.local_agg`` / ``blocks.J.self_attn``, with ``attn.local_prop`` for the official
  ``attn.LocalProp``), the final BatchNorm is ``features.0`` and the head is ``classifier``,
  built without a bias by default (``head_bias=False``): ``head.bias`` is then set to zeros,
  which is the same function. Its ``.pt`` files hold the state_dict under ``"state"``. Its
  ``rgb_stats`` (mean, std of its training data) are not EdgeViT's ImageNet ones: normalise
  inputs with the checkpoint's.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Optional, Union

import torch
from torch import nn

__all__ = ["load_checkpoint", "unwrap_state_dict", "from_birder", "BIRDER_KEY_MAP"]

# Tried in this order; the EMA weights are only used when asked for (use_ema=True). "state" is
# birder's.
_CONTAINER_KEYS = ("model", "state_dict", "module", "state")
_EMA_KEYS = ("model_ema", "state_dict_ema")
_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


def unwrap_state_dict(checkpoint: Mapping, use_ema: bool = False) -> dict:
    """The state_dict inside ``checkpoint``: a training-script container is opened, and the
    ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes are stripped."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint: expected a state_dict or a dict holding one, got "
                        f"{type(checkpoint).__name__}")
    if use_ema:
        ema = next((k for k in _EMA_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if ema is None:
            raise KeyError(f"checkpoint: use_ema=True but it has no {' or '.join(map(repr, _EMA_KEYS))} "
                           f"entry; its keys: {sorted(map(str, checkpoint))[:8]}")
        checkpoint = checkpoint[ema]
    else:
        inner = next((k for k in _CONTAINER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is not None:
            checkpoint = checkpoint[inner]
    state = {}
    for name, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"checkpoint: entry {name!r} is a {type(value).__name__}, not a "
                            "tensor; is this a state_dict?")
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        state[name] = value
    return state


# birder's key (a regular expression) -> this package's (the official) key, tried in order.
# birder's modules are the official ones renamed (birder/net/edgevit.py: EdgeViTSage holds
# patch_embed and blocks; LGLBlock holds local_agg and self_attn), so the names inside the
# blocks are the official ones except local_prop.
BIRDER_KEY_MAP = (
    (r"body\.stage(\d)\.patch_embed\.(.+)", r"patch_embed\1.\2"),
    (r"body\.stage(\d)\.blocks\.(\d+)\.local_agg\.(.+)", r"blocks\1.\2.LocalAgg.\3"),
    (r"body\.stage(\d)\.blocks\.(\d+)\.self_attn\.attn\.local_prop\.(.+)",
     r"blocks\1.\2.SelfAttn.attn.LocalProp.\3"),
    (r"body\.stage(\d)\.blocks\.(\d+)\.self_attn\.(.+)", r"blocks\1.\2.SelfAttn.\3"),
    (r"features\.0\.(.+)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
)
_BIRDER_KEYS = [(re.compile(pattern), repl) for pattern, repl in BIRDER_KEY_MAP]


def _is_birder(state: Mapping) -> bool:
    return any(k.startswith("body.stage") for k in state) and not any(
        k.startswith("patch_embed1.") for k in state)


def from_birder(state: Mapping) -> dict:
    """A birder EdgeViT state_dict in this package's (the official) key names (``BIRDER_KEY_MAP``).
    A head saved without a bias gets a zero ``head.bias``; a key the table does not cover raises
    KeyError naming it."""
    out = {}
    for name, value in state.items():
        for pattern, repl in _BIRDER_KEYS:
            match = pattern.fullmatch(name)
            if match:
                out[match.expand(repl)] = value
                break
        else:
            raise KeyError(f"checkpoint: {name!r} looks like a birder EdgeViT key (body.stageN...) "
                           "but BIRDER_KEY_MAP has no entry for it")
    if "head.weight" in out and "head.bias" not in out:
        w = out["head.weight"]
        out["head.bias"] = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    return out


# The modules a classifier has and a features_only backbone does not (EdgeVit._to_backbone).
_CLASSIFIER_ONLY = ("norm.", "head.")


def load_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping],
                    strict: bool = True, use_ema: bool = False,
                    map_location: Optional[Union[str, torch.device]] = "cpu") -> nn.Module:
    """Load ``checkpoint`` (a path, a state_dict, or a training-script dict) into ``model``.

    birder's layout is recognised and mapped (``from_birder``); a classifier's checkpoint loads
    into a ``features_only`` model (its final norm and head are left out).

    With ``strict=True`` (the default) a key mismatch raises one ``RuntimeError`` that lists
    every missing and unexpected key, and a shape mismatch names the parameter. Returns the
    model. Files are read with ``torch.load(weights_only=True)``: tensors and plain containers
    only, no pickled code.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint: no file at {os.fspath(checkpoint)!r}")
        checkpoint = torch.load(checkpoint, map_location=map_location, weights_only=True)
    state = unwrap_state_dict(checkpoint, use_ema=use_ema)
    if _is_birder(state):
        state = from_birder(state)
    expected = model.state_dict().keys()
    if getattr(model, "features_only", False):
        # A classifier's checkpoint loads into its backbone: what the backbone dropped is unused.
        state = {k: v for k, v in state.items()
                 if k in expected or not k.startswith(_CLASSIFIER_ONLY)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and (missing or unexpected):  # checked before loading: the model is left as it was
        lines = [f"checkpoint does not match {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
        raise RuntimeError("\n".join(lines))
    model.load_state_dict(state, strict=strict)
    return model
