"""edgevit::lgl_prepare + edgevit::lgl_fused_prepared: lgl_fused in two steps (weights prepared
once, then the op on any x).

lgl_fused runs the same kernels, on weights it prepares for its one call: with r = 1, or where
the ISA's panel width does not divide C, exactly lgl_prepare's buffer, so the prepared path must
match it bitwise; elsewhere it may pick the A-tile form of the fold (the same sums rounded in
another order), so they agree to float rounding (SAME below). Against the reference both have lgl_fused's tolerances
(tests/test_lgl_fused.py).
"""
import pytest
import torch

import edgevit_kernels
from edgevit_kernels import (lgl_block_reference, lgl_fused, lgl_fused_prepared, lgl_prepare,
                             lgl_reference)
from lgl_samples import AWKWARD_SHAPES, EDGEVIT_SHAPES, cpu_isa, make_args, shape_id

ISAS = edgevit_kernels.supported_cpu_isas()


def split(args):
    """lgl_fused's positional args -> (x, H, W, heads, r, scale, eps), the weight args."""
    x, H, W, heads, r, scale, qw, qb, pw, pb, nw, nb, eps, prw, prb = args
    return (x, H, W, heads, r, scale, eps), (qw, qb, pw, pb, nw, nb, prw, prb, r)


def run_prepared(args):
    (x, H, W, heads, r, scale, eps), weights = split(args)
    return lgl_fused_prepared(x, H, W, heads, r, scale, eps, lgl_prepare(*weights))


SAME = {torch.float32: dict(atol=2e-6, rtol=2e-6), torch.float64: dict(atol=1e-13, rtol=1e-13)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", EDGEVIT_SHAPES + AWKWARD_SHAPES, ids=shape_id)
def test_prepared_matches_lgl_fused(shape, dtype, isa):
    args = make_args(*shape, dtype=dtype)
    out, want = run_prepared(args), lgl_fused(*args)
    C, r = shape[3], shape[5]
    if r == 1 or C % 8:  # no panel width (8 or 16) divides C: the same buffer, the same bits
        assert torch.equal(out, want)
    else:
        torch.testing.assert_close(out, want, **SAME[dtype])


@pytest.mark.parametrize("shape", [(2, 14, 14, 72, 2, 2), (1, 7, 9, 40, 5, 1)], ids=shape_id)
def test_prepared_without_biases(shape, isa):
    args = make_args(*shape, qkv_bias=False, proj_bias=False)
    torch.testing.assert_close(run_prepared(args), lgl_reference(*args), atol=1e-4, rtol=1e-4)


def test_one_preparation_serves_any_x():
    args = make_args(2, 28, 28, 72, 2, 2)
    (x, H, W, heads, r, scale, eps), weights = split(args)
    prepared = lgl_prepare(*weights)
    before = prepared.clone()
    for B, seed in ((2, 1), (5, 2), (1, 3)):
        args2 = list(args)
        args2[0] = torch.randn(B, 28 * 28, 72, generator=torch.Generator().manual_seed(seed))
        out = lgl_fused_prepared(args2[0], H, W, heads, r, scale, eps, prepared)
        torch.testing.assert_close(out, lgl_fused(*args2), **SAME[torch.float32])
    assert torch.equal(prepared, before)  # read only


def test_fake_kernels_and_compile():
    args = make_args(1, 6, 5, 8, 2, 2)
    (x, H, W, heads, r, scale, eps), weights = split(args)
    prepared = lgl_prepare(*weights)
    assert prepared.shape == (torch.ops.edgevit.lgl_prepared_numel(8, 2, torch.float32),)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fw = [mode.from_tensor(w) if isinstance(w, torch.Tensor) else w for w in weights]
        fp = lgl_prepare(*fw)
        assert fp.shape == prepared.shape and fp.dtype == torch.float32
        fo = lgl_fused_prepared(mode.from_tensor(x), H, W, heads, r, scale, eps, fp)
        assert fo.shape == x.shape
    f = torch.compile(lambda x, p: lgl_fused_prepared(x, H, W, heads, r, scale, eps, p),
                      fullgraph=True, backend="aot_eager")
    assert torch.equal(f(x, prepared), lgl_fused_prepared(x, H, W, heads, r, scale, eps, prepared))


@pytest.mark.parametrize("shape", [(1, 4, 4, 8, 2, 1), (2, 5, 7, 12, 3, 2)], ids=shape_id)
def test_opcheck(shape):
    (x, H, W, heads, r, scale, eps), weights = split(make_args(*shape))
    torch.library.opcheck(torch.ops.edgevit.lgl_prepare.default, weights)
    prepared = lgl_prepare(*weights)
    torch.library.opcheck(torch.ops.edgevit.lgl_fused_prepared.default,
                          (x, H, W, heads, r, scale, eps, prepared))


# ------------------------------------------- pre_norm and residual (SelfAttn's x + attn(norm1(x)))

# Tolerances of lgl_fused (tests/test_lgl_fused.py); the input LayerNorm adds one more rounding
# step per sampled element and the residual one addition.
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def pre_norm_params(C, dtype, seed=5):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(C, generator=g, dtype=torch.float64) * 0.2 + 1.0).to(dtype)
    b = (torch.randn(C, generator=g, dtype=torch.float64) * 0.2).to(dtype)
    return w, b


