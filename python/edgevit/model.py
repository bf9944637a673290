"""EdgeViT (Pan et al., ECCV 2022) in plain PyTorch, with an optional fused LGL attention.

Module by module this follows the official implementation (saic-fi/edgevit, ``src/edgevit.py``),
so ``state_dict()`` keys are identical and official checkpoints load with ``strict=True``.
Differences from the official code, none of which touches the parameters:

* no timm: ``DropPath`` and the weight init are implemented here;
* ``PatchEmbed`` has no image-size assert, and ``GlobalSparseAttn`` works for any ``H, W >= 1``:
  the sampled map is ``ceil(H/r) x ceil(W/r)`` (exactly what ``AvgPool2d(1, r)`` gives) and the
  ``LocalProp`` output is cropped back to ``H x W`` before the norm. When ``r`` divides the map
  this is the official computation; so any input of at least 32 x 32 works, square or not;
* maps between blocks are channels_last views of the token tensors (no copies), which the next
  convolution keeps; values are the official ones;
* ``use_fused``: ``GlobalSparseAttn`` runs as one call of ``torch.ops.edgevit.lgl_fused``
  (package ``edgevit_kernels``) on its own parameters, in training and inference alike, with
  autograd. In eval mode on CPU without autograd, ``EdgeVit`` with ``use_fused`` runs its
  inference plan instead of the module tree (``edgevit.inference``: every block on the edgevit
  CPU ops, on weights packed once); the logits equal the module tree's up to float rounding;
* ``forward_features(x, return_stages=True)`` returns the four stage outputs, and
  ``features_only=True`` makes the model a backbone whose ``forward`` returns them (timm's
  convention: ``out_indices``, ``feature_info``); with ``use_fused`` it runs on the plan too;
* timm's model interface (``pretrained_cfg``, ``forward_head``, ``reset_classifier``, the keyword
  arguments ``timm.create_model`` passes); ``edgevit.register_timm()`` adds the three variants to
  timm's registry when timm is importable;
* under ``torch.onnx.export`` (either exporter) a fused model runs its reference path, which has
  an ONNX form: the edgevit ops have none, and the graph ONNX Runtime runs is the same network.

Fallback policy of the fused path
---------------------------------
Where the op cannot serve a call, ``GlobalSparseAttn`` runs the reference (official) path and
warns with ``warnings.warn(..., RuntimeWarning)`` naming the reason. The reasons are:
``edgevit_kernels`` failed to import; ``edgevit_kernels.ops.has_kernel_for(x.device)`` is False;
the kernel does not take the dtype (CPU: float32/float64, CUDA: float32/float16/bfloat16) or the
parameters' dtype differs from the input's; attention dropout is active (``training`` and
``attn_drop.p > 0``). ``proj_drop`` does not block fusion: it is applied to the op's output.

Each reason warns once per *model*: the modules of one ``EdgeVit`` share one record of the
reasons already warned about (a standalone ``GlobalSparseAttn`` has its own). Python's warning
filters apply on top of that (the default filter shows an identical message once per call site).
"""
from __future__ import annotations

import itertools
import warnings
import weakref
from functools import partial
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "Mlp", "CMlp", "DropPath", "drop_path", "GlobalSparseAttn", "LocalAgg", "SelfAttn",
    "LGLBlock", "PatchEmbed", "EdgeVit", "FeatureInfo", "edgevit_xxs", "edgevit_xs", "edgevit_s",
    "default_cfgs", "register_timm",
]


# ---------------------------------------------------------------------------------------------
# edgevit_kernels, imported lazily so that `import edgevit` works without it.

_UNSET = object()
_kernels_module = _UNSET
_kernels_error: Optional[str] = None


def _load_kernels():
    """The ``edgevit_kernels`` package, or None if it cannot be imported (tried once)."""
    global _kernels_module, _kernels_error
    if _kernels_module is _UNSET:
        try:
            import edgevit_kernels  # noqa: F401  (registers torch.ops.edgevit.*)
            import edgevit_kernels.ops

            _kernels_module = edgevit_kernels
        except Exception as e:  # ImportError, or a broken/ABI-mismatched extension
            _kernels_module = None
            _kernels_error = f"{type(e).__name__}: {e}"
    return _kernels_module


