"""Python side of the edgevit ops: typed wrappers, fake kernels and autograd formulas, and the CUDA
(Triton) registration of ``lgl_fused``. The schemas are in ``csrc/edgevit_ops.cpp``, the CPU
kernels in ``csrc/``.

* ``lgl_fused`` (+ ``lgl_prepare`` / ``lgl_fused_prepared``): GlobalSparseAttn.
* ``mlp_fused`` (+ ``mlp_prepare`` / ``mlp_fused_prepared``): the blocks' MLP, CPU only.
* ``patch_embed`` (+ ``patch_embed_prepare`` / ``patch_embed_prepared``): PatchEmbed, CPU only.
* ``linear_fused`` (+ ``linear_prepare`` / ``linear_fused_prepared``): Linear + residual, CPU only.
* ``dwconv``: depthwise 'same' convolution with optional residual (positional encodings,
  LocalAgg's aggregation), CPU only.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import (dwconv_reference, linear_reference, lgl_reference, mlp_reference,
                        patch_embed_reference)

__all__ = ["lgl_fused", "lgl_prepare", "lgl_fused_prepared", "mlp_fused", "mlp_prepare",
           "mlp_fused_prepared", "patch_embed", "patch_embed_prepare", "patch_embed_prepared",
           "dwconv", "linear_fused", "linear_prepare", "linear_fused_prepared", "check_args", "cpu_isa", "supported_cpu_isas", "set_cpu_isa", "cpu_info", "has_kernel_for",
           "lgl_weight_cache_info", "lgl_weight_cache_clear"]


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
    On CPU the weights prepared for the kernels are cached by content (``lgl_weight_cache_info``).
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
    pre_norm: bool = False,
    pre_norm_weight: Optional[Tensor] = None,
    pre_norm_bias: Optional[Tensor] = None,
) -> Tensor:
    """Phase 0 of ``lgl_fused`` alone (CPU): the weights packed and folded for the CPU kernels.

    Returns an opaque 1-D tensor for ``lgl_fused_prepared``, valid for this ISA (``cpu_isa()``)
    while the weights do not change; it is not a parameter and holds no gradient. The weight
    arguments follow ``lgl_fused``. With ``pre_norm``, the op first applies a LayerNorm over C
    with the affine ``pre_norm_weight`` / ``pre_norm_bias`` (``[C]``, each optional), folded
    into qkv here (EdgeViT's ``SelfAttn.norm1``); its eps is given to ``lgl_fused_prepared``."""
    return torch.ops.edgevit.lgl_prepare.default(
        qkv_weight, qkv_bias, prop_weight, prop_bias, norm_weight, norm_bias, proj_weight,
        proj_bias, sr_ratio, pre_norm, pre_norm_weight, pre_norm_bias,
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
    pre_norm_eps: float = 1e-5,
    residual: bool = False,
) -> Tensor:
    """``lgl_fused`` with weights prepared by ``lgl_prepare`` (CPU, inference: no autograd).

    Same result as ``lgl_fused`` with the weights ``prepared`` was made from, minus the cost of
    preparing them on every call. If ``prepared`` was made with ``pre_norm``, ``x`` first goes
    through that LayerNorm (eps ``pre_norm_eps``; only the sampled tokens are normalised, the
    only ones the op reads); with ``residual`` the result is ``x +`` the op (EdgeViT's
    ``x + attn(norm1(x))`` in one call). See ``reference.lgl_block_reference``. Raises if
    ``prepared`` does not match ``x`` (C, sr_ratio, dtype) or was packed for another ISA than
    the one in use."""
    return torch.ops.edgevit.lgl_fused_prepared.default(
        x, H, W, num_heads, sr_ratio, scale, norm_eps, prepared, pre_norm_eps, residual,
    )


def cpu_isa() -> str:
    """The instruction set the CPU kernels run with now: scalar, neon, avx2 or avx512.

    Chosen once, when the extension loads: ``EDGEVIT_CPU_ISA`` (read then, and only then) if it
    is set, else the best this CPU supports (``supported_cpu_isas()[-1]``). ``set_cpu_isa``
    changes it at run time. If ``EDGEVIT_CPU_ISA`` named an ISA this machine cannot run, the
    import still succeeds but this and every CPU op raise ``ValueError`` saying so, until
    ``set_cpu_isa`` is called."""
    return torch.ops.edgevit.cpu_isa()


def supported_cpu_isas() -> list[str]:
    """Every ISA variant this build can run on this CPU, best last."""
    return torch.ops.edgevit.supported_cpu_isas().split(",")


def set_cpu_isa(name: str | None = None) -> str:
    """Make ``name`` ("scalar", "neon", "avx2", "avx512"; ``None`` or ``"auto"``: the best this
    CPU supports) the ISA of every later CPU op call, and return the ISA now in use.

    Raises ``ValueError`` naming the ISA and what this machine supports if it is unknown, not
    compiled into this build or not supported by this CPU; nothing changes then. Safe to call
    while other threads run ops (a call in flight finishes on the ISA it started with). Packed
    weights (``*_prepare``) are per ISA: those made before the change raise when used after it,
    and the weight cache of ``lgl_fused`` keeps one entry per ISA."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"set_cpu_isa: name must be a str or None, got {type(name).__name__}")
    return torch.ops.edgevit.set_cpu_isa(name)


def cpu_info() -> dict:
    """What the CPU kernels chose for the machine they run on.

    ``isa`` and ``nr`` (the gemm panel width of that ISA); ``l1d``, ``l2``, ``l3`` (bytes, per
    core for L1/L2) and ``cache_source`` (``sysfs``, ``cpuid`` or ``default``), read once at
    load; ``mlp_hidden_tile`` (elements of ``mlp_fused``'s hidden tile, a quarter of L2);
    ``threads`` (torch's intra-op threads, which the kernels use too), ``pool_workers`` (threads
    the kernels' pool has started besides the caller) and ``chunks_per_thread`` (how finely a
    parallel phase is split so that a busy core holds up only a small part of it)."""
    info = {}
    for item in torch.ops.edgevit.cpu_info().split(";"):
        key, value = item.split("=", 1)
        info[key] = int(value) if value.lstrip("-").isdigit() else value
    return info


def lgl_weight_cache_info() -> dict:
    """``lgl_fused``'s CPU weight cache: ``entries``, ``bytes`` held, and ``hits`` / ``misses``
    since the last clear.

    ``lgl_fused`` keeps the weights it prepared (packed and folded) for recent calls, with a
    byte copy of the weights they came from, and reuses them when a call's weights are equal
    byte for byte (so an in-place change by any route is a miss, never a stale result; the
    output is bitwise the same as without the cache). Only weights of at most 512 KiB are
    cached (C <= ~200 in float32): for larger ones the comparison costs what preparing does.
    At most 32 entries and ``EDGEVIT_WEIGHT_CACHE_MB`` MiB (default 64; 0 turns it off), least
    recently used first out. ``lgl_fused_prepared`` and the fused model's eval path do not use
    it."""
    entries, nbytes, hits, misses = torch.ops.edgevit.lgl_weight_cache_info()
    return {"entries": entries, "bytes": nbytes, "hits": hits, "misses": misses}


def lgl_weight_cache_clear() -> None:
    """Empties ``lgl_fused``'s CPU weight cache (see ``lgl_weight_cache_info``)."""
    torch.ops.edgevit.lgl_weight_cache_clear()


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


def _check_devices(op: str, like_name: str, like: Tensor, **tensors) -> None:
    """Every given tensor on ``like``'s device. A fake kernel needs this even in eager mode: when
    one argument is a meta tensor and the others CPU ones, the dispatcher runs the fake kernel
    (Meta outranks CPU), whose ``new_empty`` on a CPU ``x`` would return an uninitialised CPU
    tensor as the result."""
    for name, t in tensors.items():
        if t is not None:
            torch._check(t.device == like.device,
                         lambda: f"{op}: {name} must be on the device of {like_name} "
                                 f"({like.device}), got {t.device}")


@torch.library.register_fake("edgevit::lgl_fused")
def _lgl_fused_fake(x, H, W, num_heads, sr_ratio, scale, qkv_weight, qkv_bias, prop_weight,
                    prop_bias, norm_weight, norm_bias, norm_eps, proj_weight, proj_bias):
    check_args(x, H, W, num_heads, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias,
               norm_weight, norm_bias, proj_weight, proj_bias)
    return x.new_empty(x.shape)


@torch.library.register_fake("edgevit::lgl_prepare")
def _lgl_prepare_fake(qkv_weight, qkv_bias, prop_weight, prop_bias, norm_weight, norm_bias,
                      proj_weight, proj_bias, sr_ratio, pre_norm=False, pre_norm_weight=None,
                      pre_norm_bias=None):
    C = qkv_weight.shape[1]
    check_args(qkv_weight.new_empty((1, 1, C)), 1, 1, 1, sr_ratio, qkv_weight, qkv_bias,
               prop_weight, prop_bias, norm_weight, norm_bias, proj_weight, proj_bias)
    _check_devices("lgl_prepare", "qkv_weight", qkv_weight, pre_norm_weight=pre_norm_weight,
                   pre_norm_bias=pre_norm_bias)
    for t, name in ((pre_norm_weight, "pre_norm_weight"), (pre_norm_bias, "pre_norm_bias")):
        torch._check(pre_norm or t is None,
                     lambda: f"lgl_prepare: {name} must be None when pre_norm is False")
        torch._check(t is None or tuple(t.shape) == (C,),
                     lambda: f"lgl_prepare: {name} must have shape [{C}], got {list(t.shape)}")
    numel = torch.ops.edgevit.lgl_prepared_numel(C, sr_ratio, qkv_weight.dtype)
    return qkv_weight.new_empty((numel,))


@torch.library.register_fake("edgevit::lgl_fused_prepared")
def _lgl_fused_prepared_fake(x, H, W, num_heads, sr_ratio, scale, norm_eps, prepared,
                             pre_norm_eps=1e-5, residual=False):
    torch._check(prepared.dim() == 1 and prepared.dtype == x.dtype,
                 lambda: "lgl_fused_prepared: prepared must be a 1-D tensor of x's dtype made by "
                         "edgevit::lgl_prepare")
    _check_devices("lgl_fused_prepared", "x", x, prepared=prepared)
    return x.new_empty(x.shape)


_lib = torch.library.Library("edgevit", "FRAGMENT")


def _has_tangent(args) -> bool:
    """Whether a tensor argument carries a forward-mode AD tangent (``torch.func.jvp``,
    ``torch.autograd.forward_ad``). Such tensors do not require grad, so the autograd kernel
    ``register_autograd`` makes runs the op with no grad and the tangent is silently dropped
    (an output tangent of zeros): that kernel is wrapped to see them (``_register_autograd``)."""
    if torch.autograd.forward_ad._current_level < 0:  # no dual level entered: none can have one
        return False
    return any(isinstance(a, Tensor) and torch.autograd.forward_ad.unpack_dual(a).tangent is not None
               for a in args)


def _register_autograd(op: str, backward, setup_context, reference) -> None:
    """``torch.library.register_autograd(op, backward, setup_context)``, plus forward-mode AD:
    a call whose arguments carry tangents runs the pure-PyTorch ``reference`` (same arguments)
    on them instead of the kernel, so its output carries the reference's tangent (the backward
    recomputes through the reference in the same way). Built from the kernel register_autograd
    itself registers (``torch._library.autograd.make_autograd_impl``): register_autograd takes
    no forward-mode formula."""
    from torch._library.autograd import Info, make_autograd_impl

    name = op.split("::")[1]
    impl = make_autograd_impl(getattr(torch.ops.edgevit, name).default,
                              Info(backward, setup_context))

    def kernel(keyset, *args):
        if _has_tangent(args):
            return reference(*args)
        return impl(keyset, *args)

    _lib.impl(name, kernel, "Autograd", with_keyset=True)


class _InferenceOnly(torch.autograd.Function):
    """The output of an inference-only op called on tensors that require grad: its backward
    raises (the dispatcher's fallback only warned, and the inputs got no gradient)."""

    @staticmethod
    def forward(ctx, message, out, *inputs):
        ctx.message = message
        return out.view_as(out)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def _register_no_autograd(op: str, instead: str) -> None:
    """An autograd kernel for an inference-only ``op`` (the ``*_prepared`` ops): forward-mode AD
    through it raises at once rather than giving a zero tangent, and backward through it raises
    rather than leaving the inputs without a gradient."""
    name = op.split("::")[1]
    overload = getattr(torch.ops.edgevit, name).default
    no_formula = f"{op} has no autograd formula (inference only): it cannot be differentiated"
    use_instead = f"use {instead} with the unprepared weights"

    def kernel(keyset, *args):
        if _has_tangent(args):
            raise RuntimeError(f"{no_formula} in forward mode (torch.func.jvp / "
                               f"torch.autograd.forward_ad); {use_instead}")
        with torch._C._AutoDispatchBelowAutograd():
            out = overload.redispatch(keyset & torch._C._after_autograd_keyset, *args)
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            tensors = [a for a in args if isinstance(a, Tensor)]
            out = _InferenceOnly.apply(f"{no_formula}; {use_instead}", out, *tensors)
        return out

    _lib.impl(name, kernel, "Autograd", with_keyset=True)


def _register_autograd_via_reference(op: str, reference, tensor_args) -> None:
    """Registers the backward of ``op`` as the vjp of its pure-PyTorch ``reference`` (same
    arguments), recomputed in the backward pass with ``torch.func.vjp``, which torch.compile can
    trace; forward-mode AD runs the reference itself (``_register_autograd``). ``tensor_args``:
    positions of the schema's tensor arguments (the rest are saved as they are). Only the
    inputs that need a gradient are differentiated."""

    def setup_context(ctx, inputs, output):
        ctx.inputs = tuple(None if i in tensor_args else a for i, a in enumerate(inputs))
        ctx.save_for_backward(*(inputs[i] for i in tensor_args))

    def backward(ctx, grad):
        args = list(ctx.inputs)
        for i, t in zip(tensor_args, ctx.saved_tensors):
            args[i] = t
        wanted = [i for i in tensor_args if ctx.needs_input_grad[i] and args[i] is not None]

        def f(*primals):
            call = list(args)
            for i, p in zip(wanted, primals):
                call[i] = p
            return reference(*call)

        grads = [None] * len(args)
        if wanted:
            _, vjp = torch.func.vjp(f, *(args[i] for i in wanted))
            for i, g in zip(wanted, vjp(grad.contiguous())):
                grads[i] = g
        return tuple(grads)

    _register_autograd(op, backward, setup_context, reference)


_register_autograd_via_reference("edgevit::lgl_fused", lgl_reference,
                                 (0, 6, 7, 8, 9, 10, 11, 13, 14))


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


# ---------------------------------------------------------------------------------------------
# mlp_fused: the blocks' MLP, [x +] fc2(GELU(fc1([LayerNorm](x)))). CPU only.


def mlp_fused(
    x: Tensor,
    fc1_weight: Tensor,
    fc1_bias: Optional[Tensor],
    fc2_weight: Tensor,
    fc2_bias: Optional[Tensor],
    layer_norm: bool = False,
    norm_weight: Optional[Tensor] = None,
    norm_bias: Optional[Tensor] = None,
    norm_eps: float = 1e-5,
    residual: bool = False,
) -> Tensor:
    """The transformer MLP as one op: ``[x +] fc2(GELU(fc1([LayerNorm](x))))`` (CPU).

    ``x`` is ``[..., C]``; ``fc1_weight`` ``[hidden, C]``, ``fc2_weight`` ``[C, hidden]`` (Linear
    layout), biases optional. ``layer_norm`` standardises each row over C first, with the
    optional affine ``norm_weight`` / ``norm_bias`` and ``norm_eps``; ``residual`` adds ``x``.
    GELU is the exact (erf) one. Returns a contiguous tensor of ``x``'s shape and dtype (float32
    or float64). No hidden activation is stored: rows go through fc1, GELU and fc2 in blocks
    in per-thread tiles. Differentiable (the backward recomputes through
    ``edgevit_kernels.reference.mlp_reference``). See ``mlp_prepare`` for repeated calls."""
    return torch.ops.edgevit.mlp_fused.default(
        x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_norm, norm_weight, norm_bias,
        norm_eps, residual,
    )


def mlp_prepare(
    fc1_weight: Tensor,
    fc1_bias: Optional[Tensor],
    fc2_weight: Tensor,
    fc2_bias: Optional[Tensor],
    layer_norm: bool = False,
    norm_weight: Optional[Tensor] = None,
    norm_bias: Optional[Tensor] = None,
) -> Tensor:
    """The weight preparation of ``mlp_fused`` alone (CPU): fc1 and fc2 packed for the gemm
    micro-kernels of the ISA in use, the LayerNorm affine folded into fc1. Returns an opaque 1-D
    tensor for ``mlp_fused_prepared``, valid while the weights do not change and for this ISA."""
    return torch.ops.edgevit.mlp_prepare.default(
        fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_norm, norm_weight, norm_bias,
    )


def mlp_fused_prepared(x: Tensor, prepared: Tensor, norm_eps: float = 1e-5,
                       residual: bool = False) -> Tensor:
    """``mlp_fused`` with weights from ``mlp_prepare`` (CPU, inference: no autograd). Raises if
    ``prepared`` does not match ``x`` (C, dtype) or was packed for another ISA."""
    return torch.ops.edgevit.mlp_fused_prepared.default(x, prepared, norm_eps, residual)


def _check_mlp_weights(op, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_norm, norm_weight,
                       norm_bias):
    """mlp_fused's weight contract in Python (fake kernels; the C++ kernel checks the same in
    csrc/mlp_fused_cpu.cpp). Returns (C, hidden)."""
    def check(cond, msg):
        torch._check(cond, lambda: f"{op}: {msg}")

    check(fc1_weight.dim() == 2, f"fc1_weight must be 2-D [hidden, C], got shape {list(fc1_weight.shape)}")
    hidden, C = fc1_weight.shape
    expected = {"fc1_bias": (fc1_bias, (hidden,)), "fc2_weight": (fc2_weight, (C, hidden)),
                "fc2_bias": (fc2_bias, (C,)), "norm_weight": (norm_weight, (C,)),
                "norm_bias": (norm_bias, (C,))}
    check(layer_norm or (norm_weight is None and norm_bias is None),
          "norm_weight and norm_bias must be None when layer_norm is False")
    for name, (t, shape) in expected.items():
        if t is None:
            continue
        check(list(t.shape) == list(shape), f"{name} must have shape {list(shape)}, got {list(t.shape)}")
        check(t.dtype == fc1_weight.dtype,
              f"{name} must have the dtype of fc1_weight ({fc1_weight.dtype}), got {t.dtype}")
    _check_devices(op, "fc1_weight", fc1_weight, **{name: t for name, (t, _) in expected.items()})
    return C, hidden


@torch.library.register_fake("edgevit::mlp_fused")
def _mlp_fused_fake(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_norm, norm_weight,
                    norm_bias, norm_eps, residual):
    C, _ = _check_mlp_weights("mlp_fused", fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                              layer_norm, norm_weight, norm_bias)
    torch._check(x.dim() >= 1 and x.shape[-1] == C,
                 lambda: f"mlp_fused: x must be [..., C] with C = {C}, got shape {list(x.shape)}")
    _check_devices("mlp_fused", "fc1_weight", fc1_weight, x=x)
    return x.new_empty(x.shape)


@torch.library.register_fake("edgevit::mlp_prepare")
def _mlp_prepare_fake(fc1_weight, fc1_bias, fc2_weight, fc2_bias, layer_norm, norm_weight,
                      norm_bias):
    C, hidden = _check_mlp_weights("mlp_prepare", fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                   layer_norm, norm_weight, norm_bias)
    numel = torch.ops.edgevit.mlp_prepared_numel(C, hidden, fc1_weight.dtype)
    return fc1_weight.new_empty((numel,))


@torch.library.register_fake("edgevit::mlp_fused_prepared")
def _mlp_fused_prepared_fake(x, prepared, norm_eps, residual):
    torch._check(prepared.dim() == 1 and prepared.dtype == x.dtype,
                 lambda: "mlp_fused_prepared: prepared must be a 1-D tensor of x's dtype made by "
                         "edgevit::mlp_prepare")
    _check_devices("mlp_fused_prepared", "x", x, prepared=prepared)
    return x.new_empty(x.shape)


_register_autograd_via_reference("edgevit::mlp_fused", mlp_reference, (0, 1, 2, 3, 4, 6, 7))


# ---------------------------------------------------------------------------------------------
# patch_embed: EdgeViT's PatchEmbed, p x p stride-p convolution + LayerNorm, channels_last out.


def patch_embed(x: Tensor, weight: Tensor, bias: Optional[Tensor], layer_norm: bool = True,
                norm_weight: Optional[Tensor] = None, norm_bias: Optional[Tensor] = None,
                norm_eps: float = 1e-5) -> Tensor:
    """EdgeViT's PatchEmbed as one op (CPU): ``conv2d(x, weight, bias, stride=p)`` for a square
    ``weight`` [Cout, Cin, p, p], then (``layer_norm``) LayerNorm over Cout with the optional
    affine. ``x`` is [B, Cin, H, W] in any layout; returns a channels_last
    [B, Cout, H // p, W // p] tensor of x's dtype (float32 or float64). One GEMM per block of 32
    output pixels with the LayerNorm applied in its epilogue. Differentiable (the backward
    recomputes through ``edgevit_kernels.reference.patch_embed_reference``)."""
    return torch.ops.edgevit.patch_embed.default(x, weight, bias, layer_norm, norm_weight,
                                                 norm_bias, norm_eps)


def patch_embed_prepare(weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The weight preparation of ``patch_embed`` alone (CPU): the weight re-laid out and packed
    for the ISA in use, and the bias. An opaque 1-D tensor for ``patch_embed_prepared``."""
    return torch.ops.edgevit.patch_embed_prepare.default(weight, bias)


def patch_embed_prepared(x: Tensor, prepared: Tensor, out_channels: int, patch: int,
                         layer_norm: bool = True, norm_weight: Optional[Tensor] = None,
                         norm_bias: Optional[Tensor] = None, norm_eps: float = 1e-5) -> Tensor:
    """``patch_embed`` with the weight from ``patch_embed_prepare`` (CPU, inference: no
    autograd). ``out_channels`` and ``patch`` are the weight's Cout and p (they give the output
    shape without reading ``prepared``; checked against it). Raises if ``prepared`` does not
    match ``x`` or was packed for another ISA."""
    return torch.ops.edgevit.patch_embed_prepared.default(x, prepared, out_channels, patch,
                                                          layer_norm, norm_weight, norm_bias,
                                                          norm_eps)


def _patch_embed_out(op, x, Cin, Cout, p):
    torch._check(x.dim() == 4 and x.shape[1] == Cin,
                 lambda: f"{op}: x must be [B, Cin, H, W] with Cin = {Cin}, got shape {list(x.shape)}")
    torch._check(x.shape[2] >= p and x.shape[3] >= p,
                 lambda: f"{op}: x must be at least one patch ({p}x{p}) in H and W")
    return x.new_empty((x.shape[0], Cout, x.shape[2] // p, x.shape[3] // p)).contiguous(
        memory_format=torch.channels_last)


@torch.library.register_fake("edgevit::patch_embed")
def _patch_embed_fake(x, weight, bias, layer_norm, norm_weight, norm_bias, norm_eps):
    torch._check(weight.dim() == 4 and weight.shape[2] == weight.shape[3],
                 lambda: f"patch_embed: weight must be [Cout, Cin, p, p] (a square patch), got "
                         f"shape {list(weight.shape)}")
    _check_devices("patch_embed", "weight", weight, x=x, bias=bias, norm_weight=norm_weight,
                   norm_bias=norm_bias)
    return _patch_embed_out("patch_embed", x, weight.shape[1], weight.shape[0], weight.shape[2])


@torch.library.register_fake("edgevit::patch_embed_prepare")
def _patch_embed_prepare_fake(weight, bias):
    torch._check(weight.dim() == 4 and weight.shape[2] == weight.shape[3],
                 lambda: "patch_embed_prepare: weight must be [Cout, Cin, p, p] (a square patch)")
    _check_devices("patch_embed_prepare", "weight", weight, bias=bias)
    Cout, Cin, p = weight.shape[0], weight.shape[1], weight.shape[2]
    return weight.new_empty((torch.ops.edgevit.patch_embed_prepared_numel(Cin, Cout, p, weight.dtype),))


@torch.library.register_fake("edgevit::patch_embed_prepared")
def _patch_embed_prepared_fake(x, prepared, out_channels, patch, layer_norm, norm_weight,
                               norm_bias, norm_eps):
    torch._check(prepared.dim() == 1 and prepared.dtype == x.dtype,
                 lambda: "patch_embed_prepared: prepared must be a 1-D tensor of x's dtype made "
                         "by edgevit::patch_embed_prepare")
    torch._check(out_channels >= 1 and patch >= 1,
                 lambda: f"patch_embed_prepared: out_channels and patch must be >= 1, got "
                         f"{out_channels} and {patch}")
    _check_devices("patch_embed_prepared", "x", x, prepared=prepared, norm_weight=norm_weight,
                   norm_bias=norm_bias)
    return _patch_embed_out("patch_embed_prepared", x, x.shape[1], out_channels, patch)


_register_autograd_via_reference("edgevit::patch_embed", patch_embed_reference, (0, 1, 2, 4, 5))
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


_register_autograd("edgevit::dwconv", _dwconv_backward, _dwconv_setup_context, dwconv_reference)


# ---------------------------------------------------------------------------------------------
# linear_fused: out = x W^T + b [+ residual] (LocalAgg's 1x1 convolutions). CPU only.


def linear_fused(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                 residual: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias) [+ residual]`` in one pass (CPU): ``x`` [..., in_features],
    ``weight`` [out_features, in_features], ``residual`` of the output's shape. Returns a
    contiguous tensor (float32 or float64). Differentiable (the backward recomputes through
    ``edgevit_kernels.reference.linear_reference``)."""
    return torch.ops.edgevit.linear_fused.default(x, weight, bias, residual)


def linear_prepare(weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """The weight packing of ``linear_fused`` alone (CPU), for ``linear_fused_prepared``."""
    return torch.ops.edgevit.linear_prepare.default(weight, bias)


def linear_fused_prepared(x: Tensor, prepared: Tensor, out_features: int,
                          residual: Optional[Tensor] = None) -> Tensor:
    """``linear_fused`` with the weight from ``linear_prepare`` (CPU, inference: no autograd).
    ``out_features`` gives the output shape without reading ``prepared`` (checked against it)."""
    return torch.ops.edgevit.linear_fused_prepared.default(x, prepared, out_features, residual)


def _linear_out(op, x, K, N, residual):
    torch._check(x.dim() >= 1 and x.shape[-1] == K,
                 lambda: f"{op}: x must be [..., in_features] with in_features = {K}, got shape "
                         f"{list(x.shape)}")
    shape = (*x.shape[:-1], N)
    if residual is not None:
        torch._check(tuple(residual.shape) == tuple(shape),
                     lambda: f"{op}: residual must have the output's shape {list(shape)}")
    return x.new_empty(shape)


@torch.library.register_fake("edgevit::linear_fused")
def _linear_fused_fake(x, weight, bias, residual):
    torch._check(weight.dim() == 2, lambda: "linear_fused: weight must be a non-empty 2-D "
                                            "[out_features, in_features] tensor")
    _check_devices("linear_fused", "weight", weight, x=x, bias=bias, residual=residual)
    return _linear_out("linear_fused", x, weight.shape[1], weight.shape[0], residual)


@torch.library.register_fake("edgevit::linear_prepare")
def _linear_prepare_fake(weight, bias):
    torch._check(weight.dim() == 2, lambda: "linear_prepare: weight must be 2-D")
    _check_devices("linear_prepare", "weight", weight, bias=bias)
    N, K = weight.shape
    return weight.new_empty((torch.ops.edgevit.linear_prepared_numel(K, N, weight.dtype),))


@torch.library.register_fake("edgevit::linear_fused_prepared")
def _linear_fused_prepared_fake(x, prepared, out_features, residual):
    torch._check(prepared.dim() == 1 and prepared.dtype == x.dtype,
                 lambda: "linear_fused_prepared: prepared must be a 1-D tensor of x's dtype made "
                         "by edgevit::linear_prepare")
    torch._check(out_features >= 1,
                 lambda: f"linear_fused_prepared: out_features must be >= 1, got {out_features}")
    _check_devices("linear_fused_prepared", "x", x, prepared=prepared, residual=residual)
    return _linear_out("linear_fused_prepared", x, x.shape[-1], out_features, residual)


_register_autograd_via_reference("edgevit::linear_fused", linear_reference, (0, 1, 2, 3))


for _op, _instead in (("lgl_fused_prepared", "lgl_fused"), ("mlp_fused_prepared", "mlp_fused"),
                      ("patch_embed_prepared", "patch_embed"),
                      ("linear_fused_prepared", "linear_fused")):
    _register_no_autograd(f"edgevit::{_op}", f"edgevit::{_instead}")