def run_block(args, pre_norm, affine, residual, pre_eps=1e-6):
    (x, H, W, heads, r, scale, eps), weights = split(args)
    w, b = pre_norm_params(x.shape[-1], x.dtype) if pre_norm and affine else (None, None)
    prepared = lgl_prepare(*weights, pre_norm, w, b)
    out = lgl_fused_prepared(x, H, W, heads, r, scale, eps, prepared, pre_eps, residual)
    ref = lgl_block_reference(*args, pre_norm, w, b, pre_eps, residual)
    return out, ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", EDGEVIT_SHAPES + AWKWARD_SHAPES, ids=shape_id)
def test_pre_norm_and_residual_match_reference(shape, dtype, isa):
    args = make_args(*shape, dtype=dtype)
    for pre_norm, residual in ((True, True), (True, False), (False, True)):
        out, ref = run_block(args, pre_norm, True, residual)
        torch.testing.assert_close(out, ref, **TOL[dtype])


@pytest.mark.parametrize("shape", [(2, 14, 14, 72, 2, 2), (1, 7, 9, 40, 5, 1)], ids=shape_id)
def test_pre_norm_without_affine_and_large_offset(shape, isa):
    # No affine; then x far from zero, where a one-pass variance would lose every digit: the
    # sampled rows are standardised with shifted two-pass statistics, like F.layer_norm.
    out, ref = run_block(make_args(*shape), True, False, True)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    # Against the float64 reference of the same float32 inputs: float32 F.layer_norm is itself
    # off by ~2e-4 here (its rounding at the offset's magnitude), the kernel is not.
    args = make_args(*shape, x_offset=300.0)
    out, _ = run_block(args, True, True, False)
    args64 = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    w, b = pre_norm_params(shape[3], torch.float32)
    ref = lgl_block_reference(*args64, True, w.double(), b.double(), 1e-6, False)
    torch.testing.assert_close(out, ref.float(), **TOL[torch.float32])


def test_residual_with_strided_x(isa):
    # x as the fused model passes it: a [B, N, C] view of a channels_last map (and transposed).
    (x, H, W, heads, r, scale, eps), weights = split(make_args(2, 10, 6, 24, 3, 2))
    xs = x.transpose(1, 2).contiguous().transpose(1, 2)  # C outermost: x.stride(2) != 1
    prepared = lgl_prepare(*weights, True, *pre_norm_params(24, x.dtype))
    out = lgl_fused_prepared(xs, H, W, heads, r, scale, eps, prepared, 1e-5, True)
    assert torch.equal(out, lgl_fused_prepared(x, H, W, heads, r, scale, eps, prepared, 1e-5, True))


def test_pre_norm_threads_bitwise(isa):
    args = make_args(2, 28, 28, 72, 2, 2)
    outs = []
    prev = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(run_block(args, True, True, True)[0])
    finally:
        torch.set_num_threads(prev)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize("shape", [(1, 4, 4, 8, 2, 1), (2, 5, 7, 12, 3, 2)], ids=shape_id)
def test_pre_norm_opcheck_and_compile(shape):
    (x, H, W, heads, r, scale, eps), weights = split(make_args(*shape))
    w, b = pre_norm_params(x.shape[-1], x.dtype)
    torch.library.opcheck(torch.ops.edgevit.lgl_prepare.default, (*weights, True, w, b))
    prepared = lgl_prepare(*weights, True, w, b)
    torch.library.opcheck(torch.ops.edgevit.lgl_fused_prepared.default,
                          (x, H, W, heads, r, scale, eps, prepared, 1e-6, True))
    f = torch.compile(lambda x, p: lgl_fused_prepared(x, H, W, heads, r, scale, eps, p, 1e-6, True),
                      fullgraph=True, backend="aot_eager")
    assert torch.equal(f(x, prepared), lgl_fused_prepared(x, H, W, heads, r, scale, eps, prepared,
                                                          1e-6, True))