# dtypes the kernels take, by device type (the op itself checks again).
_KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
}


def _exporting_to_onnx() -> bool:
    """Whether ``torch.onnx.export`` is running. torch (2.13) sets the flag for the TorchScript
    exporter and, with ``dynamo=True``, around the whole export, its torch.export capture
    included (where ``is_compiling()`` is True too). Under torch.compile, where no ONNX export
    runs, it is not read, so that dynamo never traces into torch.onnx."""
    return ((torch.compiler.is_exporting() or not torch.compiler.is_compiling())
            and torch.onnx.is_in_onnx_export())


def _kernels_unavailable(x: Tensor, param_dtype: torch.dtype) -> Optional[str]:
    """None if edgevit_kernels has a kernel for x (device, dtype, the parameters' dtype), else
    the reason. Where this is not None the fused model runs exactly the reference path."""
    kernels = _load_kernels()
    if kernels is None:
        return f"edgevit_kernels could not be imported ({_kernels_error})"
    if not kernels.ops.has_kernel_for(x.device):
        return f"edgevit_kernels has no lgl_fused kernel for device type '{x.device.type}'"
    dtypes = _KERNEL_DTYPES.get(x.device.type)
    if dtypes is not None and x.dtype not in dtypes:
        return f"lgl_fused on '{x.device.type}' does not take dtype {x.dtype}"
    if param_dtype != x.dtype:
        return f"the input dtype ({x.dtype}) differs from the parameters' ({param_dtype})"
    return None


# Every EdgeVit by a number of its own, which a torch.compile graph holds to name its model in
# edgevit::plan_features (edgevit.inference). Copies and unpickled models get a new one, so a graph
# never runs a model it was not traced from; weak values, so a graph keeps no model alive.
_PLAN_MODELS: "weakref.WeakValueDictionary[int, nn.Module]" = weakref.WeakValueDictionary()
_PLAN_HANDLES = itertools.count(1)


def _register_plan_handle(model: nn.Module) -> None:
    model._plan_handle = next(_PLAN_HANDLES)
    _PLAN_MODELS[model._plan_handle] = model


# ---------------------------------------------------------------------------------------------
# Building blocks (official structure and parameter names).


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False,
              scale_by_keep: bool = True) -> Tensor:
    """Stochastic depth per sample (as timm's ``drop_path``)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    """Stochastic depth per sample, applied in the main path of residual blocks."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU,
                 drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.fc2(x)
        x = self.drop(x)
        return x


