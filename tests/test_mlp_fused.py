"""edgevit::mlp_fused, mlp_prepare and mlp_fused_prepared (the blocks' MLP) against the pure-PyTorch
reference ``edgevit_kernels.mlp_reference``, in every ISA this CPU has.

Tolerances. float64 runs the scalar kernels with std::erf: 1e-10 (sums of <= 1536 products in
another order than ATen's). float32: the SIMD GELU uses the Abramowitz-Stegun erf (|error| <=
1.5e-7, ATen's own vectorised formula) and the products are summed in another order than MKL's,
over up to 1536 terms, so we allow 2e-5 relative to the output's scale (max(1, max |ref|)); the
differences seen are ~1e-6.
"""
import pytest
import torch

import edgevit_kernels
from lgl_samples import cpu_isa
from edgevit_kernels import mlp_fused, mlp_fused_prepared, mlp_prepare, mlp_reference

ISAS = edgevit_kernels.supported_cpu_isas()

# (rows, C) of every EdgeViT MLP at 224x224 (hidden = 4C), XXS then XS/S.
EDGEVIT_SHAPES = [(3136, 36), (784, 72), (196, 144), (49, 288),
                  (3136, 48), (784, 96), (196, 240), (49, 384)]
# (rows, C, hidden): channel tails of every vector width, one-row and block-edge row counts.
AWKWARD_SHAPES = [(1, 1, 1), (1, 3, 5), (31, 5, 7), (32, 17, 13), (33, 33, 64), (65, 16, 40),
                  (7, 100, 3), (97, 15, 129)]


def make(rows, C, hidden, dtype=torch.float32, lead=(1,), bias=True, affine=True, seed=0,
         x_offset=0.0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    x = rnd(*lead, rows, C, scale=1.5) + x_offset
    w = dict(fc1_weight=rnd(hidden, C, scale=C ** -0.5), fc1_bias=rnd(hidden) if bias else None,
             fc2_weight=rnd(C, hidden, scale=hidden ** -0.5), fc2_bias=rnd(C) if bias else None,
             norm_weight=1 + rnd(C, scale=0.3) if affine else None,
             norm_bias=rnd(C, scale=0.3) if affine else None)
    return x, w


def weights_for(w, layer_norm):
    return (w["fc1_weight"], w["fc1_bias"], w["fc2_weight"], w["fc2_bias"], layer_norm,
            w["norm_weight"] if layer_norm else None, w["norm_bias"] if layer_norm else None)


def check_close(out, ref):
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.is_contiguous()
    if ref.dtype == torch.float64:
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    else:
        scale = max(1.0, ref.abs().max().item())
        torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5 * scale)


def run_all(x, w, layer_norm, residual, eps=1e-6):
    ws = weights_for(w, layer_norm)
    ref = mlp_reference(x, *ws, eps, residual)
    out = mlp_fused(x, *ws, eps, residual)
    prepared = mlp_prepare(*ws)
    assert torch.equal(mlp_fused_prepared(x, prepared, eps, residual), out)  # same kernels
    return out, ref


@pytest.mark.parametrize("layer_norm,residual", [(True, True), (False, True), (True, False),
                                                 (False, False)])
@pytest.mark.parametrize("rows,C", EDGEVIT_SHAPES, ids=lambda v: str(v))
def test_edgevit_shapes(rows, C, layer_norm, residual, isa):
    x, w = make(rows, C, 4 * C)
    check_close(*run_all(x, w, layer_norm, residual))


@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_awkward_shapes(shape, dtype, isa):
    rows, C, hidden = shape
    for layer_norm, residual in ((True, True), (False, False)):
        x, w = make(rows, C, hidden, dtype=dtype, lead=(2,))
        check_close(*run_all(x, w, layer_norm, residual))


def test_float64_edgevit_shape():
    x, w = make(196, 144, 576, dtype=torch.float64)
    check_close(*run_all(x, w, True, True))


@pytest.mark.parametrize("bias,affine", [(False, False), (False, True), (True, False)])
def test_optional_biases_and_affine(bias, affine, isa):
    x, w = make(50, 24, 96, bias=bias, affine=affine)
    check_close(*run_all(x, w, True, True))


def test_layer_norm_large_mean(isa):
    # Two-pass statistics: a common offset of 1e3 costs what it costs the float32 reference
    # (whose input already rounds at ~6e-5): both are measured against float64.
    x, w = make(64, 48, 192, x_offset=1e3)
    out, ref = run_all(x, w, True, False)
    ws64 = [t.double() if isinstance(t, torch.Tensor) else t for t in weights_for(w, True)]
    exact = mlp_reference(x.double(), *ws64, 1e-6, False)
    assert (out.double() - exact).abs().max() <= 2 * (ref.double() - exact).abs().max() + 1e-5


def test_gelu_extremes(isa):
    # Inputs up to |h| ~ 40 through fc1: erf saturates, GELU(h) -> h or 0.
    x, w = make(40, 16, 64)
    w["fc1_weight"] = w["fc1_weight"] * 30
    check_close(*run_all(x, w, False, True))


def test_any_leading_dims_and_strides(isa):
    x, w = make(6, 20, 80, lead=(2, 3))
    ws = weights_for(w, True)
    xt = x.transpose(0, 1)  # [3, 2, 6, 20], not contiguous
    out = mlp_fused(xt, *ws, 1e-5, True)
    check_close(out, mlp_reference(xt, *ws, 1e-5, True))
    assert out.shape == xt.shape


