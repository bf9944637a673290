"""EdgeViT (Pan et al., ECCV 2022) in plain PyTorch, with an optional fused LGL attention.

Module by module this follows the official implementation (saic-fi/edgevit, ``src/edgevit.py``),
so ``state_dict()`` keys are identical and official checkpoints load with ``strict=True``.
Differences from the official code, none of which touches the parameters:

* no timm: ``DropPath`` and the weight init are implemented here;
* ``PatchEmbed`` has no image-size assert, and ``GlobalSparseAttn`` works for any ``H, W >= 1``:
  the sampled map is ``ceil(H/r) x ceil(W/r)`` (exactly what ``AvgPool2d(1, r)`` gives) and the
  ``LocalProp`` output is cropped back to ``H x W`` before the norm. When ``r`` divides the map
  this is the official computation; so any input of at least 32 x 32 works, square or not;
* ``use_fused``: ``GlobalSparseAttn`` can run as one call of ``torch.ops.edgevit.lgl_fused``
  (package ``edgevit_kernels``) on its own parameters. See ``GlobalSparseAttn``. In eval mode on
  CPU without autograd, ``use_fused`` runs the whole network on the edgevit CPU ops: maps stay
  channels_last (the attention blocks' token layout is then a view, no transposes); PatchEmbed is
  ``patch_embed``; positional encodings and LocalAgg's 5x5 are ``dwconv``; LocalAgg's 1x1
  convolutions are ``linear_fused`` with its BatchNorms folded in; every MLP is ``mlp_fused``
  (BatchNorm / LayerNorm folded into fc1, residual fused); SelfAttn's ``x + attn(norm1(x))`` is
  one ``lgl_fused_prepared`` call (norm1 folded into qkv, residual fused). Folded and packed
  weights are cached per module (rebuilt when a parameter or running statistic changes, dropped
  by ``train()``, never in the ``state_dict``); ``EdgeVit`` runs these op calls as one flat list
  checked once per call (``_EvalPlan``; the module tree runs instead while any module has a
  forward hook); the logits equal the reference path's up to float rounding (~1e-5 seen);
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

import operator
import warnings
from functools import partial
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules import module as _torch_module

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


def _tensor_key(tensors) -> Optional[tuple]:
    """A key that changes whenever one of ``tensors`` changes in place (version counter), is
    replaced (identity) or moves (data pointer); None if one is an inference tensor (those have
    no version counter). None entries are allowed."""
    key = []
    for t in tensors:
        if t is None:
            key.append(None)
            continue
        if t.is_inference():
            return None
        key.append((id(t), t.data_ptr(), t._version))
    return tuple(key)


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


def _eval_fast_path(module: nn.Module, x: Tensor, params) -> bool:
    """Whether the eval-only fast path (prepared / folded weights, cached) may serve this call:
    eval mode, CPU, no gradient needed, not being traced by torch.compile."""
    if module.training or x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and (
        x.requires_grad or any(p is not None and p.requires_grad for p in params)))


def _global_module_hooks() -> bool:
    """Whether global forward hooks or pre-hooks are registered for all modules
    (``nn.modules.module.register_module_forward_hook`` and friends)."""
    return bool(_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks)


def _eval_cached(module: nn.Module, slot: str, params, x: Tensor, build):
    """``build()`` (eval-time derived weights: folded, packed), cached in ``module.<slot>`` as
    ``(key, value)``; the key is the kernels' ISA, ``x``'s dtype and ``_tensor_key(params)``, so
    in-place changes, replaced tensors and ISA switches rebuild it. Built uncached when a
    parameter is an inference tensor (no version counter)."""
    key = _tensor_key(params)
    if key is None:
        return build()
    key = (_load_kernels().cpu_isa(), x.dtype, key)
    cached = getattr(module, slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = build()
    setattr(module, slot, (key, value))
    return value


def _pos_embed_residual(conv: nn.Conv2d, x: Tensor, fused: bool) -> Tensor:
    """x + conv(x) for a depthwise 'same' convolution (EdgeViT's positional encodings and
    LocalAgg's 5x5 aggregation without the residual go through ``_dwconv``)."""
    if fused:
        return torch.ops.edgevit.dwconv(x, conv.weight, conv.bias, True)
    return x + conv(x)


def _is_exact_gelu(act: nn.Module) -> bool:
    """Whether act is the activation mlp_fused computes (nn.GELU with the exact erf form)."""
    return isinstance(act, nn.GELU) and act.approximate == "none"


def _fold_bn_into_1x1(bn: nn.BatchNorm2d, conv: nn.Conv2d):
    """conv(bn(x)) for an eval-mode BatchNorm followed by a 1x1 convolution, as one affine map on
    channels: returns (weight [out, in], bias [out]) of the equivalent Linear."""
    s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    t = bn.bias - bn.running_mean * s
    w = conv.weight.flatten(1)  # [out, in]
    b = conv.bias if conv.bias is not None else torch.zeros_like(w[:, 0])
    return (w * s).contiguous(), b + w @ t


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
        # (key, lgl_prepare output) of the last CPU eval-mode call (see forward_fused).
        self._prepared = None

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, sr_ratio={self.sr}, use_fused={self.use_fused}"

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

    def _op_weights(self):
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

    def _prepared_weights(self, weights, x: Tensor, pre_norm: Optional[nn.LayerNorm]) -> Tensor:
        """The ``lgl_prepare`` of this module's weights (and of ``pre_norm``'s affine, folded
        into qkv) for CPU inference, cached (see _eval_cached). Never traced by torch.compile:
        forward_fused does not call it while compiling."""
        params = [w for w in weights if w is not None]
        extra = ()
        if pre_norm is not None:
            extra = (True, pre_norm.weight, pre_norm.bias)
            params += [pre_norm.weight, pre_norm.bias]
        return _eval_cached(self, "_prepared", params, x,
                            lambda: _load_kernels().lgl_prepare(*weights, int(self.sr), *extra))

    def train(self, mode: bool = True):
        self._prepared = None  # rebuilt on the next eval-mode call
        return super().train(mode)

    def forward_fused(self, x: Tensor, H: int, W: int, pre_norm: Optional[nn.LayerNorm] = None,
                      residual: bool = False) -> Tensor:
        """The op on this module's parameters (no dropout applied); the caller checks support.
        With ``pre_norm`` (a LayerNorm over C) and ``residual`` it is
        ``[x +] op(pre_norm(x))``: SelfAttn's ``x + attn(norm1(x))``, one
        ``lgl_fused_prepared`` call on the eval fast path.

        In eval mode on CPU, when no gradient is needed, the weights are prepared once
        (``lgl_prepare``: packed and folded for the CPU kernels) and reused by
        ``lgl_fused_prepared`` while they do not change: they are keyed by each parameter's
        version counter, so in-place updates (optimizer steps, ``load_state_dict``,
        ``torch.no_grad()`` edits) rebuild them; writes through ``.data``, which PyTorch does
        not version, are not seen (call ``train()`` or ``eval()`` to drop the cache). The
        prepared tensor is a plain attribute, never in the ``state_dict``. Anywhere else (training,
        autograd, CUDA, under ``torch.compile``) the forward is one ``lgl_fused`` call."""
        weights, eps = self._op_weights()
        r = int(self.sr)
        norm_params = [] if pre_norm is None else [pre_norm.weight, pre_norm.bias]
        if _eval_fast_path(self, x, list(weights) + norm_params):
            return self.forward_prepared(x, H, W, self._prepared_weights(weights, x, pre_norm),
                                         pre_norm, residual)
        out = torch.ops.edgevit.lgl_fused(
            pre_norm(x) if pre_norm is not None else x, int(H), int(W), int(self.num_heads), r,
            float(self.scale), *weights[:6], eps, *weights[6:])
        return x + out if residual else out

    def forward_prepared(self, x: Tensor, H: int, W: int, prepared: Tensor,
                         pre_norm: Optional[nn.LayerNorm] = None, residual: bool = False) -> Tensor:
        """``[x +] op(pre_norm(x))`` as one ``lgl_fused_prepared`` call on ``prepared`` (what
        ``_prepared_weights`` returns for the same ``pre_norm``); no checks: the eval fast path."""
        eps = float(self.norm.eps) if self.sr > 1 else 1e-5  # (unused when sr_ratio == 1)
        pre_eps = float(pre_norm.eps) if pre_norm is not None else 1e-5
        return torch.ops.edgevit.lgl_fused_prepared(
            x, int(H), int(W), int(self.num_heads), int(self.sr), float(self.scale), eps,
            prepared, pre_eps, residual)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        if self.use_fused:
            reason = self._fused_unavailable(x)
            if reason is None:
                return self.proj_drop(self.forward_fused(x, H, W))
            self._warn_fallback(reason)
        return self.forward_reference(x, H, W)


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

        # Eval fast path (EdgeVit.set_fused turns it on with the fused op): both BatchNorms folded
        # into the 1x1 convolutions after them, and the 1x1 convolutions run as Linear on the
        # [B, H, W, C] view of the map (no copy when the map is channels_last, as the fused model
        # keeps it). The folded weights are cached: (key, weights), see _folded.
        self.fold_eval = False
        self._folded = None

    def train(self, mode: bool = True):
        self._folded = None  # rebuilt on the next eval-mode call
        return super().train(mode)

    def _fold_params(self):
        return [self.norm1.weight, self.norm1.bias, self.norm1.running_mean, self.norm1.running_var,
                self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias,
                self.norm2.weight, self.norm2.bias, self.norm2.running_mean, self.norm2.running_var,
                self.mlp.fc1.weight, self.mlp.fc1.bias, self.mlp.fc2.weight, self.mlp.fc2.bias]

    def _folded_weights(self, params, x):
        """The linear_prepare buffers of conv1 (norm1 folded in) and conv2, and the mlp_prepare
        buffer of the MLP (norm2 folded into fc1); cached, see _eval_cached."""
        def build():
            kernels = _load_kernels()
            with torch.no_grad():
                w1, b1 = _fold_bn_into_1x1(self.norm1, self.conv1)
                wf1, bf1 = _fold_bn_into_1x1(self.norm2, self.mlp.fc1)
                return (kernels.linear_prepare(w1, b1),
                        kernels.linear_prepare(self.conv2.weight.flatten(1), self.conv2.bias),
                        kernels.mlp_prepare(wf1, bf1, self.mlp.fc2.weight.flatten(1),
                                            self.mlp.fc2.bias))
        return _eval_cached(self, "_folded", params, x, build)

    def forward(self, x):
        params = self._fold_params()
        if (self.fold_eval and _is_exact_gelu(self.mlp.act) and _eval_fast_path(self, x, params)
                and _kernels_unavailable(x, self.conv1.weight.dtype) is None):
            return self.forward_folded(x, self._folded_weights(params, x))
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def forward_folded(self, x, folded):
        """The eval-mode forward on the edgevit CPU ops, with the BatchNorms folded; the same
        map up to rounding. x is channels_last, so its [B, H, W, C] view is contiguous and every
        step reads and writes it without copies."""
        conv1, conv2, mlp = folded
        C = x.shape[1]
        x = _pos_embed_residual(self.pos_embed, x, True)  # x + dwconv3x3(x), one edgevit::dwconv
        xt = x.permute(0, 2, 3, 1)
        u = torch.ops.edgevit.linear_fused_prepared(xt, conv1, C, None)  # BN + conv1
        u = torch.ops.edgevit.dwconv(u.permute(0, 3, 1, 2), self.attn.weight, self.attn.bias,
                                     False)  # dwconv5x5
        xt = torch.ops.edgevit.linear_fused_prepared(u.permute(0, 2, 3, 1), conv2, C, xt)  # x + conv2
        # x + fc2(GELU(fc1(BN(x)))), BN folded into fc1
        return torch.ops.edgevit.mlp_fused_prepared(xt, mlp, 0.0, True).permute(0, 3, 1, 2)


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
        # Eval fast path (EdgeVit.set_fused): norm1 + attention + residual as one
        # edgevit::lgl_fused_prepared call (norm1's affine folded into qkv; cached by the attn
        # module), and norm2 + MLP + residual as one edgevit::mlp_fused call on weights
        # prepared once and cached in _mlp_prepared (see _eval_cached).
        self.fuse_eval = False
        self._mlp_prepared = None

    def train(self, mode: bool = True):
        self._mlp_prepared = None  # rebuilt on the next eval-mode call
        return super().train(mode)

    def _mlp_params(self):
        return [self.norm2.weight, self.norm2.bias, self.mlp.fc1.weight, self.mlp.fc1.bias,
                self.mlp.fc2.weight, self.mlp.fc2.bias]

    def _eval_fused(self, x: Tensor) -> bool:
        """Whether the eval fast path (the edgevit CPU ops on cached weights) serves this call."""
        return (self.fuse_eval and _eval_fast_path(self, x, self.parameters())
                and _kernels_unavailable(x, self.mlp.fc1.weight.dtype) is None)

    def _mlp_prepared_weights(self, x: Tensor) -> Tensor:
        """The mlp_prepare buffer of norm2 (folded into fc1) + the MLP; cached (_eval_cached)."""
        return _eval_cached(self, "_mlp_prepared", self._mlp_params(), x,
                            lambda: _load_kernels().mlp_prepare(
                                self.mlp.fc1.weight, self.mlp.fc1.bias, self.mlp.fc2.weight,
                                self.mlp.fc2.bias, True, self.norm2.weight, self.norm2.bias))

    def _fused_mlp(self, x: Tensor) -> Optional[Tensor]:
        """x + mlp(norm2(x)) by edgevit::mlp_fused_prepared, or None where the eval fast path
        does not apply (then the caller runs the modules)."""
        if (not isinstance(self.norm2, nn.LayerNorm) or not _is_exact_gelu(self.mlp.act)
                or not self._eval_fused(x)):
            return None
        return torch.ops.edgevit.mlp_fused_prepared(x, self._mlp_prepared_weights(x),
                                                    float(self.norm2.eps), True)

    def _fully_fusable(self) -> bool:
        """Whether every step of this block has an edgevit op on the eval fast path (the
        configuration part of the checks; EdgeVit's eval plan needs it)."""
        return (self.fuse_eval and self.attn.use_fused and isinstance(self.norm1, nn.LayerNorm)
                and isinstance(self.norm2, nn.LayerNorm) and _is_exact_gelu(self.mlp.act))

    def forward_prepared(self, x: Tensor, attn_prepared: Tensor, mlp_prepared: Tensor) -> Tensor:
        """The eval fast path on prepared weights, no checks: dwconv (x + pos_embed(x)), one
        lgl_fused_prepared (x + attn(norm1(x))), one mlp_fused_prepared (x + mlp(norm2(x))).
        x is a channels_last map, and so is the result."""
        x = torch.ops.edgevit.dwconv(x, self.pos_embed.weight, self.pos_embed.bias, True)
        B, N, H, W = x.shape
        t = self.attn.forward_prepared(x.flatten(2).transpose(1, 2), H, W, attn_prepared,
                                       self.norm1, True)
        t = torch.ops.edgevit.mlp_fused_prepared(t, mlp_prepared, float(self.norm2.eps), True)
        return t.reshape(B, H, W, N).permute(0, 3, 1, 2)

    def _fused_attn(self, x: Tensor, H: int, W: int) -> Optional[Tensor]:
        """x + attn(norm1(x)) as one edgevit::lgl_fused_prepared call (norm1 folded in), or None
        where the eval fast path does not apply."""
        attn = self.attn
        if (not attn.use_fused or not isinstance(self.norm1, nn.LayerNorm)
                or not self._eval_fused(x) or attn._fused_unavailable(x) is not None):
            return None
        return attn.forward_fused(x, H, W, pre_norm=self.norm1, residual=True)

    def forward(self, x):
        x = _pos_embed_residual(self.pos_embed, x, self._eval_fused(x))
        B, N, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        fused = self._fused_attn(x, H, W)
        x = fused if fused is not None else x + self.drop_path(self.attn(self.norm1(x), H, W))
        fused = self._fused_mlp(x)
        x = fused if fused is not None else x + self.drop_path(self.mlp(self.norm2(x)))
        # [B, H*W, C] tokens -> [B, C, H, W] as a view: channels_last strides (canonical ones,
        # also when B = 1), which the next convolution keeps.
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
        # Eval fast path (EdgeVit.set_fused): conv + LayerNorm as one edgevit::patch_embed call
        # on a weight prepared once and cached in _prepared (see _eval_cached).
        self.fuse_eval = False
        self._prepared = None

    def train(self, mode: bool = True):
        self._prepared = None  # rebuilt on the next eval-mode call
        return super().train(mode)

    def _fusable_config(self) -> bool:
        """The configuration part of _fusable: a non-overlapping square patch conv + LayerNorm."""
        p, proj = self.proj.kernel_size, self.proj
        return (self.fuse_eval and p[0] == p[1] and proj.stride == p and proj.padding == (0, 0)
                and proj.dilation == (1, 1) and proj.groups == 1
                and proj.padding_mode == "zeros" and isinstance(self.norm, nn.LayerNorm))

    def _fusable(self, x: Tensor) -> bool:
        p, proj = self.proj.kernel_size, self.proj
        return (self._fusable_config()
                and x.dim() == 4 and x.shape[-2] >= p[0] and x.shape[-1] >= p[1]
                and _eval_fast_path(self, x, (proj.weight, proj.bias, self.norm.weight,
                                              self.norm.bias))
                and _kernels_unavailable(x, proj.weight.dtype) is None)

    def _prepared_weight(self, x: Tensor) -> Tensor:
        """The patch_embed_prepare buffer of proj; cached (see _eval_cached)."""
        w, b = self.proj.weight, self.proj.bias
        return _eval_cached(self, "_prepared", [w, b], x,
                            lambda: _load_kernels().patch_embed_prepare(w, b))

    def forward_prepared(self, x: Tensor, prepared: Tensor) -> Tensor:
        """conv + LayerNorm as one patch_embed_prepared call, no checks (the eval fast path);
        the result is channels_last."""
        w, norm = self.proj.weight, self.norm
        return torch.ops.edgevit.patch_embed_prepared(
            x, prepared, w.shape[0], w.shape[2], True, norm.weight, norm.bias, float(norm.eps))

    def forward(self, x):
        if self._fusable(x):
            return self.forward_prepared(x, self._prepared_weight(x))
        # The output keeps the input's memory format (channels_last maps stay channels_last);
        # the LayerNorm over channels runs on the [B, H, W, C] view (no copy when channels_last).
        fmt = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
               and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        x = self.proj(x)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=fmt)