def test_bad_pre_norm_weights():
    (x, H, W, heads, r, scale, eps), weights = split(make_args(1, 8, 8, 16, 2, 2))
    w, b = pre_norm_params(16, torch.float32)
    with pytest.raises(RuntimeError, match="lgl_prepare: pre_norm_weight must be None when "
                                           "pre_norm is False, got a tensor"):
        lgl_prepare(*weights, False, w, None)
    with pytest.raises(RuntimeError, match=r"pre_norm_bias must have shape \[16\], got \[8\]"):
        lgl_prepare(*weights, True, w, b[:8])
    with pytest.raises(RuntimeError, match=r"pre_norm_weight must have the dtype of x \(Float\), "
                                           r"got Double"):
        lgl_prepare(*weights, True, w.double(), b)


# ---------------------------------------------------------------- bad input


def test_bad_prepared_for_other_c_or_sr_ratio():
    (x, H, W, heads, r, scale, eps), weights = split(make_args(1, 8, 8, 16, 2, 2))
    prepared = lgl_prepare(*weights)
    x24 = torch.randn(1, 64, 24)
    with pytest.raises(RuntimeError, match=r"prepared holds weights for C = 16, sr_ratio = 2, "
                                           r"but x has C = 24 and sr_ratio = 2"):
        lgl_fused_prepared(x24, H, W, heads, r, scale, eps, prepared)
    with pytest.raises(RuntimeError, match=r"C = 16, sr_ratio = 2, but x has C = 16 and sr_ratio = 4"):
        lgl_fused_prepared(x, H, W, heads, 4, scale, eps, prepared)


def test_bad_prepared_not_from_lgl_prepare():
    x = torch.randn(1, 64, 16)
    with pytest.raises(RuntimeError, match="prepared was not made by edgevit::lgl_prepare"):
        lgl_fused_prepared(x, 8, 8, 2, 2, 0.3, 1e-5, torch.zeros(4000))
    with pytest.raises(RuntimeError, match="prepared must be a contiguous 1-D tensor"):
        lgl_fused_prepared(x, 8, 8, 2, 2, 0.3, 1e-5, torch.zeros(2, 4000))


def test_bad_prepared_dtype():
    (x, H, W, heads, r, scale, eps), weights = split(make_args(1, 8, 8, 16, 2, 2))
    prepared = lgl_prepare(*weights)
    with pytest.raises(RuntimeError, match=r"prepared must have the dtype and device of x \(Double"):
        lgl_fused_prepared(x.double(), H, W, heads, r, scale, eps, prepared)


def test_bad_prepared_truncated():
    (x, H, W, heads, r, scale, eps), weights = split(make_args(1, 8, 8, 16, 2, 2))
    prepared = lgl_prepare(*weights)
    with pytest.raises(RuntimeError, match=r"prepared has \d+ elements, expected \d+"):
        lgl_fused_prepared(x, H, W, heads, r, scale, eps, prepared[:-1].clone())


@pytest.mark.skipif(len(ISAS) < 2, reason="needs two ISAs")
def test_bad_prepared_for_another_isa():
    (x, H, W, heads, r, scale, eps), weights = split(make_args(1, 8, 8, 16, 2, 2))
    with cpu_isa(ISAS[-1]):
        prepared = lgl_prepare(*weights)
    with cpu_isa(ISAS[0]), pytest.raises(
            RuntimeError, match=f"prepared was packed for ISA '{ISAS[-1]}', but the op now runs "
                                f"'{ISAS[0]}'"):
        lgl_fused_prepared(x, H, W, heads, r, scale, eps, prepared)


def test_bad_lgl_prepare_weights():
    (x, H, W, heads, r, scale, eps), weights = split(make_args(1, 8, 8, 16, 2, 2))
    qw, qb, pw, pb, nw, nb, prw, prb, r = weights
    with pytest.raises(RuntimeError, match=r"lgl_prepare: qkv_weight must be \[3C, C\], got shape \[16, 16\]"):
        lgl_prepare(prw, qb, pw, pb, nw, nb, prw, prb, r)
    with pytest.raises(RuntimeError, match="prop_weight is required when sr_ratio > 1"):
        lgl_prepare(qw, qb, None, pb, nw, nb, prw, prb, r)
    with pytest.raises(RuntimeError, match=r"proj_weight must have shape \[16, 16\], got \[16, 8\]"):
        lgl_prepare(qw, qb, pw, pb, nw, nb, prw[:, :8], prb, r)
