"""Triton (GPU) forward of ``edgevit::lgl_fused``.

Importing this package raises ImportError when Triton is not installed, so callers can guard
with ``try: import edgevit_kernels.triton`` and keep the CPU path working without it.
"""
from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError as exc:  # re-raised with a hint; some broken installs raise other errors
    raise ImportError("edgevit_kernels.triton requires the 'triton' package") from exc

import torch

from .lgl_fused import lgl_fused_triton

__all__ = ["lgl_fused_triton", "register_cuda_kernel"]

_OP = "edgevit::lgl_fused"
_registered = False


def register_cuda_kernel() -> None:
    """Register ``lgl_fused_triton`` as the CUDA kernel of ``edgevit::lgl_fused``.

    The op schema must already be defined (by loading ``edgevit_kernels._C``). Does nothing if
    a CUDA kernel is already registered -- e.g. ``edgevit_kernels.ops`` installs a shim that
    imports this package lazily -- since a second registration would silently override it.
    """
    global _registered
    if _registered:
        return
    try:
        torch.ops.edgevit.lgl_fused
    except (AttributeError, RuntimeError) as exc:
        raise RuntimeError(
            f"{_OP} is not defined; load edgevit_kernels._C before register_cuda_kernel()") from exc
    if not torch._C._dispatch_has_kernel_for_dispatch_key(_OP, "CUDA"):
        # register_kernel keeps its Library alive and hides the body from dynamo, so
        # torch.compile treats the op as opaque (it then relies on the op's fake kernel).
        torch.library.register_kernel(_OP, "cuda", lgl_fused_triton)
    _registered = True
