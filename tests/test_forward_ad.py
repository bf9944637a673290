"""Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) through the edgevit ops.

The differentiable ops run their pure-PyTorch reference when an argument carries a tangent
(ops._register_autograd), so their jvp is the reference's; the inference-only ``*_prepared`` ops
raise. Before, every op returned a zero tangent with no error (issue 20). Compared in float64
against the reference's jvp; the primal is the reference's output too (float64 tolerance
against the fused kernel's).
"""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import edgevit_kernels as ek
from lgl_samples import make_args

DT = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)


def _randn(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DT)


def differentiable_calls():
    """(name, op, reference, args): every tensor argument differentiated."""
    C, hidden = 12, 20
    r = lambda *s: _randn(*s, seed=sum(s) + len(s))  # noqa: E731
    lgl = make_args(2, 5, 6, C, 3, 2, dtype=DT)
    lgl1 = make_args(1, 4, 4, C, 2, 1, dtype=DT)
    return [
        ("lgl_fused", ek.lgl_fused, ek.lgl_reference, lgl),
        ("lgl_fused-r1", ek.lgl_fused, ek.lgl_reference, lgl1),
        ("mlp_fused", ek.mlp_fused, ek.mlp_reference,
         [r(5, C), r(hidden, C) * 0.3, r(hidden), r(C, hidden) * 0.3, r(C), True, r(C), r(C),
          1e-5, True]),
        ("mlp_fused-plain", ek.mlp_fused, ek.mlp_reference,
         [r(2, 3, C), r(hidden, C) * 0.3, None, r(C, hidden) * 0.3, None, False, None, None,
          1e-5, False]),
        ("patch_embed", ek.patch_embed, ek.patch_embed_reference,
         [r(2, 3, 9, 8), r(6, 3, 2, 2), r(6), True, r(6), r(6), 1e-5]),
        ("dwconv", ek.dwconv, ek.dwconv_reference, [r(2, C, 5, 4), r(C, 1, 3, 3), r(C), True]),
        ("linear_fused", ek.linear_fused, ek.linear_reference,
         [r(4, C), r(7, C), r(7), r(4, 7)]),
    ]


CALLS = differentiable_calls()


def _jvp(fn, args, seed=123):
    """torch.func.jvp of fn over every tensor argument, with random tangents."""
    pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    tangents = tuple(_randn(*args[i].shape, seed=seed + i) for i in pos)

    def f(*primals):
        call = list(args)
        for i, p in zip(pos, primals):
            call[i] = p
        return fn(*call)

    return torch.func.jvp(f, tuple(args[i] for i in pos), tangents)


@pytest.mark.parametrize("call", CALLS, ids=[c[0] for c in CALLS])
def test_jvp_equals_reference_jvp(call):
    _, op, reference, args = call
    out, tangent = _jvp(op, args)
    ref_out, ref_tangent = _jvp(reference, args)
    assert ref_tangent.abs().max() > 0.1  # the test would not see a zero tangent otherwise
    torch.testing.assert_close(tangent, ref_tangent, **TOL)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(out, op(*args), **TOL)


@pytest.mark.parametrize("call", CALLS, ids=[c[0] for c in CALLS])
def test_dual_tensor_api_equals_reference(call):
    """torch.autograd.forward_ad with a tangent on the first argument only."""
    _, op, reference, args = call
    t = _randn(*args[0].shape, seed=7)
    results = []
    for fn in (op, reference):
        with fwAD.dual_level():
            out = fn(fwAD.make_dual(args[0], t), *args[1:])
            results.append(fwAD.unpack_dual(out).tangent)
    assert results[0] is not None
    torch.testing.assert_close(results[0], results[1], **TOL)


def test_jvp_of_a_weight_only():
    """A tangent on a weight (not x) is seen too."""
    _, op, reference, args = next(c for c in CALLS if c[0] == "mlp_fused")
    x, w1, *rest = args
    t = _randn(*w1.shape, seed=3)
    _, tangent = torch.func.jvp(lambda w: op(x, w, *rest), (w1,), (t,))
    _, ref = torch.func.jvp(lambda w: reference(x, w, *rest), (w1,), (t,))
    torch.testing.assert_close(tangent, ref, **TOL)


def test_backward_and_no_tangent_calls_unchanged():
    """Without tangents the ops run their kernels, and backward is still the reference's vjp."""
    _, op, reference, args = next(c for c in CALLS if c[0] == "linear_fused")
    x = args[0].clone().requires_grad_()
    op(x, *args[1:]).sum().backward()
    x2 = args[0].clone().requires_grad_()
    reference(x2, *args[1:]).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, **TOL)


def prepared_calls():
    C, hidden = 12, 20
    r = lambda *s: _randn(*s, seed=sum(s))  # noqa: E731
    lgl = make_args(1, 4, 4, C, 2, 2, dtype=DT)
    weights = [lgl[6], lgl[7], lgl[8], lgl[9], lgl[10], lgl[11], lgl[13], lgl[14]]
    return [
        ("lgl_fused_prepared", ek.lgl_fused_prepared,
         [lgl[0], 4, 4, 2, 2, lgl[5], 1e-5, ek.lgl_prepare(*weights, 2)]),
        ("mlp_fused_prepared", ek.mlp_fused_prepared,
         [r(3, C), ek.mlp_prepare(r(hidden, C), None, r(C, hidden), None), 1e-5, False]),
        ("patch_embed_prepared", ek.patch_embed_prepared,
         [r(1, 3, 8, 8), ek.patch_embed_prepare(r(6, 3, 4, 4), None), 6, 4, False]),
        ("linear_fused_prepared", ek.linear_fused_prepared,
         [r(3, C), ek.linear_prepare(r(7, C)), 7]),
    ]


@pytest.mark.parametrize("which", ["x", "prepared"])
@pytest.mark.parametrize("call", prepared_calls(), ids=[c[0] for c in prepared_calls()])
def test_prepared_ops_raise_under_forward_ad(call, which):
    name, op, args = call
    i = 0 if which == "x" else 1 if name != "lgl_fused_prepared" else 7
    tangent = torch.ones_like(args[i])

    def f(t):
        call_args = list(args)
        call_args[i] = t
        return op(*call_args)

    with pytest.raises(RuntimeError, match=rf"edgevit::{name} has no autograd formula .*forward "
                                           r"mode"):
        torch.func.jvp(f, (args[i],), (tangent,))
    with pytest.raises(RuntimeError, match="forward mode"), fwAD.dual_level():
        f(fwAD.make_dual(args[i], tangent))
    # Without a tangent the op still runs.
    assert torch.isfinite(op(*args)).all()


@pytest.mark.parametrize("call", prepared_calls(), ids=[c[0] for c in prepared_calls()])
def test_prepared_ops_backward_raises(call):
    """Reverse mode too: a clear error at backward (the dispatcher's fallback only warned and
    left x without a gradient)."""
    name, op, args = call
    x = args[0].clone().requires_grad_()
    out = op(x, *args[1:])
    with pytest.raises(RuntimeError, match=rf"edgevit::{name} has no autograd formula"):
        out.sum().backward()
    with torch.no_grad():
        assert not op(x, *args[1:]).requires_grad
