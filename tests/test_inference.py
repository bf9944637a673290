"""edgevit.inference: the inference plan of use_fused models (eval, CPU, no autograd).

What it must do: say why a model cannot run on it; prepare each packed weight once and follow
every write to the weights (one key per call); give the same logits as ``model(x)`` (bitwise)
and as the reference model (within the tolerances of test_models: float32 logits max |diff| <=
1e-4 * max(1, max |logit|)); stay out of pickles and deep copies.
"""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

import edgevit
import edgevit.model as em
from edgevit import edgevit_xxs
from edgevit.inference import fused_unavailable, inference_plan, refresh

import edgevit_kernels
from test_models import F32_RTOL, _pair, _randomize_  # tests/ is on sys.path (conftest.py)


def _close(y, y_ref):
    torch.testing.assert_close(y, y_ref, rtol=0, atol=F32_RTOL * max(1.0, y_ref.abs().max().item()))


def _prepared(model, module, kind):
    """The plan's prepared weights of ``module`` (kind: "proj", "folded", "lgl" or "mlp")."""
    found = [v for k, v in model._inference_plan._built.prepared.items()
             if k[0] == id(module) and k[1] == kind]
    assert len(found) == 1
    return found[0]


# ---------------------------------------------------------------------------------------------
# Eligibility: one function, one reason.


def _hooked(m):
    m.blocks2[0].SelfAttn.register_forward_hook(lambda *a: None)


def _pre_hooked(m):
    m.patch_embed3.register_forward_pre_hook(lambda *a: None)


def _tanh_gelu(m):
    m.blocks3[1].SelfAttn.mlp.act = nn.GELU(approximate="tanh").eval()


def _overlapping_patch(m):
    m.patch_embed2.proj.padding = (1, 1)


def _one_attn_unfused(m):
    m.blocks1[0].SelfAttn.attn.use_fused = False


def _batchnorm_without_statistics(m):
    m.blocks1[0].LocalAgg.norm2 = nn.BatchNorm2d(36, track_running_stats=False).eval()


@pytest.mark.parametrize("change, x, reason", [
    (lambda m: m.train(), None, "training mode"),
    (lambda m: m.blocks3[0].LocalAgg.norm1.train(), None, "training mode"),
    (_hooked, None, "forward hook"),
    (_pre_hooked, None, "forward hook"),
    (_tanh_gelu, None, "blocks3.1.SelfAttn: mlp.act is not nn.GELU(approximate='none')"),
    (_overlapping_patch, None, "patch_embed2: proj is not a non-overlapping square patch"),
    (_one_attn_unfused, None, "blocks1.0.SelfAttn: attn is not a GlobalSparseAttn with use_fused"),
    (_batchnorm_without_statistics, None, "blocks1.0.LocalAgg: norm1 / norm2 are not affine"),
    (None, torch.randn(1, 3, 31, 64), "at least 32 x 32"),
    (None, torch.randn(3, 64, 64), "at least 32 x 32"),
    (None, torch.randn(1, 3, 64, 64, dtype=torch.float16), "does not take dtype torch.float16"),
    (None, torch.randn(1, 3, 64, 64, dtype=torch.float64), "differs from the parameters'"),
    (None, torch.randn(1, 3, 64, 64, device="meta"), "the input is on 'meta'"),
])
def test_eligibility_reasons(change, x, reason):
    _, model = _pair("edgevit_xxs")
    if change is not None:
        change(model)
    x = torch.randn(1, 3, 64, 64) if x is None else x
    with torch.no_grad():
        got = fused_unavailable(model, x)
    assert got is not None and reason in got, got


def test_eligibility_reasons_of_the_environment(monkeypatch):
    _, model = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert fused_unavailable(model, x) is None
    assert "autograd" in fused_unavailable(model, x)  # grad enabled, parameters require grad
    model.requires_grad_(False)
    assert fused_unavailable(model, x) is None  # frozen parameters: no gradient is needed
    assert "autograd" in fused_unavailable(model, x.requires_grad_())
    assert "not an EdgeVit" in fused_unavailable(nn.Linear(2, 2), x)
    g = nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert "forward hook" in fused_unavailable(model)
    finally:
        g.remove()
    with torch.inference_mode():
        frozen = edgevit_xxs(use_fused=True).eval()
    assert "inference-tensor" in fused_unavailable(frozen)
    monkeypatch.setattr(em, "_kernels_module", None)
    monkeypatch.setattr(em, "_kernels_error", "ImportError: simulated")
    assert "could not be imported (ImportError: simulated)" in fused_unavailable(model)
    with pytest.raises(ValueError, match="edgevit.inference_plan: edgevit_kernels could not"):
        inference_plan(model)


