"""Triton (GPU) forward of ``edgevit::lgl_fused``.

Importing this package raises ImportError when Triton is not installed, so callers can guard
with ``try: import edgevit_kernels.triton`` and keep the CPU path working without it.
"""
from __future__ import annotations

try:
    import triton  # noqa: F401
except ImportError as exc:  # re-raised with a hint; some broken installs raise other errors
    raise ImportError("edgevit_kernels.triton requires the 'triton' package") from exc

from .lgl_fused import lgl_fused_triton

# edgevit_kernels.ops registers the CUDA kernel of edgevit::lgl_fused (a shim that imports this
# package on the first CUDA call).
__all__ = ["lgl_fused_triton"]
