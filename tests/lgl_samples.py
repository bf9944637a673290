"""Shared inputs of the lgl_fused tests: argument builders and the shape lists reused by the
correctness, gradient and opcheck tests (and the Triton tests)."""
from __future__ import annotations

from contextlib import contextmanager

import torch

# (B, H, W, C, num_heads, sr_ratio): the EdgeViT stages at 224x224 ...
EDGEVIT_SHAPES = [
    (1, 56, 56, 36, 1, 4), (1, 28, 28, 72, 2, 2), (1, 14, 14, 144, 4, 2), (1, 7, 7, 288, 8, 1),  # XXS
    (1, 56, 56, 48, 1, 4), (1, 28, 28, 96, 2, 2), (1, 14, 14, 240, 5, 2), (1, 7, 7, 384, 8, 1),  # XS, S
]
# ... and awkward ones: r not dividing H or W, r larger than the map, 1x1 maps, non-square,
# every r in {1, 2, 3, 4, 8}, heads 1..8, one channel per head, B in {0, 1, 3}.
AWKWARD_SHAPES = [
    (3, 5, 7, 16, 2, 2), (1, 9, 6, 24, 3, 4), (3, 13, 11, 40, 5, 3), (1, 1, 1, 8, 1, 1),
    (1, 1, 1, 8, 2, 4), (2, 3, 2, 12, 4, 8), (1, 17, 9, 64, 8, 8), (3, 10, 4, 6, 6, 3),
    (0, 4, 4, 8, 2, 2), (0, 3, 3, 8, 1, 1), (1, 25, 31, 48, 6, 4), (2, 7, 12, 32, 4, 1),
    (1, 2, 30, 20, 5, 2), (1, 50, 3, 36, 1, 8), (3, 6, 6, 384, 6, 2),
]


def make_args(B, H, W, C, num_heads, r, dtype=torch.float32, device="cpu", seed=0,
              qkv_bias=True, proj_bias=True, x_offset=0.0):
    """Positional arguments of lgl_fused, with weights scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0, mean=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean).to(dtype=dtype, device=device)

    x = randn(B, H * W, C, mean=x_offset)
    args = [x, H, W, num_heads, r, (C // num_heads) ** -0.5,
            randn(3 * C, C, std=C ** -0.5), randn(3 * C, std=0.1) if qkv_bias else None]
    if r > 1:
        args += [randn(C, 1, r, r), randn(C, std=0.1), randn(C, std=0.2, mean=1.0), randn(C, std=0.1)]
    else:
        args += [None, None, None, None]
    args += [1e-5, randn(C, C, std=C ** -0.5), randn(C, std=0.1) if proj_bias else None]
    return args


def shape_id(shape):
    B, H, W, C, heads, r = shape
    return f"B{B}-{H}x{W}-C{C}-h{heads}-r{r}"


@contextmanager
def cpu_isa(name):
    """Run the block with the CPU ops on ISA `name` (edgevit_kernels.set_cpu_isa), then restore
    the ISA in use before."""
    import edgevit_kernels

    previous = edgevit_kernels.cpu_isa()
    assert edgevit_kernels.set_cpu_isa(name) == name
    try:
        yield
    finally:
        edgevit_kernels.set_cpu_isa(previous)