def test_plan_refuses_with_the_reason():
    assert (edgevit.inference_plan, edgevit.refresh) == (inference_plan, refresh)  # exported
    with pytest.raises(ValueError, match="edgevit.inference_plan: .*training mode"):
        inference_plan(edgevit_xxs(use_fused=True))
    model = edgevit_xxs(use_fused=True).eval()
    plan = inference_plan(model)
    with pytest.raises(ValueError, match="edgevit InferencePlan: .*at least 32 x 32"):
        plan(torch.randn(1, 3, 16, 64))
    model.train()
    with pytest.raises(ValueError, match="edgevit InferencePlan: .*training mode"):
        plan(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------
# The plan's results.


@pytest.mark.parametrize("name", ["edgevit_xxs", "edgevit_xs"])
@pytest.mark.parametrize("hw", [(224, 224), (32, 47)])
def test_plan_equals_model_bitwise_and_reference_within_tolerance(name, hw):
    ref, fused = _pair(name)
    x = torch.randn(2, 3, *hw)
    plan = inference_plan(fused)
    with torch.inference_mode():
        y, y_ref = fused(x), ref(x)
        assert fused._inference_plan is plan
        stages = fused.forward_features(x, return_stages=True)
        assert torch.equal(plan(x), y)
        assert all(map(torch.equal, plan.forward_features(x, return_stages=True), stages))
        assert torch.equal(plan.forward_features(x), fused.forward_features(x))
    _close(y, y_ref)
    with torch.no_grad():
        assert torch.equal(plan(x), y) and torch.equal(fused(x), y)
    y_grad_mode = plan(x)  # the plan computes no gradients, whatever the grad mode
    assert not y_grad_mode.requires_grad and torch.equal(y_grad_mode, y)


def test_layout_and_stage_values():
    ref, fused = _pair("edgevit_xs")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        s_ref = ref.forward_features(x, return_stages=True)
        s_fused = fused.forward_features(x, return_stages=True)
    assert [tuple(s.shape) for s in s_fused] == [(1, 48, 16, 24), (1, 96, 8, 12), (1, 240, 4, 6),
                                                 (1, 384, 2, 3)]
    assert all(s.is_contiguous(memory_format=torch.channels_last) for s in s_fused)
    for a, b in zip(s_fused, s_ref):
        _close(a, b)


def test_plan_under_no_grad_returns_normal_tensors():
    # Under no_grad the plan runs its ops in inference mode; what it returns are ordinary tensors
    # (in-place edits and autograd use later work), bitwise equal to the inference-mode result.
    _, fused = _pair("edgevit_xxs")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        y_im = fused(x)
        s_im = fused.forward_features(x, return_stages=True)
    with torch.no_grad():
        y = fused(x)
        stages = fused.forward_features(x, return_stages=True)
    assert not y.is_inference() and not any(s.is_inference() for s in stages)
    assert torch.equal(y, y_im) and all(torch.equal(a, b) for a, b in zip(stages, s_im))
    y.add_(1.0)  # allowed: not an inference tensor
    w = torch.ones(1000, requires_grad=True)
    (stages[-1].sum() * w.sum()).backward()  # usable in a later autograd graph
    assert w.grad is not None


def test_hooks_training_and_autograd_run_the_module_tree():
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    seen = []
    h = fused.blocks3[0].SelfAttn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        y_hooked = fused(x)
    assert seen == [torch.Size([1, 144, 4, 4])]
    h.remove()
    p = fused.blocks1[0].register_forward_pre_hook(lambda m, i: seen.append("pre"))
    with torch.no_grad():
        fused(x)
    assert seen[-1] == "pre"
    p.remove()
    g = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(m))
    try:
        n = len(seen)
        with torch.no_grad():
            fused(x)
        assert len(seen) > n
    finally:
        g.remove()
    with torch.no_grad():
        y = fused(x)  # back on the plan
        y_ref = ref(x)
    assert fused._inference_plan._built is not None
    _close(y, y_ref)
    _close(y_hooked, y_ref)
    assert fused(x).requires_grad  # autograd: the module tree (lgl_fused with autograd)
    fused.blocks2[0].train(), ref.blocks2[0].train()
    with torch.no_grad():
        assert "training mode" in fused_unavailable(fused, x)
        _close(fused(x), ref(x))  # batch statistics in blocks2: the module tree