class CMlp(nn.Module):
    """Mlp with 1x1 convolutions, on [B, C, H, W] maps."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU,
                 drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.fc2(x)
        x = self.drop(x)
        return x


class GlobalSparseAttn(nn.Module):
    """EdgeViT's sparse global attention: sample (one token per r x r window) -> attend ->
    LocalProp (depthwise transposed conv) -> LayerNorm -> proj.

    With ``use_fused`` (an attribute; may be changed at any time) the forward is one call of
    ``torch.ops.edgevit.lgl_fused`` on this module's own parameters, followed by ``proj_drop``;
    where the op cannot serve the call it falls back to the reference path and warns once per
    reason (see the module docstring).
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0,
                 proj_drop=0.0, sr_ratio=1, use_fused: bool = False):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        self.sr = sr_ratio
        if self.sr > 1:
            self.sampler = nn.AvgPool2d(1, sr_ratio)
            kernel_size = sr_ratio
            self.LocalProp = nn.ConvTranspose2d(dim, dim, kernel_size, stride=sr_ratio, groups=dim)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sampler = nn.Identity()
            self.upsample = nn.Identity()
            self.norm = nn.Identity()

        self.use_fused = bool(use_fused)
        # Reasons already warned about; EdgeVit shares one set among all its modules.
        self._fallback_warned: set = set()

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, sr_ratio={self.sr}, use_fused={self.use_fused}"

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        # No ONNX exporter can translate edgevit::lgl_fused; the reference path is what it
        # computes, so the exported graph is the same network.
        if self.use_fused and not _exporting_to_onnx():
            reason = self._fused_unavailable(x)
            if reason is None:
                return self.proj_drop(self.forward_fused(x, H, W))
            self._warn_fallback(reason)
        return self.forward_reference(x, H, W)

    # -- reference path: the official forward, generalised to any H, W ------------------------
    def forward_reference(self, x: Tensor, H: int, W: int) -> Tensor:
        B, N, C = x.shape
        if self.sr > 1:
            x = x.transpose(1, 2).reshape(B, C, H, W)
            x = self.sampler(x)  # [B, C, ceil(H/r), ceil(W/r)]
            h, w = x.shape[-2], x.shape[-1]
            x = x.flatten(2).transpose(1, 2)

        qkv = self.qkv(x).reshape(B, -1, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]

        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)

        x = (attn @ v).transpose(1, 2).reshape(B, -1, C)

        if self.sr > 1:
            x = x.permute(0, 2, 1).reshape(B, C, h, w)
            x = self.LocalProp(x)[:, :, :H, :W]
            x = x.reshape(B, C, -1).permute(0, 2, 1)
            x = self.norm(x)

        x = self.proj(x)
        x = self.proj_drop(x)
        return x

    # -- fused path ------------------------------------------------------------------------------
    def forward_fused(self, x: Tensor, H: int, W: int) -> Tensor:
        """The op on this module's parameters (no dropout applied); the caller checks support."""
        weights, eps = self.op_weights()
        return torch.ops.edgevit.lgl_fused(x, int(H), int(W), int(self.num_heads), int(self.sr),
                                           float(self.scale), *weights[:6], eps, *weights[6:])

    def op_weights(self):
        """The op's weight arguments (qkv_w, qkv_b, prop_w, prop_b, norm_w, norm_b, proj_w,
        proj_b) and norm_eps."""
        if self.sr > 1:
            prop_w, prop_b = self.LocalProp.weight, self.LocalProp.bias
            norm_w, norm_b, eps = self.norm.weight, self.norm.bias, float(self.norm.eps)
        else:
            prop_w = prop_b = norm_w = norm_b = None
            eps = 1e-5  # unused when sr_ratio == 1
        return (self.qkv.weight, self.qkv.bias, prop_w, prop_b, norm_w, norm_b,
                self.proj.weight, self.proj.bias), eps

    def _fused_unavailable(self, x: Tensor) -> Optional[str]:
        """None if ``lgl_fused`` can serve this call, else the reason it cannot."""
        reason = _kernels_unavailable(x, self.qkv.weight.dtype)
        if reason is not None:
            return reason
        if self.training and self.attn_drop.p > 0:
            return "attention dropout is active (training with attn_drop > 0)"
        return None

    def _warn_fallback(self, reason: str) -> None:
        if reason in self._fallback_warned:
            return
        self._fallback_warned.add(reason)
        warnings.warn(
            f"edgevit GlobalSparseAttn(use_fused=True) runs the unfused reference path: {reason}. "
            "(Warned once per model and reason.)",
            RuntimeWarning,
            stacklevel=3,
        )


class LocalAgg(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.mlp = CMlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class SelfAttn(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 sr_ratio=1, use_fused: bool = False):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = norm_layer(dim)
        self.attn = GlobalSparseAttn(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
            attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio, use_fused=use_fused)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.pos_embed(x)
        B, N, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        # [B, H*W, C] tokens -> [B, C, H, W] as a view (channels_last strides, also when B = 1)
        # instead of the official copy into contiguous memory: the same values.
        x = x.reshape(B, H, W, N).permute(0, 3, 1, 2)
        return x


class LGLBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 sr_ratio=1, use_fused: bool = False):
        super().__init__()
        if sr_ratio > 1:
            self.LocalAgg = LocalAgg(dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop,
                                     attn_drop, drop_path, act_layer, norm_layer)
        else:
            self.LocalAgg = nn.Identity()
        self.SelfAttn = SelfAttn(dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                                 drop_path, act_layer, norm_layer, sr_ratio, use_fused=use_fused)

    def forward(self, x):
        x = self.LocalAgg(x)
        x = self.SelfAttn(x)
        return x


class PatchEmbed(nn.Module):
    """Image to patch embedding: Conv2d(kernel = stride = patch_size) -> LayerNorm.

    Takes any input size (the official image-size assert is dropped); the output map is
    ``floor(H / patch) x floor(W / patch)``.
    """

    def __init__(self, img_size=None, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        self.patch_size = patch_size
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        # The output keeps the input's memory format (channels_last maps stay channels_last);
        # the LayerNorm over channels runs on the [B, H, W, C] view (no copy when channels_last).
        fmt = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
               and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        x = self.proj(x)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=fmt)


