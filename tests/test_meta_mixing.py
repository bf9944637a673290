"""Meta and CPU tensors mixed in one call of every edgevit op: a clear device error, never an
uninitialised tensor.

When any argument is a meta tensor the dispatcher runs the op's fake kernel (Meta outranks CPU),
also on the real CPU tensors of the other arguments: a fake kernel that does not check devices
returns ``x.new_empty(...)``, an uninitialised CPU tensor, as the op's result (a model built under
``torch.device('meta')`` with one weight left unmaterialised). Every tensor argument is put on
meta in turn with the others on the CPU, and on the CPU in turn with the others on meta.
"""
from __future__ import annotations

import pytest
import torch

import edgevit_kernels  # noqa: F401  (registers the ops)
from lgl_samples import make_args

ops = torch.ops.edgevit


def _randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def sample_calls():
    """(name, op, args) with every optional tensor given, so each tensor argument is mixed."""
    C, hidden = 16, 32
    lgl = make_args(1, 4, 4, C, 2, 2)
    lgl_weights = [lgl[6], lgl[7], lgl[8], lgl[9], lgl[10], lgl[11], lgl[13], lgl[14]]
    pre_w, pre_b = _randn(C), _randn(C)
    lgl_prepared = ops.lgl_prepare(*lgl_weights, 2, True, pre_w, pre_b)
    fc1_w, fc1_b, fc2_w, fc2_b = _randn(hidden, C), _randn(hidden), _randn(C, hidden), _randn(C)
    nw, nb = _randn(C), _randn(C)
    mlp_prepared = ops.mlp_prepare(fc1_w, fc1_b, fc2_w, fc2_b, True, nw, nb)
    pe_w, pe_b, pe_nw, pe_nb = _randn(8, 3, 4, 4), _randn(8), _randn(8), _randn(8)
    pe_prepared = ops.patch_embed_prepare(pe_w, pe_b)
    lin_w, lin_b = _randn(24, C), _randn(24)
    lin_prepared = ops.linear_prepare(lin_w, lin_b)
    x_tokens = _randn(3, C)
    return [
        ("lgl_fused", ops.lgl_fused.default, lgl),
        ("lgl_prepare", ops.lgl_prepare.default, lgl_weights + [2, True, pre_w, pre_b]),
        ("lgl_fused_prepared", ops.lgl_fused_prepared.default,
         [lgl[0], 4, 4, 2, 2, lgl[5], 1e-5, lgl_prepared, 1e-5, True]),
        ("mlp_fused", ops.mlp_fused.default,
         [x_tokens, fc1_w, fc1_b, fc2_w, fc2_b, True, nw, nb, 1e-5, True]),
        ("mlp_prepare", ops.mlp_prepare.default, [fc1_w, fc1_b, fc2_w, fc2_b, True, nw, nb]),
        ("mlp_fused_prepared", ops.mlp_fused_prepared.default, [x_tokens, mlp_prepared, 1e-5, True]),
        ("patch_embed", ops.patch_embed.default,
         [_randn(1, 3, 8, 8), pe_w, pe_b, True, pe_nw, pe_nb, 1e-5]),
        ("patch_embed_prepare", ops.patch_embed_prepare.default, [pe_w, pe_b]),
        ("patch_embed_prepared", ops.patch_embed_prepared.default,
         [_randn(1, 3, 8, 8), pe_prepared, 8, 4, True, pe_nw, pe_nb, 1e-5]),
        ("dwconv", ops.dwconv.default, [_randn(1, C, 5, 5), _randn(C, 1, 3, 3), _randn(C), True]),
        ("linear_fused", ops.linear_fused.default, [x_tokens, lin_w, lin_b, _randn(3, 24)]),
        ("linear_prepare", ops.linear_prepare.default, [lin_w, lin_b]),
        ("linear_fused_prepared", ops.linear_fused_prepared.default,
         [x_tokens, lin_prepared, 24, _randn(3, 24)]),
    ]


def mixed_cases():
    """(id, op, args): one tensor argument on meta and the rest on the CPU, or the reverse."""
    cases = []
    for name, op, args in sample_calls():
        tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        arg_names = [a.name for a in op._schema.arguments]
        for i in tensor_pos:
            for odd, rest in (("meta", "cpu"), ("cpu", "meta")):
                mixed = [a.to(odd if j == i else rest) if isinstance(a, torch.Tensor) else a
                         for j, a in enumerate(args)]
                cases.append((f"{name}-{arg_names[i]}-on-{odd}", op, mixed))
    return cases


CASES = mixed_cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mixed_meta_and_cpu_is_a_device_error(case):
    _, op, args = case
    with pytest.raises(RuntimeError, match=r"must (be on|have) the (dtype and )?device of .*"
                                           r"(meta|cpu).*got .*(meta|cpu)"):
        op(*args)


@pytest.mark.parametrize("name", [c[0] for c in sample_calls()])
def test_all_on_meta_still_works(name):
    """The check does not reject what worked: every argument on meta gives a meta result of the
    CPU result's shape (torch.device('meta') model construction, shape inference)."""
    _, op, args = next(c for c in sample_calls() if c[0] == name)
    cpu_out = op(*args)
    meta_out = op(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])
    assert meta_out.device.type == "meta"
    assert meta_out.shape == cpu_out.shape and meta_out.dtype == cpu_out.dtype


def test_issue_20_reproduction_raises():
    """The call of issue 20, which returned an uninitialised CPU tensor."""
    with pytest.raises(RuntimeError, match=r"mlp_fused: fc1_weight must be on the device of x"
                                           r"|mlp_fused: .* must be on the device of fc1_weight"):
        ops.mlp_fused(torch.randn(4, 16), torch.randn(64, 16, device="meta"), None,
                      torch.randn(16, 64), None, False, None, None, 1e-5, False)


def test_case_count():
    print(f"\nmeta/CPU mixing: {len(CASES)} mixed cases over {len(sample_calls())} ops")
    assert len(CASES) >= 2 * len(sample_calls())
