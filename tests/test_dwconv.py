"""edgevit::dwconv: depthwise k x k convolution (stride 1, padding k//2) on channels_last maps,
with an optional fused residual, against ``dwconv_reference`` (F.conv2d + x) in every ISA this
CPU runs.

Tolerances. float32: atol = rtol = 1e-5. The kernel sums bias, the k*k taps and the residual in
one fixed order with FMAs (SIMD) or mul + add (scalar); mkldnn's conv sums in its own order. Each
of the <= 51 terms is O(1) here, so the two differ by a few float32 ulps of values of size
O(10): ~1e-6, with margin. float64 runs the scalar kernel: 1e-12.
"""
import pytest
import torch
import torch.nn.functional as F

import edgevit_kernels
from edgevit_kernels import dwconv, dwconv_reference

ISAS = edgevit_kernels.supported_cpu_isas()
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}

# (C, H) of EdgeViT-XXS/XS local aggregation and positional encoding (square maps).
EDGEVIT_SHAPES = [(36, 56), (72, 28), (144, 14), (288, 7), (48, 56), (96, 28), (240, 14), (384, 7)]


def make(B, C, H, W, k, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, 1, k, k, generator=g, dtype=dtype) / k
    b = torch.randn(C, generator=g, dtype=dtype) if bias else None
    return x, w, b


def check(x, w, b, residual, dtype=None):
    out = dwconv(x, w, b, residual)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, dwconv_reference(x, w, b, residual), **TOL[x.dtype])
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("C,H", EDGEVIT_SHAPES, ids=lambda v: str(v))
def test_edgevit_shapes(C, H, k, residual, dtype, isa):
    check(*make(1, C, H, H, k, dtype), residual)


@pytest.mark.parametrize("C,H,k", [(36, 56, 3), (144, 14, 5), (384, 7, 3)])
def test_batch(C, H, k, isa):
    check(*make(2, C, H, H, k), True)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("HW", [(1, 1), (2, 3), (3, 1), (1, 2), (6, 5)], ids=str)
@pytest.mark.parametrize("C", [1, 3, 5, 15, 17, 31, 33])
def test_awkward_shapes(C, HW, k, isa):
    H, W = HW
    for dtype in (torch.float32, torch.float64):
        x, w, b = make(2 if C % 2 else 1, C, H, W, k, dtype, bias=C % 3 != 0, seed=C + k)
        check(x, w, b, residual=(C + H + k) % 2 == 0)


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_bias_none(bias, isa):
    check(*make(1, 17, 9, 7, 3, bias=bias), False)


def test_any_input_layout(isa):
    x, w, b = make(2, 40, 12, 10, 3)
    nchw = x.contiguous()
    check(nchw, w, b, True)
    # A non-contiguous slice (channels, rows and columns strided), weights and bias strided too.
    big = torch.randn(3, 80, 25, 21)
    xs = big[::2, ::2, 1::2, ::2]
    ws = torch.randn(40, 2, 3, 3)[:, :1]
    bs = torch.randn(80)[::2]
    assert not xs.is_contiguous() and not xs.is_contiguous(memory_format=torch.channels_last)
    check(xs, ws, bs, True)
    assert torch.equal(dwconv(xs, ws, bs, True), dwconv(xs.contiguous(), ws.contiguous(), bs.contiguous(), True))


def test_empty_batch():
    x = torch.randn(0, 8, 5, 5)
    out = dwconv(x, torch.randn(8, 1, 3, 3))
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(1, 72, 28, 28, 3), (2, 36, 56, 56, 5), (1, 384, 7, 7, 3)])
def test_thread_count_does_not_change_bits(shape, isa):
    x, w, b = make(*shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dwconv(x, w, b, True)
        torch.set_num_threads(2)
        two = dwconv(x, w, b, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("args", [(1, 8, 5, 6, 3, True, False), (2, 5, 4, 3, 5, False, True),
                                  (1, 3, 2, 2, 1, True, True)], ids=str)
def test_opcheck(args):
    B, C, H, W, k, bias, residual = args
    x, w, b = make(B, C, H, W, k, torch.float64, bias=bias)
    x.requires_grad_(True)
    w.requires_grad_(True)
    if b is not None:
        b.requires_grad_(True)
    torch.library.opcheck(torch.ops.edgevit.dwconv.default, (x, w, b, residual))


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_gradcheck(bias, residual):
    x, w, b = make(2, 3, 5, 4, 3, torch.float64, bias=bias)
    inputs = [x.requires_grad_(True), w.requires_grad_(True)]
    if bias:
        inputs.append(b.requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda x, w, *b: dwconv(x, w, b[0] if b else None, residual), inputs)


def test_gradients_match_reference():
    x, w, b = make(1, 6, 7, 7, 5, torch.float64)
    ref = [t.clone().requires_grad_(True) for t in (x, w, b)]
    got = [t.clone().requires_grad_(True) for t in (x, w, b)]
    g = torch.randn(x.shape, dtype=torch.float64)
    dwconv_reference(*ref, True).backward(g)
    dwconv(*got, True).backward(g)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a.grad, r.grad, atol=1e-12, rtol=1e-12)


def test_compile_fullgraph():
    x, w, b = make(1, 24, 9, 9, 3)

    def f(x, w, b):
        return F.gelu(dwconv(x, w, b, True)) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, w, b), f(x, w, b))


def test_cuda_has_no_kernel():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, w, b = (t.cuda() for t in make(1, 8, 5, 5, 3))
    with pytest.raises(NotImplementedError, match="edgevit::dwconv"):
        dwconv(x, w, b)


# ---------------------------------------------------------------- bad input


def test_bad_x():
    w = torch.randn(8, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r"dwconv: x must be 4-D \[B, C, H, W\], got shape \[8, 5, 5\]"):
        dwconv(torch.randn(8, 5, 5), w)
    with pytest.raises(RuntimeError, match=r"dwconv: x must be float32 or float64, got Half"):
        dwconv(torch.randn(1, 8, 5, 5).half(), w.half())


@pytest.mark.parametrize("shape", [(8, 1, 4, 4), (8, 1, 9, 9), (8, 2, 3, 3), (4, 1, 3, 3),
                                   (8, 1, 3, 5), (8, 9)], ids=str)
def test_bad_weight_shape(shape):
    with pytest.raises(RuntimeError, match=r"dwconv: weight must have shape \[C, 1, k, k\] with "
                                           r"C = x.size\(1\) = 8 and odd k <= 7, got \["):
        dwconv(torch.randn(1, 8, 5, 5), torch.randn(shape))


def test_bad_weight_dtype_and_device():
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(RuntimeError, match=r"dwconv: weight must have the dtype of x \(Float\), got Double"):
        dwconv(x, torch.randn(8, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"dwconv: weight must be on the device of x \(cpu\), got meta"):
        dwconv(x, torch.randn(8, 1, 3, 3, device="meta"))


def test_bad_bias():
    x, w = torch.randn(1, 8, 5, 5), torch.randn(8, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r"dwconv: bias must have shape \[C\] with C = x.size\(1\) = 8, got \[7\]"):
        dwconv(x, w, torch.randn(7))
    with pytest.raises(RuntimeError, match=r"dwconv: bias must have the dtype of x \(Float\), got Double"):
        dwconv(x, w, torch.randn(8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"dwconv: bias must be on the device of x \(cpu\), got meta"):
        dwconv(x, w, torch.randn(8, device="meta"))
