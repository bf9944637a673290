"""Loading EdgeViT checkpoints: the official training script's files, DDP's prefixes, plain
state_dicts, by path or as objects.

The official script saves ``{'model': state_dict, 'optimizer': ..., 'epoch': ...}`` (timm-style
scripts also ``'state_dict'`` or ``'model_ema'``), and a model wrapped in DistributedDataParallel
saves its keys under ``module.``. ``load_checkpoint`` unwraps both, then loads with the model's own
``load_state_dict``; with ``strict=True`` a mismatch names every missing and unexpected key.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Union

import torch
from torch import nn

__all__ = ["load_checkpoint", "unwrap_state_dict"]

# Tried in this order; the EMA weights are only used when asked for (use_ema=True).
_CONTAINER_KEYS = ("model", "state_dict", "module")
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


def load_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping],
                    strict: bool = True, use_ema: bool = False,
                    map_location: Optional[Union[str, torch.device]] = "cpu") -> nn.Module:
    """Load ``checkpoint`` (a path, a state_dict, or a training-script dict) into ``model``.

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
    expected = model.state_dict().keys()
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
