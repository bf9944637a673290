"""Pure-PyTorch references of ``edgevit::lgl_fused`` and ``edgevit::dwconv`` -- the ground truth
of every test.

It is the official EdgeViT ``GlobalSparseAttn.forward`` (eval mode) written as a function of
the op's arguments, generalised to maps whose sides the sampling ratio does not divide: the
sampled map is ``x[:, :, ::r, ::r]`` (h = ceil(H/r), w = ceil(W/r)) and the propagated
(h*r) x (w*r) map is cropped back to H x W.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def lgl_reference(
    x: Tensor,
    H: int,
    W: int,
    num_heads: int,
    sr_ratio: int,
    scale: float,
    qkv_weight: Tensor,
    qkv_bias: Optional[Tensor],
    prop_weight: Optional[Tensor],
    prop_bias: Optional[Tensor],
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    norm_eps: float,
    proj_weight: Tensor,
    proj_bias: Optional[Tensor],
) -> Tensor:
    """sample -> attend -> propagate -> LayerNorm -> proj, on ``x`` of shape [B, H*W, C]."""
    B, N, C = x.shape
    r = sr_ratio
    head_dim = C // num_heads

    # sample: one representative token per r x r window (the official AvgPool2d(1, r)).
    if r > 1:
        xs = x.transpose(1, 2).reshape(B, C, H, W)[:, :, ::r, ::r]
        h, w = xs.shape[-2], xs.shape[-1]
        xs = xs.flatten(2).transpose(1, 2)
    else:
        h, w = H, W
        xs = x
    n = h * w  # explicit (not -1) so that B = 0 reshapes too

    # attend: multi-head softmax attention among the sampled tokens.
    qkv = F.linear(xs, qkv_weight, qkv_bias)
    qkv = qkv.reshape(B, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * scale
    attn = attn.softmax(dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(B, n, C)

    # propagate: depthwise transposed conv over each window, crop, LayerNorm.
    if r > 1:
        y = y.transpose(1, 2).reshape(B, C, h, w)
        y = F.conv_transpose2d(y, prop_weight, prop_bias, stride=r, groups=C)
        y = y[:, :, :H, :W].flatten(2).transpose(1, 2)
        y = F.layer_norm(y, (C,), norm_weight, norm_bias, norm_eps)

    return F.linear(y, proj_weight, proj_bias).contiguous()


def lgl_block_reference(
    x: Tensor,
    H: int,
    W: int,
    num_heads: int,
    sr_ratio: int,
    scale: float,
    qkv_weight: Tensor,
    qkv_bias: Optional[Tensor],
    prop_weight: Optional[Tensor],
    prop_bias: Optional[Tensor],
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    norm_eps: float,
    proj_weight: Tensor,
    proj_bias: Optional[Tensor],
    pre_norm: bool,
    pre_norm_weight: Optional[Tensor],
    pre_norm_bias: Optional[Tensor],
    pre_norm_eps: float,
    residual: bool,
) -> Tensor:
    """Reference of ``lgl_fused_prepared`` with its options: ``[x +] lgl(pre_norm ? LN(x) : x)``
    (EdgeViT SelfAttn's ``x + attn(norm1(x))`` when both are on)."""
    h = F.layer_norm(x, (x.shape[-1],), pre_norm_weight, pre_norm_bias, pre_norm_eps) if pre_norm else x
    y = lgl_reference(h, H, W, num_heads, sr_ratio, scale, qkv_weight, qkv_bias, prop_weight,
                      prop_bias, norm_weight, norm_bias, norm_eps, proj_weight, proj_bias)
    return x + y if residual else y


def mlp_reference(
    x: Tensor,
    fc1_weight: Tensor,
    fc1_bias: Optional[Tensor],
    fc2_weight: Tensor,
    fc2_bias: Optional[Tensor],
    layer_norm: bool,
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    norm_eps: float,
    residual: bool,
) -> Tensor:
    """Pure-PyTorch reference of ``edgevit::mlp_fused``: the transformer MLP of EdgeViT's blocks,
    ``[x +] fc2(GELU(fc1([LayerNorm](x))))`` on ``x = [..., C]`` (exact, erf GELU). With
    ``layer_norm`` it is SelfAttn's ``x + mlp(norm2(x))``; without, LocalAgg's ``x + mlp(x)`` once
    its BatchNorm is folded into fc1."""
    h = F.layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, norm_eps) if layer_norm else x
    y = F.linear(F.gelu(F.linear(h, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)
    return x + y if residual else y


def patch_embed_reference(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    layer_norm: bool,
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    norm_eps: float,
) -> Tensor:
    """Pure-PyTorch reference of ``edgevit::patch_embed``: EdgeViT's ``PatchEmbed``, the p x p,
    stride-p convolution ``weight`` [Cout, Cin, p, p] (no padding) followed, with
    ``layer_norm``, by LayerNorm over the output channels. Returns a channels_last
    [B, Cout, H // p, W // p] tensor."""
    y = F.conv2d(x, weight, bias, stride=weight.shape[-1])
    if layer_norm:
        y = F.layer_norm(y.permute(0, 2, 3, 1), (weight.shape[0],), norm_weight, norm_bias,
                         norm_eps).permute(0, 3, 1, 2)
    return y.contiguous(memory_format=torch.channels_last)
def dwconv_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                     residual: bool = False) -> Tensor:
    """Depthwise k x k convolution of ``x`` [B, C, H, W] (stride 1, zero padding k//2), plus
    ``x`` when ``residual``: EdgeViT's local aggregation (``x + conv(x)``) and positional
    encoding."""
    out = F.conv2d(x, weight, bias, stride=1, padding=weight.shape[-1] // 2, groups=x.shape[1])
    return out + x if residual else out


def linear_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                     residual: Optional[Tensor]) -> Tensor:
    """Pure-PyTorch reference of ``edgevit::linear_fused``: ``F.linear(x, weight, bias)``, plus
    ``residual`` when given (LocalAgg's 1x1 convolutions on the [B, H, W, C] view)."""
    y = F.linear(x, weight, bias)
    return y + residual if residual is not None else y