def test_empty_rows():
    x, w = make(0, 8, 16)
    out = mlp_fused(x, *weights_for(w, True), 1e-5, True)
    assert out.shape == x.shape


def test_bitwise_identical_for_any_thread_count():
    x, w = make(1000, 36, 144, lead=(2,))
    ws = weights_for(w, True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mlp_fused(x, *ws, 1e-6, True)
        torch.set_num_threads(max(2, threads))
        many = mlp_fused(x, *ws, 1e-6, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_opcheck():
    x, w = make(40, 12, 48, lead=(2,))
    for layer_norm in (True, False):
        ws = weights_for(w, layer_norm)
        torch.library.opcheck(torch.ops.edgevit.mlp_fused.default, (x, *ws, 1e-5, True))
        torch.library.opcheck(torch.ops.edgevit.mlp_prepare.default, ws)
        torch.library.opcheck(torch.ops.edgevit.mlp_fused_prepared.default,
                              (x, mlp_prepare(*ws), 1e-5, False))


def test_gradients_against_reference():
    x, w = make(5, 6, 10, dtype=torch.float64, lead=(2,))
    ws = [t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in weights_for(w, True)]
    x.requires_grad_()
    torch.autograd.gradcheck(lambda x, *t: mlp_fused(x, t[0], t[1], t[2], t[3], True, t[4], t[5],
                                                     1e-5, True),
                             (x, ws[0], ws[1], ws[2], ws[3], ws[5], ws[6]))


def test_torch_compile_fullgraph():
    x, w = make(70, 24, 96, lead=(2,))
    ws = weights_for(w, True)
    prepared = mlp_prepare(*ws)
    f = torch.compile(lambda x, p: mlp_fused_prepared(x, p, 1e-6, True) * 2, fullgraph=True,
                      backend="eager")
    torch.testing.assert_close(f(x, prepared), 2 * mlp_fused(x, *ws, 1e-6, True))


def test_errors():
    x, w = make(4, 8, 16)
    fc1, b1, fc2, b2, _, nw, nb = weights_for(w, True)
    with pytest.raises(RuntimeError, match=r"mlp_fused: fc1_weight must be 2-D \[hidden, C\], got shape \[16\]"):
        mlp_fused(x, fc1[:, 0], b1, fc2, b2)
    with pytest.raises(RuntimeError, match=r"mlp_fused: fc2_weight must have shape \[8, 16\], got \[16, 8\]"):
        mlp_fused(x, fc1, b1, fc1, b2)
    with pytest.raises(RuntimeError, match=r"mlp_fused: fc1_bias must have shape \[16\], got \[8\]"):
        mlp_fused(x, fc1, b2, fc2, b2)
    with pytest.raises(RuntimeError, match="norm_weight and norm_bias must be None when layer_norm is False"):
        mlp_fused(x, fc1, b1, fc2, b2, False, nw, nb)
    with pytest.raises(RuntimeError, match=r"mlp_fused: x must be \[\.\.\., C\] with C = 8 \(the weights' features\), got shape \[1, 4, 9\]"):
        mlp_fused(torch.randn(1, 4, 9), fc1, b1, fc2, b2)
    with pytest.raises(RuntimeError, match=r"mlp_fused: x must have the weights' dtype \(Float\), got Double"):
        mlp_fused(x.double(), fc1, b1, fc2, b2)
    with pytest.raises(RuntimeError, match=r"mlp_fused: fc2_bias must have the dtype of fc1_weight \(Float\), got Double"):
        mlp_fused(x, fc1, b1, fc2, b2.double())
    with pytest.raises(RuntimeError, match="the weights must be float32 or float64, got Half"):
        mlp_prepare(fc1.half(), None, fc2.half(), None)
    prepared = mlp_prepare(fc1, b1, fc2, b2, True, nw, nb)
    with pytest.raises(RuntimeError, match=r"mlp_fused_prepared: x must be \[\.\.\., C\] with C = 8"):
        mlp_fused_prepared(torch.randn(2, 5), prepared)
    with pytest.raises(RuntimeError, match="prepared was not made by edgevit::mlp_prepare"):
        mlp_fused_prepared(x, torch.zeros_like(prepared))
    with pytest.raises(RuntimeError, match=r"prepared has \d+ elements, expected \d+"):
        mlp_fused_prepared(x, prepared[:-1].clone())
    with pytest.raises(RuntimeError, match="prepared must be a contiguous 1-D tensor"):
        mlp_fused_prepared(x, prepared[None])
    with pytest.raises(RuntimeError, match=r"x must have the dtype and device of prepared \(Float, cpu\), got Double, cpu"):
        mlp_fused_prepared(x.double(), prepared)


@pytest.mark.skipif(len(ISAS) < 2, reason="needs two ISAs")
def test_prepared_for_another_isa():
    x, w = make(4, 8, 16)
    ws = weights_for(w, True)
    with cpu_isa(ISAS[-1]):
        prepared = mlp_prepare(*ws)
    with cpu_isa(ISAS[0]), pytest.raises(
            RuntimeError, match=f"prepared was packed for ISA '{ISAS[-1]}', but the op now runs "
                                f"'{ISAS[0]}'"):
        mlp_fused_prepared(x, prepared)
