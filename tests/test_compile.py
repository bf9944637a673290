"""torch.compile of EdgeViT models: a use_fused model in eval compiles to its inference plan.

What it must do: under torch.compile (default mode, fullgraph=True, max-autotune-no-cudagraphs)
an eval CPU model with use_fused runs every fused op (the plan's *_prepared ops) inside the
compiled call, with weights prepared once, logits within 1e-4 of eager, and the eager
stale-weights contract (every write seen but an in-place one through .data, which refresh
covers); unfused models, training and autograd compile the module tree as before.

The fused graphs here are one op plus the head, so Inductor compiles them in seconds; the module
tree is compiled with aot_eager (Inductor would take a minute per model on 2 cores).
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn
from torch._inductor.compile_fx import compile_fx

import edgevit
from test_models import F32_RTOL, _pair  # tests/ is on sys.path (conftest.py)

FUSED_OPS = ("patch_embed_prepared", "dwconv", "linear_fused_prepared", "mlp_fused_prepared",
             "lgl_fused_prepared")
PREPARE_OPS = ("patch_embed_prepare", "linear_prepare", "mlp_prepare", "lgl_prepare")
X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _close(y, y_ref):
    torch.testing.assert_close(y, y_ref, rtol=0, atol=F32_RTOL * max(1.0, y_ref.abs().max().item()))


def _op_counts(fn, *args) -> dict:
    """How often each edgevit op ran in ``fn(*args)`` (by the profiler's op names)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn(*args)
    counts: dict = {}
    for e in prof.events():
        if e.name.startswith("edgevit::"):
            name = e.name.split("::")[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _recording(inner):
    """A backend that keeps the FX graphs dynamo gives it, then compiles them with ``inner``."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return inner(gm, example_inputs)
    return backend, graphs


def _targets(graphs) -> list:
    return [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("kwargs", [{}, {"fullgraph": True}], ids=["default", "fullgraph"])
def test_compiled_fused_model_runs_every_fused_op_of_the_plan(kwargs):
    ref, fused = _pair("edgevit_xxs")
    backend, graphs = _recording(compile_fx)  # Inductor, what mode="default" runs
    compiled = torch.compile(fused, backend=backend, **kwargs)
    with torch.no_grad():
        y_ref, y_eager = ref(X), fused(X)
        y = compiled(X)  # compiles, and builds the plan on its first call
        counts = _op_counts(compiled, X)
        y2 = compiled(X)
    assert len(graphs) == 1
    targets = _targets(graphs)
    assert "edgevit.plan_logits" in targets  # the plan with its fused tail, one op
    assert not any("lgl_fused" in t or "convolution" in t or "addmm" in t for t in targets), targets
    assert all(counts.get(op, 0) > 0 for op in FUSED_OPS), counts
    assert counts["lgl_fused_prepared"] == 7 and counts["plan_logits"] == 1
    assert counts["linear_fused_prepared"] == 11  # 10 LocalAgg convs + the folded head
    assert not any(op in counts for op in PREPARE_OPS + ("lgl_fused", "mlp_fused")), counts
    torch.testing.assert_close(y, y_eager, rtol=0, atol=0)  # the same plan, the same bits
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    _close(y, y_ref)


def test_compiled_fused_model_in_inference_mode_and_max_autotune():
    ref, fused = _pair("edgevit_xxs")
    compiled = torch.compile(fused, mode="max-autotune-no-cudagraphs", fullgraph=True)
    with torch.inference_mode():
        y_ref = ref(X)
        y = compiled(X)
        counts = _op_counts(compiled, X)
        stages = torch.compile(lambda x: fused.forward_features(x, return_stages=True),
                               fullgraph=True)(X)
        eager_stages = fused.forward_features(X, return_stages=True)
    _close(y, y_ref)
    assert counts.get("plan_logits") == 1 and counts.get("lgl_fused_prepared") == 7, counts
    assert not any(op in counts for op in PREPARE_OPS), counts
    assert [s.shape for s in stages] == [s.shape for s in eager_stages]
    for s, e in zip(stages, eager_stages):
        torch.testing.assert_close(s, e, rtol=0, atol=0)


def _scale_in_place(m):
    with torch.no_grad():
        m.blocks3[1].SelfAttn.attn.qkv.weight.mul_(1.5)  # as an optimizer step does


def _load_other_state(m):
    _, other = _pair("edgevit_xxs", seed=3)
    m.load_state_dict(other.state_dict())


def _assign_data(m):
    w = m.blocks1[0].LocalAgg.conv1.weight
    w.data = w.data * 0.5


def _new_parameter(m):
    fc1 = m.blocks2[0].SelfAttn.mlp.fc1
    fc1.weight = nn.Parameter(fc1.weight.detach() * 2, requires_grad=False)


def _batchnorm_statistics(m):
    m.blocks1[0].LocalAgg.norm2.running_var.mul_(2)


@pytest.mark.parametrize("change", [_scale_in_place, _load_other_state, _assign_data,
                                    _new_parameter, _batchnorm_statistics])
def test_compiled_fused_model_sees_weight_changes(change):
    """The eager contract: every write after compilation is seen (by the plan's key, checked
    by the op on every call), with the new weights prepared once."""
    _, fused = _pair("edgevit_xxs")
    fused.requires_grad_(False)  # _new_parameter's Parameter needs no grad either
    compiled = torch.compile(fused, backend=compile_fx, fullgraph=True)
    with torch.no_grad():
        before = compiled(X)
        change(fused)
        after, y_eager = compiled(X), fused(X)
        counts = _op_counts(compiled, X)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, y_eager, rtol=0, atol=0)
    assert not any(op in counts for op in PREPARE_OPS), counts


def test_compiled_fused_model_after_a_write_through_data_needs_refresh():
    """As in eager calls: an in-place write through .data has no version, so the plan keeps its
    prepared weights until edgevit.refresh (or model.eval())."""
    ref, fused = _pair("edgevit_xxs")
    compiled = torch.compile(fused, backend=compile_fx, fullgraph=True)
    with torch.no_grad():
        before = compiled(X)
        for m in (ref, fused):
            m.head.weight.data.mul_(2)  # the plan's (its fused tail): stale until refresh
            m.blocks3[0].SelfAttn.mlp.fc2.weight.data.mul_(2)  # the plan's: stale until refresh
        stale = compiled(X)
        edgevit.refresh(fused)
        fresh = compiled(X)
        y_ref = ref(X)
    torch.testing.assert_close(stale, before, rtol=0, atol=0)
    assert (stale - y_ref).abs().max() > 1e-3
    _close(fresh, y_ref)


def test_copies_compile_to_their_own_weights():
    """A graph names its model by a handle dynamo guards on; copies and unpickled models have
    their own, so a compiled copy never runs the original's weights."""
    _, fused = _pair("edgevit_xxs")
    with torch.no_grad():
        y = torch.compile(fused, backend=compile_fx, fullgraph=True)(X)
        for make in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))):
            other = make(fused)
            assert other._plan_handle != fused._plan_handle
            other.head.bias.add_(1.0)
            y_other = torch.compile(other, backend=compile_fx, fullgraph=True)(X)
            torch.testing.assert_close(y_other, other(X), rtol=0, atol=0)
            torch.testing.assert_close(y_other, y + 1.0, rtol=0, atol=1e-5)
    assert list(other.state_dict()) == list(fused.state_dict())


def test_unfused_training_and_autograd_compile_the_module_tree():
    ref, fused = _pair("edgevit_xxs", drop_path_rate=0.1)
    aot_eager = torch._dynamo.lookup_backend("aot_eager")
    x = torch.randn(2, 3, 64, 64)
    # (Eval with autograd on: test_models.test_torch_compile_fullgraph_fused.)
    for model, grad, train in ((ref, False, False), (fused, True, True)):
        model.train(train)
        backend, graphs = _recording(aot_eager)
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        with torch.set_grad_enabled(grad):
            torch.manual_seed(0)
            y = compiled(x)
            torch.manual_seed(0)
            y_eager = model(x)
        targets = _targets(graphs)
        assert not any(t.startswith("edgevit.plan_") for t in targets)
        assert sum("lgl_fused" in t for t in targets) == (7 if model is fused else 0)
        _close(y, y_eager)
        if grad:
            y.sum().backward()
            assert model.blocks2[0].SelfAttn.attn.qkv.weight.grad is not None
            model.zero_grad()
        torch._dynamo.reset()
