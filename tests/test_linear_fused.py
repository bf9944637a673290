"""edgevit::linear_fused, linear_prepare and linear_fused_prepared (Linear + residual in one pass,
LocalAgg's 1x1 convolutions) against ``edgevit_kernels.linear_reference``, in every ISA here.

Tolerances: float32 1e-5 relative to the output's scale (sums of <= 384 products in another
order than MKL's; ~1e-6 seen), float64 1e-10.
"""
import pytest
import torch

import edgevit_kernels
from edgevit_kernels import linear_fused, linear_fused_prepared, linear_prepare, linear_reference

ISAS = edgevit_kernels.supported_cpu_isas()
# (rows, in, out): LocalAgg's 1x1 convolutions of XXS and XS/S at 224x224, then awkward ones.
SHAPES = [(3136, 36, 36), (784, 72, 72), (196, 144, 144), (3136, 48, 48), (784, 96, 96),
          (196, 240, 240), (1, 1, 1), (63, 5, 17), (65, 33, 7), (130, 16, 100)]


def make(M, K, N, dtype=torch.float32, lead=(1,), bias=True, residual=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    return (rnd(*lead, M, K), rnd(N, K, scale=K ** -0.5), rnd(N) if bias else None,
            rnd(*lead, M, N) if residual else None)


def check(x, w, b, r):
    ref = linear_reference(x, w, b, r)
    out = linear_fused(x, w, b, r)
    assert torch.equal(linear_fused_prepared(x, linear_prepare(w, b), w.shape[0], r), out)
    assert out.shape == ref.shape and out.is_contiguous()
    if ref.dtype == torch.float64:
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    else:
        scale = max(1.0, ref.abs().max().item())
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("bias,residual", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_against_reference(shape, bias, residual, isa):
    check(*make(*shape, bias=bias, residual=residual))


@pytest.mark.parametrize("shape", SHAPES[6:] + [(196, 144, 144)], ids=str)
def test_float64(shape):
    check(*make(*shape, dtype=torch.float64, lead=(2,)))


def test_strided_inputs(isa):
    x, w, b, r = make(10, 12, 20, lead=(3,))
    check(x.transpose(0, 1), w, b, r.transpose(0, 1))


def test_bitwise_identical_for_any_thread_count():
    args = make(3136, 36, 36, lead=(2,))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = linear_fused(*args)
        torch.set_num_threads(max(2, threads))
        many = linear_fused(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_opcheck_gradients_and_compile():
    x, w, b, r = make(20, 6, 10, lead=(2,))
    torch.library.opcheck(torch.ops.edgevit.linear_fused.default, (x, w, b, r))
    torch.library.opcheck(torch.ops.edgevit.linear_prepare.default, (w, b))
    prepared = linear_prepare(w, b)
    torch.library.opcheck(torch.ops.edgevit.linear_fused_prepared.default, (x, prepared, 10, r))
    f = torch.compile(lambda x, p, r: linear_fused_prepared(x, p, 10, r) * 2, fullgraph=True,
                      backend="eager")
    torch.testing.assert_close(f(x, prepared, r), 2 * linear_fused(x, w, b, r))
    args = [t.double().requires_grad_() for t in make(3, 4, 5)]
    torch.autograd.gradcheck(linear_fused, tuple(args))


def test_errors():
    x, w, b, r = make(4, 6, 8)
    with pytest.raises(RuntimeError, match=r"linear_fused: weight must be a non-empty 2-D \[out_features, in_features\] tensor, got shape \[8\]"):
        linear_fused(x, w[:, 0], b, r)
    with pytest.raises(RuntimeError, match=r"linear_fused: x must be \[\.\.\., in_features\] with in_features = 6, got shape \[1, 4, 5\]"):
        linear_fused(x[..., :5], w, b, r)
    with pytest.raises(RuntimeError, match=r"linear_fused: bias must have shape \[8\], got \[6\]"):
        linear_fused(x, w, b[:6], r)
    with pytest.raises(RuntimeError, match=r"linear_fused: residual must have the output's shape \[1, 4, 8\], got \[1, 4, 6\]"):
        linear_fused(x, w, b, x)
    with pytest.raises(RuntimeError, match=r"linear_fused: x must have the weights' dtype \(Float\), got Double"):
        linear_fused(x.double(), w, b, r)
    prepared = linear_prepare(w, b)
    with pytest.raises(RuntimeError, match="prepared holds a weight of 8 out_features, but out_features = 9 was given"):
        linear_fused_prepared(x, prepared, 9, r)
    with pytest.raises(RuntimeError, match="prepared was not made by edgevit::linear_prepare"):
        linear_fused_prepared(x, torch.zeros_like(prepared), 8)
    with pytest.raises(RuntimeError, match=r"prepared has \d+ elements, expected \d+"):
        linear_fused_prepared(x, prepared[:-1].clone(), 8)
