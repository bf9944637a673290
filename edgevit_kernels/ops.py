"""Python side of ``edgevit::lgl_fused`` and ``edgevit::dwconv``: the typed wrappers, fake kernels,
autograd formulas and lgl_fused's CUDA (Triton) registration. The schemas and the CPU kernels
live in ``csrc/``."""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import lgl_reference

__all__ = ["lgl_fused", "lgl_prepare", "lgl_fused_prepared", "check_args", "cpu_isa",
           "supported_cpu_isas", "has_kernel_for", "dwconv"]


def lgl_fused(
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
    """EdgeViT GlobalSparseAttn as one op: sample -> attend -> propagate -> LayerNorm -> proj.

    ``x`` is ``[B, H*W, C]``; returns a contiguous ``[B, H*W, C]`` tensor of ``x``'s dtype.
    With ``sr_ratio == 1`` the four ``prop_*``/``norm_*`` tensors must be None; with
    ``sr_ratio > 1`` all four are required. See ``edgevit_kernels.reference.lgl_reference``.
    """
    return torch.ops.edgevit.lgl_fused.default(
        x, H, W, num_heads, sr_ratio, scale, qkv_weight, qkv_bias, prop_weight, prop_bias,
        norm_weight, norm_bias, norm_eps, proj_weight, proj_bias,
    )


def lgl_prepare(
    qkv_weight: Tensor,
    qkv_bias: Optional[Tensor],
    prop_weight: Optional[Tensor],
    prop_bias: Optional[Tensor],
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    proj_weight: Tensor,
    proj_bias: Optional[Tensor],
    sr_ratio: int,
) -> Tensor:
    """Phase 0 of ``lgl_fused`` alone (CPU): the weights packed and folded for the CPU kernels.

    Returns an opaque 1-D tensor for ``lgl_fused_prepared``, valid for this ISA (``cpu_isa()``)
    while the weights do not change; it is not a parameter and holds no gradient. The weight
    arguments follow ``lgl_fused``."""
    return torch.ops.edgevit.lgl_prepare.default(
        qkv_weight, qkv_bias, prop_weight, prop_bias, norm_weight, norm_bias, proj_weight,
        proj_bias, sr_ratio,
    )


def lgl_fused_prepared(
    x: Tensor,
    H: int,
    W: int,
    num_heads: int,
    sr_ratio: int,
    scale: float,
    norm_eps: float,
    prepared: Tensor,
) -> Tensor:
    """``lgl_fused`` with weights prepared by ``lgl_prepare`` (CPU, inference: no autograd).

    Same result as ``lgl_fused`` with the weights ``prepared`` was made from, minus the cost of
    preparing them on every call. Raises if ``prepared`` does not match ``x`` (C, sr_ratio,
    dtype) or was packed for another ISA than the one in use."""
    return torch.ops.edgevit.lgl_fused_prepared.default(
        x, H, W, num_heads, sr_ratio, scale, norm_eps, prepared,
    )


def cpu_isa() -> str:
    """The instruction set the CPU kernels run with now: scalar, neon, avx2 or avx512.

    Chosen from CPU features at run time; ``EDGEVIT_CPU_ISA`` forces one (an error if this CPU
    or build lacks it)."""
    return torch.ops.edgevit.cpu_isa()


def supported_cpu_isas() -> list[str]:
    """Every ISA variant this build can run on this CPU, best last."""
    return torch.ops.edgevit.supported_cpu_isas().split(",")


def has_kernel_for(device: torch.device) -> bool:
    """Whether ``lgl_fused`` has a kernel for tensors on ``device`` here."""
    if device.type in ("cpu", "meta"):
        return True
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


def check_args(x, H, W, num_heads, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias,
               norm_weight, norm_bias, proj_weight, proj_bias) -> None:
    """The argument contract of lgl_fused in Python (the fake kernel and the Triton launcher use
    it; the C++ CPU kernel checks the same in csrc/lgl_fused_cpu.cpp). Works on symbolic sizes."""
    def check(cond, msg):
        torch._check(cond, lambda: f"lgl_fused: {msg}")

    check(x.dim() == 3, f"x must be 3-D [B, N, C], got shape {list(x.shape)}")
    check(x.dtype.is_floating_point, f"x must be a floating-point tensor, got {x.dtype}")
    check(H >= 1 and W >= 1, f"H and W must be >= 1, got H={H}, W={W}")
    N, C = x.shape[1], x.shape[2]
    check(N == H * W, f"x.size(1) must equal H*W = {H}*{W} = {H * W}, got {N}")
    check(num_heads >= 1, f"num_heads must be >= 1, got {num_heads}")
    check(C >= 1 and C % num_heads == 0,
          f"C = x.size(2) must be a positive multiple of num_heads = {num_heads}, got C = {C}")
    r = sr_ratio
    check(r >= 1, f"sr_ratio must be >= 1, got {r}")

    def param(t, name, shape):
        check(list(t.shape) == list(shape), f"{name} must have shape {list(shape)}, got {list(t.shape)}")
        check(t.dtype == x.dtype, f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
        check(t.device == x.device, f"{name} must be on the device of x ({x.device}), got {t.device}")

    param(qkv_weight, "qkv_weight", (3 * C, C))
    param(proj_weight, "proj_weight", (C, C))
    if qkv_bias is not None:
        param(qkv_bias, "qkv_bias", (3 * C,))
    if proj_bias is not None:
        param(proj_bias, "proj_bias", (C,))
    prop_norm = {"prop_weight": (prop_weight, (C, 1, r, r)), "prop_bias": (prop_bias, (C,)),
                 "norm_weight": (norm_weight, (C,)), "norm_bias": (norm_bias, (C,))}
    for name, (t, shape) in prop_norm.items():
        if r > 1:
            check(t is not None, f"{name} is required when sr_ratio > 1 (got None, sr_ratio = {r})")
            param(t, name, shape)
        else:
            check(t is None, f"{name} must be None when sr_ratio = 1 (got a tensor, sr_ratio = {r})")


@torch.library.register_fake("edgevit::lgl_fused")
def _lgl_fused_fake(x, H, W, num_heads, sr_ratio, scale, qkv_weight, qkv_bias, prop_weight,
                    prop_bias, norm_weight, norm_bias, norm_eps, proj_weight, proj_bias):
    check_args(x, H, W, num_heads, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias,
               norm_weight, norm_bias, proj_weight, proj_bias)
    return x.new_empty(x.shape)


@torch.library.register_fake("edgevit::lgl_prepare")
def _lgl_prepare_fake(qkv_weight, qkv_bias, prop_weight, prop_bias, norm_weight, norm_bias,
                      proj_weight, proj_bias, sr_ratio):
    C = qkv_weight.shape[1]
    check_args(qkv_weight.new_empty((1, 1, C)), 1, 1, 1, sr_ratio, qkv_weight, qkv_bias,
               prop_weight, prop_bias, norm_weight, norm_bias, proj_weight, proj_bias)
    numel = torch.ops.edgevit.lgl_prepared_numel(C, sr_ratio, qkv_weight.dtype)
    return qkv_weight.new_empty((numel,))


@torch.library.register_fake("edgevit::lgl_fused_prepared")
def _lgl_fused_prepared_fake(x, H, W, num_heads, sr_ratio, scale, norm_eps, prepared):
    torch._check(prepared.dim() == 1 and prepared.dtype == x.dtype,
                 lambda: "lgl_fused_prepared: prepared must be a 1-D tensor of x's dtype made by "
                         "edgevit::lgl_prepare")
    return x.new_empty(x.shape)


# Positions of the tensor arguments in the schema; the rest are ints and floats.
_TENSOR_ARGS = (0, 6, 7, 8, 9, 10, 11, 13, 14)


def _setup_context(ctx, inputs, output):
    ctx.inputs = tuple(None if i in _TENSOR_ARGS else a for i, a in enumerate(inputs))
    ctx.save_for_backward(*(inputs[i] for i in _TENSOR_ARGS))


def _backward(ctx, grad):
    # Recomputes through the reference and differentiates it with torch.func.vjp, which
    # torch.compile can trace. Only the inputs that need a gradient are differentiated.
    args = list(ctx.inputs)
    for i, t in zip(_TENSOR_ARGS, ctx.saved_tensors):
        args[i] = t
    wanted = [i for i in _TENSOR_ARGS if ctx.needs_input_grad[i] and args[i] is not None]

    def f(*primals):
        call = list(args)
        for i, p in zip(wanted, primals):
            call[i] = p
        return lgl_reference(*call)

    grads = [None] * len(args)
    if wanted:
        _, vjp = torch.func.vjp(f, *(args[i] for i in wanted))
        for i, g in zip(wanted, vjp(grad.contiguous())):
            grads[i] = g
    return tuple(grads)


torch.library.register_autograd("edgevit::lgl_fused", _backward, setup_context=_setup_context)


def _lgl_fused_cuda(*args):
    try:
        from .triton import lgl_fused_triton
    except ImportError as e:
        raise RuntimeError(
            "edgevit::lgl_fused on CUDA tensors needs Triton (pip install 'edgevit-kernels[gpu]'); "
            f"importing it failed: {e}"
        ) from e
    return lgl_fused_triton(*args)


# Triton is imported on the first CUDA call, so importing this package stays light and works
# with no GPU and no Triton.
torch.library.register_kernel("edgevit::lgl_fused", "cuda", _lgl_fused_cuda)


# ------------------------------------------------------------------------------- dwconv


def dwconv(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           residual: bool = False) -> Tensor:
    """Depthwise k x k convolution (stride 1, zero padding k//2), plus ``x`` when ``residual``.

    ``x`` is ``[B, C, H, W]`` float32 or float64 on CPU, any layout (channels_last is used as
    is, anything else is copied to it once); ``weight`` is ``[C, 1, k, k]`` with odd ``k <= 7``;
    ``bias`` is ``[C]`` or None. Returns a channels_last-contiguous ``[B, C, H, W]`` tensor of
    ``x``'s dtype, equal to ``edgevit_kernels.reference.dwconv_reference`` (EdgeViT's local
    aggregation ``x + dwconv(x)`` with ``residual=True``, its positional encoding)."""
    return torch.ops.edgevit.dwconv.default(x, weight, bias, residual)


def _dwconv_check(x, weight, bias) -> None:
    """dwconv's argument contract (the C++ kernel checks the same in csrc/dwconv_cpu.cpp)."""
    def check(cond, msg):
        torch._check(cond, lambda: f"dwconv: {msg}")

    check(x.dim() == 4, f"x must be 4-D [B, C, H, W], got shape {list(x.shape)}")
    check(x.dtype in (torch.float32, torch.float64), f"x must be float32 or float64, got {x.dtype}")
    C = x.shape[1]
    ok = (weight.dim() == 4 and weight.shape[0] == C and weight.shape[1] == 1
          and weight.shape[2] == weight.shape[3] and weight.shape[2] % 2 == 1
          and weight.shape[2] <= 7)
    check(ok, f"weight must have shape [C, 1, k, k] with C = x.size(1) = {C} and odd k <= 7, "
              f"got {list(weight.shape)}")
    for name, t, shape in (("weight", weight, None), ("bias", bias, (C,))):
        if t is None:
            continue
        if shape is not None:
            check(list(t.shape) == list(shape),
                  f"{name} must have shape [C] with C = x.size(1) = {C}, got {list(t.shape)}")
        check(t.dtype == x.dtype, f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
        check(t.device == x.device, f"{name} must be on the device of x ({x.device}), got {t.device}")


@torch.library.register_fake("edgevit::dwconv")
def _dwconv_fake(x, weight, bias, residual):
    _dwconv_check(x, weight, bias)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _dwconv_setup_context(ctx, inputs, output):
    x, weight, bias, residual = inputs
    ctx.residual = residual
    ctx.has_bias = bias is not None
    ctx.weight_shape = tuple(weight.shape)
    # grad_x needs the weight, grad_weight needs x: save only what backward will use.
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                          weight if ctx.needs_input_grad[0] else None)


def _dwconv_backward(ctx, grad):
    # Plain aten ops (convolution, its weight gradient, a sum), which have their own backward and
    # trace under torch.compile.
    x, weight = ctx.saved_tensors
    C, _, k, _ = ctx.weight_shape
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        # The adjoint of a stride-1 'same' correlation is the correlation with the flipped kernel.
        grad_x = F.conv2d(grad, weight.flip(-2, -1), padding=k // 2, groups=C)
        if ctx.residual:
            grad_x = grad_x + grad
    if ctx.needs_input_grad[1]:
        grad_w = torch.nn.grad.conv2d_weight(x, ctx.weight_shape, grad, padding=k // 2, groups=C)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad.sum((0, 2, 3))
    return grad_x, grad_w, grad_b, None


torch.library.register_autograd("edgevit::dwconv", _dwconv_backward,
                                setup_context=_dwconv_setup_context)