# ---------------------------------------------------------------------------------------------
# The network.

_NUM_STAGES = 4
_GLOBAL_POOLS = ("avg", "")  # timm's names: average pooling, or none (forward_head gets the map)


class FeatureInfo:
    """What a backbone's outputs are, as timm exposes it: one dict per output with ``num_chs``,
    ``reduction`` (the input's size over the map's, up to flooring) and ``module`` (the module
    whose output it is); ``channels()``, ``reduction()``, ``module_name()`` give one field for
    all outputs (or for output ``idx``). Iterating or indexing gives the dicts."""

    def __init__(self, info: Sequence[dict], out_indices: Sequence[int]):
        self.out_indices = tuple(out_indices)
        self.info = [dict(info[i]) for i in self.out_indices]

    def get(self, key: str, idx: Optional[int] = None):
        return [d[key] for d in self.info] if idx is None else self.info[idx][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Optional[int] = None):
        pick = (lambda d: dict(d)) if keys is None else (lambda d: {k: d[k] for k in keys})
        return [pick(d) for d in self.info] if idx is None else pick(self.info[idx])

    def channels(self, idx: Optional[int] = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: Optional[int] = None):
        return self.get("reduction", idx)

    def module_name(self, idx: Optional[int] = None):
        return self.get("module", idx)

    def __getitem__(self, idx):
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self):
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"


def _normalize_out_indices(out_indices) -> tuple:
    if isinstance(out_indices, int):
        # timm's meaning of an int: the last n stages.
        if not 1 <= out_indices <= _NUM_STAGES:
            raise ValueError(f"out_indices: an int n means the last n of the {_NUM_STAGES} "
                             f"stages, so 1..{_NUM_STAGES}; got {out_indices}")
        return tuple(range(_NUM_STAGES - out_indices, _NUM_STAGES))
    try:
        indices = [int(i) for i in out_indices]
    except TypeError:
        raise TypeError(f"out_indices: expected a sequence of stage indices, got "
                        f"{type(out_indices).__name__}") from None
    bad = [i for i in indices if not -_NUM_STAGES <= i < _NUM_STAGES]
    if bad or not indices:
        raise ValueError(f"out_indices: expected stage indices in -{_NUM_STAGES}..{_NUM_STAGES - 1} "
                         f"(EdgeViT has {_NUM_STAGES} stages), got {tuple(out_indices)}")
    indices = [i % _NUM_STAGES for i in indices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"out_indices: expected distinct stages, got {tuple(out_indices)}")
    return tuple(indices)


