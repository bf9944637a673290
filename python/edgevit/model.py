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
* ``forward_features(x, return_stages=True)`` returns the four stage outputs (backbone use).

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
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "Mlp", "CMlp", "DropPath", "drop_path", "GlobalSparseAttn", "LocalAgg", "SelfAttn",
    "LGLBlock", "PatchEmbed", "EdgeVit", "edgevit_xxs", "edgevit_xs", "edgevit_s",
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
        if self.use_fused:
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


class EdgeVit(nn.Module):
    """EdgeViT: four stages of (PatchEmbed, LGL blocks), BatchNorm, global average pool, head.

    ``use_fused`` selects the fused ``lgl_fused`` op in every ``GlobalSparseAttn``; change it
    later with ``set_fused``. Input maps of any size >= 32 x 32 work. With ``use_fused``, eval
    mode, CPU and no autograd, ``forward`` runs the model's inference plan (see
    ``edgevit.inference``); anywhere else it runs the module tree.
    """

    def __init__(self, depth=(1, 2, 5, 3), img_size=224, in_chans=3, num_classes=1000,
                 embed_dim=(48, 96, 240, 384), head_dim=64,
                 mlp_ratio: Union[float, Sequence[float]] = 4.0, qkv_bias=True, qk_scale=None,
                 representation_size=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=None, sr_ratios=(4, 2, 2, 1), use_fused: bool = False):
        super().__init__()
        if representation_size:
            raise NotImplementedError("representation_size (pre-logits layer) is not supported")
        depth, embed_dim, sr_ratios = list(depth), list(embed_dim), list(sr_ratios)
        if isinstance(mlp_ratio, (int, float)):
            mlp_ratio = [mlp_ratio] * 4
        mlp_ratio = list(mlp_ratio)
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
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

        self.apply(self._init_weights)
        self._inference_plan = None  # built on the first call it can serve (edgevit.inference)
        _register_plan_handle(self)
        self.set_fused(use_fused)

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
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=""):
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x, return_stages: bool = False):
        """[B, 3, H, W] -> the final feature map [B, C4, H/32, W/32] after BatchNorm; with
        ``return_stages=True``, the list of the four stage outputs (before that BatchNorm) of
        sizes H/4, H/8, H/16 and H/32, for detection and segmentation backbones."""
        if self.use_fused:
            # (edgevit.inference imports this module.) Under torch.compile the plan runs as one
            # op of the graph, edgevit::plan_features, where the model and input allow it.
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

    def forward(self, x):
        x = self.forward_features(x)
        x = x.flatten(2).mean(-1)
        x = self.head(x)
        return x


# ---------------------------------------------------------------------------------------------
# Variants (official configurations). No pretrained weights are downloaded: load an official
# checkpoint with ``model.load_state_dict(torch.load(path)["model"], strict=True)``.

_CONFIGS = {
    "edgevit_xxs": dict(depth=[1, 1, 3, 2], embed_dim=[36, 72, 144, 288], head_dim=36),
    "edgevit_xs": dict(depth=[1, 1, 3, 1], embed_dim=[48, 96, 240, 384], head_dim=48),
    "edgevit_s": dict(depth=[1, 2, 5, 3], embed_dim=[48, 96, 240, 384], head_dim=48),
}


def _create(name: str, use_fused: bool, pretrained, kwargs) -> EdgeVit:
    """``pretrained``: False, or the path of a checkpoint to load (``edgevit.load_checkpoint``,
    strict). Nothing is downloaded. ``drop_block_rate`` is taken for timm's ``create_model``,
    which passes it: EdgeViT has no DropBlock, so only None is accepted."""
    if pretrained is True:
        raise ValueError(f"{name}: pretrained=True, but no weights are downloaded; pass "
                         "pretrained='path/to/checkpoint.pth' or use edgevit.load_checkpoint")
    drop_block_rate = kwargs.pop("drop_block_rate", None)
    if drop_block_rate is not None:
        raise ValueError(f"{name}: drop_block_rate must be None (EdgeViT has no DropBlock), "
                         f"got {drop_block_rate!r}")
    cfg = dict(_CONFIGS[name], mlp_ratio=[4] * 4, qkv_bias=True,
               norm_layer=partial(nn.LayerNorm, eps=1e-6), sr_ratios=[4, 2, 2, 1])
    cfg.update(kwargs)
    model = EdgeVit(use_fused=use_fused, **cfg)
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