def test_prepared_once_then_only_what_changed(monkeypatch):
    # Each GlobalSparseAttn's weights are prepared once (lgl_prepare on its own parameters,
    # with SelfAttn's norm1 folded in) and reused until one of its tensors changes.
    torch.manual_seed(0)
    model = _randomize_(edgevit_xxs()).eval().set_fused(True)
    keys = set(model.state_dict())
    prepares, fused = [], []
    real_prepare, real_fused = edgevit_kernels.lgl_prepare, torch.ops.edgevit.lgl_fused

    def spy_prepare(*args):
        prepares.append(args)
        return real_prepare(*args)

    def spy_fused(*args):
        fused.append(args)
        return real_fused(*args)

    monkeypatch.setattr(edgevit_kernels, "lgl_prepare", spy_prepare)
    monkeypatch.setattr(torch.ops.edgevit, "lgl_fused", spy_fused)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y0 = model(x)
        y0b = model(x)
    assert len(prepares) == 7 and not fused  # prepared once per module, then reused
    assert torch.equal(y0, y0b)
    a = model.blocks1[0].SelfAttn.attn
    assert prepares[0][0] is a.qkv.weight and prepares[0][2] is a.LocalProp.weight
    assert prepares[0][6] is a.proj.weight and prepares[0][8] == 4
    n1 = model.blocks1[0].SelfAttn.norm1
    assert prepares[0][9] is True and prepares[0][10] is n1.weight and prepares[0][11] is n1.bias
    assert set(model.state_dict()) == keys  # the plan is not state

    with torch.no_grad():
        ref0 = model.set_fused(False)(x)
        model.set_fused(True)
    _close(y0, ref0)

    with torch.no_grad():
        a.LocalProp.weight.mul_(1.5)
        y1 = model(x)
        model.load_state_dict(model.state_dict())  # copies into every parameter: all rebuilt
        y2 = model(x)
        ref1 = model.set_fused(False)(x)
    assert len(prepares) == 7 + 1 + 7
    assert (y1 - y0).abs().max() > 1e-3
    assert torch.equal(y1, y2)
    _close(y1, ref1)

    # train() drops the plan; training calls run lgl_fused (autograd) and prepare nothing.
    model.set_fused(True).train()
    assert model._inference_plan is None
    model(x).sum().backward()
    assert len(prepares) == 15 and len(fused) == 7


def test_folded_batchnorms_follow_parameters_and_statistics():
    ref, fused = _pair("edgevit_xxs")
    la = fused.blocks1[0].LocalAgg
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused(x)
        first = _prepared(fused, la, "folded")
        fused(x)
        assert _prepared(fused, la, "folded") is first  # reused
        for m in (ref, fused):  # as a training step would change them
            m.blocks1[0].LocalAgg.norm1.running_mean.add_(0.5)
            m.blocks1[0].LocalAgg.norm2.weight.mul_(1.5)
        y, y_ref = fused(x), ref(x)
    assert _prepared(fused, la, "folded") is not first
    _close(y, y_ref)


# ---------------------------------------------------------------------------------------------
# Staleness: every write path is seen, but one (documented).


def _w(m):
    return m.blocks3[1].SelfAttn.mlp.fc2.weight


def _in_place_no_grad(m):
    with torch.no_grad():
        _w(m).mul_(3.0)


def _data_assignment(m):
    _w(m).data = _w(m).data * 3.0


def _vector_to_parameters(m):
    params = list(m.parameters())
    v = nn.utils.parameters_to_vector(params)
    i = next(i for i, p in enumerate(params) if p is _w(m))
    start = sum(p.numel() for p in params[:i])
    v[start:start + _w(m).numel()] *= 3.0
    nn.utils.vector_to_parameters(v, params)


def _load_state_dict(m):
    sd = m.state_dict()
    sd["blocks3.1.SelfAttn.mlp.fc2.weight"] = sd["blocks3.1.SelfAttn.mlp.fc2.weight"] * 3.0
    m.load_state_dict(sd)


def _optimizer_step(m):
    opt = torch.optim.SGD([_w(m)], lr=1.0)
    _w(m).grad = _w(m).detach() * -2.0  # w - lr * grad = 3 w
    opt.step()


def _data_made_inference_tensor(m):  # no version counter: the module tree runs
    with torch.inference_mode():
        w = _w(m) * 3.0
    _w(m).data = w


def _replaced_parameter(m):
    m.blocks3[1].SelfAttn.mlp.fc2.weight = nn.Parameter(_w(m).detach() * 3.0)


