"""Property tests (hypothesis) of edgevit::lgl_fused against lgl_reference, under every ISA.

Drawn: B in 0..3; num_heads 1..8 and head_dim 1..12 (C = heads * head_dim, 1..96); sr_ratio
1..8; H and W 1..20 (1x1 maps and r larger than H or W included); input magnitude normal,
large (x * 1e4 + 1e3) or small (x * 1e-4); qkv/proj biases present or None; the weights'
seed. Every example runs the op under every ISA of ``edgevit_kernels.supported_cpu_isas()``
(set with edgevit_kernels.set_cpu_isa; float64 always runs the scalar kernels).

Tolerances. The ground truth is the reference in float64 on the same inputs (for float32, the
float32 inputs upcast, so input rounding is not counted as error). With M = max |ref| (the
output magnitude, >= tiny), the op must satisfy |out - ref| <= atol + rtol * |ref| with

* float32: atol = 2e-5 * M, rtol = 1e-4 (the kernels sum in another order and, on SIMD ISAs,
  use FMA and a polynomial exp; errors seen are <= ~1e-6 * M, see below for one exception);
* float64: atol = 1e-10 * M, rtol = 1e-10.

The large-magnitude case has attention logits of ~1e8, so softmax is nearly one-hot: a query
whose two best keys were within float32 rounding (~10 in the logit) of each other would differ
from the float64 truth for any float32 implementation; the seeded examples have no such tie.
Likewise LayerNorm over few channels whose values nearly agree (C = 2: y0 ~ y1) amplifies
rounding by up to ~1/sqrt(eps); the worst seeded example (C = 2) reaches ~8e-6 * M.

NaN/Inf injection: NaN, +Inf and -Inf written into x (sampled and unsampled tokens); the NaN
mask of the output must equal the reference's (``torch.equal(out.isnan(), ref.isnan())``),
infinities must match exactly, and the finite values must be close as above.

Seeded: ``derandomize=True`` (a failure reproduces on every run); ``deadline=None``.
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgevit_kernels
from edgevit_kernels import lgl_fused, lgl_reference
from lgl_samples import cpu_isa, make_args

ISAS = edgevit_kernels.supported_cpu_isas()
TOL = {torch.float32: (2e-5, 1e-4), torch.float64: (1e-10, 1e-10)}  # (atol / M, rtol)
SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw, max_b=3):
    heads = draw(st.integers(1, 8))
    head_dim = draw(st.integers(1, 12))
    return dict(
        B=draw(st.sampled_from([*range(1, max_b + 1), 0])),  # B = 0 rarely: it is trivial
        H=draw(st.integers(1, 20)), W=draw(st.integers(1, 20)),
        C=heads * head_dim, heads=heads, r=draw(st.integers(1, 8)),
        magnitude=draw(st.sampled_from(["normal", "large", "small"])),
        qkv_bias=draw(st.booleans()), proj_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def build(case, dtype):
    args = make_args(case["B"], case["H"], case["W"], case["C"], case["heads"], case["r"],
                     dtype=torch.float64, seed=case["seed"], qkv_bias=case["qkv_bias"],
                     proj_bias=case["proj_bias"])
    if case["magnitude"] == "large":
        args[0] = args[0] * 1e4 + 1e3
    elif case["magnitude"] == "small":
        args[0] = args[0] * 1e-4
    # round to dtype, then the float64 reference of exactly those values
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    ref = lgl_reference(*[a.double() if isinstance(a, torch.Tensor) else a for a in args])
    return args, ref


def assert_close_scaled(out, ref, dtype, key):
    assert out.shape == ref.shape and out.dtype == dtype and out.is_contiguous()
    finite = ref.isfinite()
    if not finite.any():
        return
    m = max(ref[finite].abs().max().item(), 1e-30)
    atol, rtol = TOL[dtype]
    diff = (out.double() - ref).abs()[finite]
    bound = atol * m + rtol * ref[finite].abs()
    bad = diff > bound
    assert not bad.any(), (f"{key}: {int(bad.sum())} of {bad.numel()} elements off: max |diff| = "
                           f"{diff.max().item():.3g}, output magnitude M = {m:.3g}")


def check_all_isas(args, ref, dtype, key):
    for isa in ISAS:
        with cpu_isa(isa):
            out = lgl_fused(*args)
        assert_close_scaled(out, ref, dtype, key + (isa,))


@settings(max_examples=150, **SETTINGS)
@given(cases())
def test_float32_matches_float64_reference(case):
    args, ref = build(case, torch.float32)
    check_all_isas(args, ref, torch.float32, ("float32", case["magnitude"]))


@settings(max_examples=60, **SETTINGS)
@given(cases())
def test_float64_matches_reference(case):
    args, ref = build(case, torch.float64)
    check_all_isas(args, ref, torch.float64, ("float64", case["magnitude"]))


@settings(max_examples=90, **SETTINGS)
@given(cases(max_b=2), st.data())
def test_nan_and_inf_propagate_like_reference(case, data):
    case = dict(case, B=max(case["B"], 1), magnitude="normal")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    args, _ = build(case, dtype)
    x = args[0].clone()
    B, N, C = x.shape
    for _ in range(data.draw(st.integers(1, 3), label="injections")):
        b, n, c = (data.draw(st.integers(0, d - 1)) for d in (B, N, C))
        x[b, n, c] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    args[0] = x
    ref = lgl_reference(*[a.double() if isinstance(a, torch.Tensor) else a for a in args])
    for isa in ISAS:
        with cpu_isa(isa):
            out = lgl_fused(*args)
        assert torch.equal(out.isnan(), ref.isnan()), isa
        assert torch.equal(out.isinf(), ref.isinf()) and torch.equal(out[out.isinf()].double(), ref[ref.isinf()]), isa
        assert_close_scaled(out, ref, dtype, (str(dtype).split(".")[1], "nan-inf", isa))