class EdgeVit(nn.Module):
    """EdgeViT: four stages of (PatchEmbed, LGL blocks), BatchNorm, global average pool, head.

    ``use_fused`` selects the fused ``lgl_fused`` op in every ``GlobalSparseAttn``; change it
    later with ``set_fused``. Input maps of any size >= 32 x 32 work. With ``use_fused``, eval
    mode, CPU and no autograd, ``forward`` runs the model's inference plan (see
    ``edgevit.inference``); anywhere else it runs the module tree.

    ``features_only=True`` makes it a backbone (timm's convention): no final BatchNorm or head,
    and ``forward`` returns the list of the stage outputs picked by ``out_indices``, described by
    ``feature_info``. ``drop_rate`` is the official code's dropout (after the first patch
    embedding and inside the blocks); timm's ``create_model`` passes it under the same name.
    """

    def __init__(self, depth=(1, 2, 5, 3), img_size=224, in_chans=3, num_classes=1000,
                 embed_dim=(48, 96, 240, 384), head_dim=64,
                 mlp_ratio: Union[float, Sequence[float]] = 4.0, qkv_bias=True, qk_scale=None,
                 representation_size=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=None, sr_ratios=(4, 2, 2, 1), use_fused: bool = False,
                 global_pool: str = "avg", features_only: bool = False,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3)):
        super().__init__()
        if representation_size:
            raise NotImplementedError("representation_size (pre-logits layer) is not supported")
        depth, embed_dim, sr_ratios = list(depth), list(embed_dim), list(sr_ratios)
        for arg, value in (("depth", depth), ("embed_dim", embed_dim), ("sr_ratios", sr_ratios)):
            if len(value) != _NUM_STAGES:
                raise ValueError(f"{arg}: expected {_NUM_STAGES} values (one per stage), got {value}")
        if isinstance(mlp_ratio, (int, float)):
            mlp_ratio = [mlp_ratio] * 4
        mlp_ratio = list(mlp_ratio)
        self.num_classes = num_classes
        self.embed_dims = embed_dim
        # timm's names for the width the head sees (an int): pooled features, pre-logits.
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.global_pool = self._check_global_pool(global_pool, num_classes)
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)

        self.patch_embed1 = PatchEmbed(img_size, patch_size=4, in_chans=in_chans, embed_dim=embed_dim[0])
        self.patch_embed2 = PatchEmbed(img_size, patch_size=2, in_chans=embed_dim[0], embed_dim=embed_dim[1])
        self.patch_embed3 = PatchEmbed(img_size, patch_size=2, in_chans=embed_dim[1], embed_dim=embed_dim[2])
        self.patch_embed4 = PatchEmbed(img_size, patch_size=2, in_chans=embed_dim[2], embed_dim=embed_dim[3])

        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depth))]
        num_heads = [dim // head_dim for dim in embed_dim]

        def stage(i):
            start = sum(depth[:i])
            return nn.ModuleList([
                LGLBlock(dim=embed_dim[i], num_heads=num_heads[i], mlp_ratio=mlp_ratio[i],
                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                         attn_drop=attn_drop_rate, drop_path=dpr[start + j], norm_layer=norm_layer,
                         sr_ratio=sr_ratios[i], use_fused=use_fused)
                for j in range(depth[i])])

        self.blocks1 = stage(0)
        self.blocks2 = stage(1)
        self.blocks3 = stage(2)
        self.blocks4 = stage(3)
        self.norm = nn.BatchNorm2d(embed_dim[-1])
        self.pre_logits = nn.Identity()
        self.head = nn.Linear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()

        # The stage outputs are the last blocks' outputs; patch sizes 4, 2, 2, 2.
        self.feature_info = FeatureInfo(
            [dict(num_chs=embed_dim[i], reduction=4 * 2 ** i, module=f"blocks{i + 1}.{depth[i] - 1}")
             for i in range(_NUM_STAGES)], range(_NUM_STAGES))
        self.features_only = False

        self.apply(self._init_weights)
        self._inference_plan = None  # built on the first call it can serve (edgevit.inference)
        _register_plan_handle(self)
        self.set_fused(use_fused)
        if features_only:
            self._to_backbone(out_indices)

    @staticmethod
    def _check_global_pool(global_pool, num_classes) -> str:
        if global_pool not in _GLOBAL_POOLS:
            raise ValueError(f"global_pool: expected one of {_GLOBAL_POOLS} ('avg': average "
                             f"pooling, '': none), got {global_pool!r}")
        if global_pool == "" and num_classes > 0:
            raise ValueError(f"global_pool='' (no pooling) needs num_classes=0: the head is a "
                             f"Linear on pooled features; got num_classes={num_classes}")
        return global_pool

    def _to_backbone(self, out_indices) -> None:
        """timm's features_only: the stage outputs in ``out_indices`` are the output; the final
        BatchNorm and the head, which no stage output passes through, are dropped."""
        self.out_indices = _normalize_out_indices(out_indices)
        self.feature_info = FeatureInfo(list(self.feature_info), self.out_indices)
        self.features_only = True
        self.num_classes = 0
        self.norm = nn.Identity()
        self.head = nn.Identity()

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def set_fused(self, enabled: bool = True) -> "EdgeVit":
        """Switch every ``GlobalSparseAttn`` to (or from) the fused op; returns ``self``.

        Parameters and ``state_dict`` are unchanged. The modules share one record of the
        fallback reasons already warned about, so each reason warns once per model."""
        self.use_fused = bool(enabled)
        warned: set = set()
        for m in self.modules():
            if isinstance(m, GlobalSparseAttn):
                m.use_fused = self.use_fused
                m._fallback_warned = warned
        return self

    def train(self, mode: bool = True):
        self._inference_plan = None  # train() and eval() rebuild the plan on its next use
        return super().train(mode)

    def __getstate__(self):
        # The plan (packed weights, as large as the parameters) is rebuilt on first use, so
        # pickles and deep copies leave it out.
        state = super().__getstate__()
        state["_inference_plan"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        _register_plan_handle(self)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """The parameters that should have no weight decay: every bias and every norm's scale
        (all the 1-D parameters; the official code named ``pos_embed`` and ``cls_token``, which
        this network does not have)."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new, freshly initialised head for ``num_classes`` (0: none, ``forward`` then gives
        the pooled features); ``global_pool`` ('avg' or '') when given."""
        if self.features_only:
            raise RuntimeError("reset_classifier: a features_only model has no classifier")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes: expected an int >= 0, got {num_classes!r}")
        pool = self.global_pool if global_pool is None else global_pool
        self.global_pool = self._check_global_pool(pool, num_classes)
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head = head.to(self.norm.weight) if isinstance(head, nn.Linear) else head
        self._init_weights(self.head)

    def forward_features(self, x, return_stages: bool = False):
        """[B, 3, H, W] -> the final feature map [B, C4, H/32, W/32] after BatchNorm; with
        ``return_stages=True``, the list of the four stage outputs (before that BatchNorm) of
        sizes H/4, H/8, H/16 and H/32, for detection and segmentation backbones."""
        # ONNX export traces the module tree: the plan's ops have no ONNX form. Under
        # torch.compile the plan runs as one op of the graph, edgevit::plan_features, where the
        # model and input allow it. (edgevit.inference imports this module.)
        if self.use_fused and not _exporting_to_onnx():
            from .inference import compiled_features, run_features

            run = compiled_features if torch.compiler.is_compiling() else run_features
            out = run(self, x, return_stages)
            if out is not None:
                return out
        stages = []
        x = self.pos_drop(self.patch_embed1(x))
        for embed, blocks in ((None, self.blocks1), (self.patch_embed2, self.blocks2),
                              (self.patch_embed3, self.blocks3), (self.patch_embed4, self.blocks4)):
            if embed is not None:
                x = embed(x)
            for blk in blocks:
                x = blk(x)
            stages.append(x)
        if return_stages:
            return stages
        x = self.norm(x)
        x = self.pre_logits(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The final feature map -> logits; with ``pre_logits=True`` the pooled features
        [B, num_features] (the map itself when ``global_pool`` is '')."""
        if self.global_pool == "avg":
            x = x.flatten(2).mean(-1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        if self.features_only:
            stages = self.forward_features(x, return_stages=True)
            return [stages[i] for i in self.out_indices]
        if self.use_fused and not _exporting_to_onnx():
            from .inference import compiled_logits, run_logits  # (it imports this module)

            out = (compiled_logits if torch.compiler.is_compiling() else run_logits)(self, x)
            if out is not None:
                return out
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------
# Variants (official configurations) and their pretrained_cfg, as timm's models carry it. No
# pretrained weights are downloaded: pass ``pretrained=path`` or use ``edgevit.load_checkpoint``.

_CONFIGS = {
    "edgevit_xxs": dict(depth=[1, 1, 3, 2], embed_dim=[36, 72, 144, 288], head_dim=36),
    "edgevit_xs": dict(depth=[1, 1, 3, 1], embed_dim=[48, 96, 240, 384], head_dim=48),
    "edgevit_s": dict(depth=[1, 2, 5, 3], embed_dim=[48, 96, 240, 384], head_dim=48),
}


def _cfg(**kwargs) -> dict:
    """The official evaluation transform (saic-fi/edgevit ``src/datasets.py``): resize to
    256/224 of the crop with bicubic interpolation, centre crop, ImageNet mean and std."""
    return dict(input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                num_classes=1000, first_conv="patch_embed1.proj", classifier="head",
                fixed_input_size=False, license="apache-2.0", **kwargs)


default_cfgs = {name: _cfg() for name in _CONFIGS}

# What timm's create_model passes that configures no part of this network (nothing is
# downloaded, so no cache).
_TIMM_ONLY_KWARGS = ("cache_dir",)


def _create(name: str, use_fused: bool, pretrained, kwargs) -> EdgeVit:
    """``pretrained``: False, or the path of a checkpoint to load (``edgevit.load_checkpoint``,
    strict). Nothing is downloaded. Takes the keyword arguments timm's ``create_model`` passes:
    ``pretrained_cfg`` (a dict merged over the default one), ``drop_block_rate`` (EdgeViT has no
    DropBlock, so only None or 0), ``pretrained_cfg_overlay`` (merged over that) and
    ``cache_dir`` (unused)."""
    if pretrained is True:
        raise ValueError(f"{name}: pretrained=True, but no weights are downloaded; pass "
                         "pretrained='path/to/checkpoint.pth' or use edgevit.load_checkpoint")
    drop_block_rate = kwargs.pop("drop_block_rate", None)
    if drop_block_rate not in (None, 0, 0.0):
        raise ValueError(f"{name}: drop_block_rate must be None or 0 (EdgeViT has no DropBlock), "
                         f"got {drop_block_rate!r}")
    cfg_in = kwargs.pop("pretrained_cfg", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None)
    for k in _TIMM_ONLY_KWARGS:
        kwargs.pop(k, None)
    pretrained_cfg = dict(default_cfgs[name])
    for extra, arg in ((cfg_in, "pretrained_cfg"), (overlay, "pretrained_cfg_overlay")):
        if extra is None:
            continue
        if hasattr(extra, "to_dict"):  # timm's PretrainedCfg
            extra = extra.to_dict()
        if not isinstance(extra, Mapping):
            raise TypeError(f"{name}: {arg} must be a dict, got {type(extra).__name__}")
        pretrained_cfg.update({k: v for k, v in extra.items() if v is not None})
    cfg = dict(_CONFIGS[name], mlp_ratio=[4] * 4, qkv_bias=True,
               norm_layer=partial(nn.LayerNorm, eps=1e-6), sr_ratios=[4, 2, 2, 1])
    cfg.update(kwargs)
    model = EdgeVit(use_fused=use_fused, **cfg)
    # As in timm, this describes the weights' training (their classes and input), whatever head
    # or input channels this model was built with.
    pretrained_cfg["architecture"] = name
    model.pretrained_cfg = model.default_cfg = pretrained_cfg
    if pretrained:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, pretrained)
    return model


def edgevit_xxs(use_fused: bool = False, pretrained=False, **kwargs) -> EdgeVit:
    """EdgeViT-XXS: depth [1, 1, 3, 2], dims [36, 72, 144, 288], head_dim 36 (4.07 M parameters)."""
    return _create("edgevit_xxs", use_fused, pretrained, kwargs)


def edgevit_xs(use_fused: bool = False, pretrained=False, **kwargs) -> EdgeVit:
    """EdgeViT-XS: depth [1, 1, 3, 1], dims [48, 96, 240, 384], head_dim 48 (6.77 M parameters)."""
    return _create("edgevit_xs", use_fused, pretrained, kwargs)


def edgevit_s(use_fused: bool = False, pretrained=False, **kwargs) -> EdgeVit:
    """EdgeViT-S: depth [1, 2, 5, 3], dims [48, 96, 240, 384], head_dim 48 (13.11 M parameters
    with the official code's configuration)."""
    return _create("edgevit_s", use_fused, pretrained, kwargs)


def register_timm() -> bool:
    """Add ``edgevit_xxs``, ``edgevit_xs`` and ``edgevit_s`` (with their ``default_cfgs``) to
    timm's registry, so that ``timm.create_model('edgevit_xs', use_fused=True)`` builds them.
    Returns False, registering nothing, when timm cannot be imported. Idempotent. ``import
    edgevit`` calls it when timm is already imported; it never imports timm by itself."""
    try:
        from timm.models import is_model, register_model
    except Exception:  # ImportError, or a timm whose own imports fail (e.g. no torchvision)
        return False
    from timm.models import model_entrypoint

    for fn in (edgevit_xxs, edgevit_xs, edgevit_s):
        # timm warns when a name is registered again; registering only what is not ours keeps
        # repeated calls quiet.
        if not is_model(fn.__name__) or model_entrypoint(fn.__name__) is not fn:
            register_model(fn)  # reads default_cfgs from this module
    return True