def _running_statistic(m):
    with torch.no_grad():
        m.blocks2[0].LocalAgg.norm2.running_var.mul_(4.0)


def _replaced_submodule(m):
    old = m.blocks1[0].LocalAgg.conv2
    new = nn.Conv2d(old.in_channels, old.out_channels, 1)
    with torch.no_grad():
        new.weight.copy_(old.weight * -1.0)
        new.bias.copy_(old.bias)
    m.blocks1[0].LocalAgg.conv2 = new


@pytest.mark.parametrize("write", [_in_place_no_grad, _data_assignment, _vector_to_parameters,
                                   _load_state_dict, _optimizer_step, _data_made_inference_tensor,
                                   _replaced_parameter, _running_statistic, _replaced_submodule])
def test_every_write_path_is_seen(write):
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y0 = fused(x)
    write(fused)
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        y, y_ref = fused(x), ref(x)
    assert (y - y0).abs().max() > 1e-2
    _close(y, y_ref)


@pytest.mark.parametrize("rebuild", [refresh, lambda m: m.eval()])
def test_in_place_write_through_data_needs_refresh(rebuild):
    # The documented exception: PyTorch counts no version for p.data.mul_() and the storage
    # stays, so the plan keeps its weights until refresh(model) or model.eval().
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y0 = fused(x)
        _w(fused).data.mul_(3.0)
        assert torch.equal(fused(x), y0)  # stale, as documented
        assert rebuild(fused) is fused
        y = fused(x)
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        _close(y, ref(x))
    assert (y - y0).abs().max() > 1e-2


def test_set_fused_and_dtype_switches():
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = fused(x)
        fused.set_fused(False)
        assert torch.equal(fused(x), ref(x))  # the module tree, reference path
        fused.set_fused(True)
        assert torch.equal(fused(x), y)
        fused.double(), ref.double()
        y64 = fused(x.double())
        assert fused._inference_plan._built.dtype == torch.float64
        assert (y64 - ref(x.double())).abs().max() <= 1e-10


# ---------------------------------------------------------------------------------------------
# The plan stays out of pickles and copies.


def _saved_size(model) -> int:
    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.tell()


def test_pickle_size_unchanged_by_a_forward():
    _, fused = _pair("edgevit_xxs")
    before = _saved_size(fused)
    with torch.no_grad():
        y = fused(torch.randn(1, 3, 64, 64))
    assert fused._inference_plan is not None and y.shape == (1, 1000)
    after = _saved_size(fused)
    assert abs(after - before) <= 4096, (before, after)
    assert abs(len(pickle.dumps(fused)) - len(pickle.dumps(_pair("edgevit_xxs")[1]))) <= 4096


def test_deepcopy_and_load_after_a_forward_rebuild_their_plan():
    _, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = fused(x)
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    for other in (copy.deepcopy(fused), torch.load(buf, weights_only=False)):
        assert other._inference_plan is None and fused._inference_plan is not None
        with torch.no_grad():
            assert torch.equal(other(x), y)
        mine, theirs = (_prepared(m, m.blocks1[0].SelfAttn.attn, "lgl") for m in (other, fused))
        assert mine.data_ptr() != theirs.data_ptr()  # its own plan, on its own weights
        with torch.no_grad():
            _w(other).mul_(3.0)
            assert not torch.equal(other(x), y) and torch.equal(fused(x), y)


def test_fused_tail_runs_no_aten_parallel_op():
    # BatchNorm, pooling and head as pooling + one linear_fused_prepared (BatchNorm folded in):
    # ATen's batch_norm and addmm would leave OpenMP workers spinning on the pool's cores.
    from torch.profiler import profile

    ref, fused = _pair("edgevit_xxs")
    for B in (1, 8):
        x = torch.randn(B, 3, 64, 64)
        with torch.inference_mode():
            fused(x)
            with profile() as p:
                y = fused(x)
            _close(y, ref(x))
        names = {e.name for e in p.events()}
        assert "edgevit::linear_fused_prepared" in names
        assert not names & {"aten::batch_norm", "aten::addmm", "aten::linear"}, names


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=0, global_pool="")])
def test_other_tails_run_forward_head(kwargs):
    torch.manual_seed(0)
    ref = edgevit.edgevit_xxs(**kwargs).eval()
    fused = copy.deepcopy(ref).set_fused(True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        y = fused(x)
        assert fused._inference_plan is not None and fused._inference_plan._built.head is None
        _close(y, ref(x))