# ---------------------------------------------------------------------------------------------
# The eval plan: EdgeVit's whole fast path as a flat list of edgevit op calls.


_VERSION = operator.attrgetter("_version")
_TRAINING = operator.attrgetter("training")


class _EvalPlan:
    """The eval fast path of one ``EdgeVit`` with its prepared weights bound: a flat list of
    steps, each one block's or one PatchEmbed's ``forward_prepared`` / ``forward_folded``.

    Running the module tree costs its checks in every module on every call (eval mode, autograd,
    kernels, the cache key of each module's parameters: ~80 us per LocalAgg) plus the module
    calls; on the 2-core VM that was ~20% of an XS forward at 224 x 224 (4.0 of 19.6 ms, against
    a flat list of the same op calls, measured interleaved). The plan does those checks once per
    call for the whole model (``current``): every module in eval mode and without hooks, no
    module, parameter or buffer replaced, no tensor changed in place (version counters), the
    same ISA and dtype. When they fail it is rebuilt from the modules' own caches
    (``_eval_cached``: only changed modules prepare again), so it follows the same rules as the
    module path: see ``GlobalSparseAttn.forward_fused``.
    """

    def __init__(self, model: "EdgeVit", x: Tensor):
        self.isa, self.dtype = _load_kernels().cpu_isa(), x.dtype
        self.modules = list(model.modules())
        # Flat lists for the per-call checks, compared with C-level map() passes (~0.1 ms for
        # EdgeViT-S's 337 modules and 385 tensors; Python loops took twice as long).
        self.hook_dicts = [h for m in self.modules for h in (m._forward_hooks, m._forward_pre_hooks)]
        self.tensors = [t for m in self.modules
                        for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
        slots = [(d, name, obj) for m in self.modules
                 for d in (m._modules, m._parameters, m._buffers) for name, obj in d.items()]
        self.slot_dicts = [d for d, _, _ in slots]
        self.slot_names = [name for _, name, _ in slots]
        self.slot_objs = [obj for _, _, obj in slots]
        self.versions = list(map(_VERSION, self.tensors))
        self.steps = self._build(model, x)

    def eligible(self) -> bool:
        """No module of the plan is in training mode or has a forward hook or pre-hook."""
        return not (any(self.hook_dicts) or any(map(_TRAINING, self.modules)))

    @staticmethod
    def _build(model: "EdgeVit", x: Tensor):
        """[(fn, stage_end)], or None when some module has no fast path (then the model runs
        its modules)."""
        steps = []
        for embed, blocks in ((model.patch_embed1, model.blocks1),
                              (model.patch_embed2, model.blocks2),
                              (model.patch_embed3, model.blocks3),
                              (model.patch_embed4, model.blocks4)):
            if not (isinstance(embed, PatchEmbed) and embed._fusable_config()):
                return None
            stage = [partial(embed.forward_prepared, prepared=embed._prepared_weight(x))]
            for blk in blocks:
                if not isinstance(blk, LGLBlock):
                    return None
                la, sa = blk.LocalAgg, blk.SelfAttn
                if isinstance(la, LocalAgg):
                    if not (la.fold_eval and _is_exact_gelu(la.mlp.act)):
                        return None
                    stage.append(partial(la.forward_folded,
                                         folded=la._folded_weights(la._fold_params(), x)))
                elif not isinstance(la, nn.Identity):
                    return None
                if not (isinstance(sa, SelfAttn) and sa._fully_fusable()
                        and sa.attn._fused_unavailable(x) is None):
                    return None
                weights, _ = sa.attn._op_weights()
                stage.append(partial(sa.forward_prepared,
                                     attn_prepared=sa.attn._prepared_weights(weights, x, sa.norm1),
                                     mlp_prepared=sa._mlp_prepared_weights(x)))
            steps += [(fn, i == len(stage) - 1) for i, fn in enumerate(stage)]  # True: stage output
        return steps

    def current(self, x: Tensor) -> bool:
        """Whether the plan still describes the model for x (see the class docstring)."""
        if x.dtype != self.dtype or _load_kernels().cpu_isa() != self.isa:
            return False
        if not all(map(operator.is_, map(dict.get, self.slot_dicts, self.slot_names),
                       self.slot_objs)):
            return False
        return list(map(_VERSION, self.tensors)) == self.versions

    def run(self, x: Tensor) -> list:
        """The four stage outputs (channels_last maps)."""
        stages = []
        for fn, stage_end in self.steps:
            x = fn(x)
            if stage_end:
                stages.append(x)
        return stages


# ---------------------------------------------------------------------------------------------
# The network.


class EdgeVit(nn.Module):
    """EdgeViT: four stages of (PatchEmbed, LGL blocks), BatchNorm, global average pool, head.

    ``use_fused`` selects the fused ``lgl_fused`` op in every ``GlobalSparseAttn``; change it
    later with ``set_fused``. Input maps of any size >= 32 x 32 work.
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
        self._plan = None  # _EvalPlan (eval fast path), built on the first eligible call
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
            elif isinstance(m, LocalAgg):
                m.fold_eval = self.use_fused
            elif isinstance(m, (SelfAttn, PatchEmbed)):
                m.fuse_eval = self.use_fused
        return self

    def train(self, mode: bool = True):
        self._plan = None  # rebuilt on the next eligible eval-mode call
        return super().train(mode)

    def _eval_plan(self, x: Tensor) -> Optional[_EvalPlan]:
        """The eval plan for this call (built or rebuilt as needed), or None where the module
        tree must run: not use_fused, training anywhere, autograd needed, not CPU, x not a map
        of at least 32 x 32, under torch.compile, no kernel for x, a forward hook or pre-hook on any module (the plan calls
        no module, so hooks would not fire), inference-tensor parameters (no version counters),
        or a module without a fast path."""
        if (not self.use_fused or self.training or x.device.type != "cpu" or x.dim() != 4
                or min(x.shape[-2:]) < 32 or torch.compiler.is_compiling() or _global_module_hooks()
                or _kernels_unavailable(x, self.patch_embed1.proj.weight.dtype) is not None):
            return None
        if torch.is_grad_enabled() and (x.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            return None
        plan = self._plan
        if plan is None or not plan.current(x):
            if any(t.is_inference() for t in self.parameters()) or any(
                    t.is_inference() for t in self.buffers()):
                return None
            plan = _EvalPlan(self, x)
            self._plan = plan
        return plan if plan.steps is not None and plan.eligible() else None

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
        sizes H/4, H/8, H/16 and H/32, for detection and segmentation backbones.

        With ``use_fused`` in eval mode on CPU (no autograd) the maps are kept channels_last, so
        the token layout of the attention blocks is a view of them (no transposes), and the
        LocalAgg BatchNorms are folded (cached; see LocalAgg). There the modules' op calls run as
        one flat list (_EvalPlan), checked once per call instead of in every module."""
        plan = self._eval_plan(x)
        if plan is not None:
            if torch.is_inference_mode_enabled():
                stages = plan.run(x)
                return stages if return_stages else self.pre_logits(self.norm(stages[-1]))
            # No gradient is needed (the plan checked), so the ops run in inference mode, which
            # skips the autograd wrappers and view metadata (3.5% of an XS forward under no_grad,
            # 10% of an XXS one, measured interleaved); the results leave as normal tensors
            # (clones: the logits or the maps returned).
            with torch.inference_mode():
                stages = plan.run(x)
                out = stages if return_stages else [self.pre_logits(self.norm(stages[-1]))]
            out = [t.clone() for t in out]
            return out if return_stages else out[0]
        if (self.use_fused and not self.patch_embed1._fusable(x) and _eval_fast_path(self, x, ())
                and _kernels_unavailable(x, self.patch_embed1.proj.weight.dtype) is None):
            x = x.contiguous(memory_format=torch.channels_last)  # (the fused PatchEmbed's
            # output is channels_last whatever its input's layout)
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


def _create(name: str, use_fused: bool, pretrained: bool, kwargs) -> EdgeVit:
    if pretrained:
        raise ValueError(f"{name}: no weights are downloaded; load a checkpoint with "
                         "load_state_dict(strict=True) instead")
    cfg = dict(_CONFIGS[name], mlp_ratio=[4] * 4, qkv_bias=True,
               norm_layer=partial(nn.LayerNorm, eps=1e-6), sr_ratios=[4, 2, 2, 1])
    cfg.update(kwargs)
    return EdgeVit(use_fused=use_fused, **cfg)


def edgevit_xxs(use_fused: bool = False, pretrained: bool = False, **kwargs) -> EdgeVit:
    """EdgeViT-XXS: depth [1, 1, 3, 2], dims [36, 72, 144, 288], head_dim 36 (4.07 M parameters)."""
    return _create("edgevit_xxs", use_fused, pretrained, kwargs)


def edgevit_xs(use_fused: bool = False, pretrained: bool = False, **kwargs) -> EdgeVit:
    """EdgeViT-XS: depth [1, 1, 3, 1], dims [48, 96, 240, 384], head_dim 48 (6.77 M parameters)."""
    return _create("edgevit_xs", use_fused, pretrained, kwargs)


def edgevit_s(use_fused: bool = False, pretrained: bool = False, **kwargs) -> EdgeVit:
    """EdgeViT-S: depth [1, 2, 5, 3], dims [48, 96, 240, 384], head_dim 48 (13.11 M parameters
    with the official code's configuration)."""
    return _create("edgevit_s", use_fused, pretrained, kwargs)
