"""The edgevit models: official state_dict keys, use_fused == reference (values, gradients,
torch.compile), and the fallback policy of the fused path.

Every comparison builds a fused and an unfused model with the same weights, in eval mode, with
randomised BatchNorm statistics/affine, LayerNorm affine and biases (the default init sets many
of them to 0/1, which would hide errors), and a head scaled up so logits are O(1).

Tolerances (fused vs unfused): float32 logits max |diff| <= 1e-4 * max(1, max |logit|);
float64 <= 1e-10 absolute; gradients see ``_assert_grads_close``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import pytest
import torch
import torch.nn as nn

import edgevit
import edgevit.model as em
from edgevit import GlobalSparseAttn, edgevit_s, edgevit_xs, edgevit_xxs

import edgevit_kernels  # the op under test
from official_state_dict_keys import KEYS  # tests/ is on sys.path (conftest.py)

FACTORIES = {"edgevit_xxs": edgevit_xxs, "edgevit_xs": edgevit_xs, "edgevit_s": edgevit_s}
F32_RTOL = 1e-4
F64_ATOL = 1e-10


def _randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm stats/affine, LayerNorm affine and biases; O(1) logits."""
    g = torch.Generator().manual_seed(seed)

    def rnd(t, scale, offset=0.0):
        return (torch.randn(t.shape, generator=g, dtype=torch.float64) * scale + offset).to(t.dtype)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(rnd(m.running_mean, 0.2))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64)
                                    .to(m.running_var.dtype) + 0.5)
                m.weight.copy_(rnd(m.weight, 0.2, 1.0))
                m.bias.copy_(rnd(m.bias, 0.1))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(rnd(m.weight, 0.2, 1.0))
                m.bias.copy_(rnd(m.bias, 0.1))
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(rnd(m.bias, 0.02))
        model.head.weight.mul_(20.0)
    return model


def _pair(name: str, dtype=torch.float32, seed: int = 0, **kwargs):
    """(unfused, fused) models of variant ``name`` with identical weights, eval mode."""
    torch.manual_seed(seed)
    ref = _randomize_(FACTORIES[name](use_fused=False, **kwargs), seed).to(dtype).eval()
    fused = FACTORIES[name](use_fused=True, **kwargs).to(dtype).eval()
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused


def _count_calls(monkeypatch):
    """Counts calls of the fused and the reference paths of GlobalSparseAttn. The fused path is
    forward_fused (the module tree), or forward_prepared called directly by EdgeVit's eval plan;
    forward_fused's own call of forward_prepared is not counted twice."""
    calls = {"fused": 0, "reference": 0}
    real_fused, real_ref = GlobalSparseAttn.forward_fused, GlobalSparseAttn.forward_reference
    real_prepared = GlobalSparseAttn.forward_prepared
    inside = []

    def fused(self, *a, **kw):
        calls["fused"] += 1
        inside.append(True)
        try:
            return real_fused(self, *a, **kw)
        finally:
            inside.pop()

    def prepared(self, *a, **kw):
        if not inside:
            calls["fused"] += 1
        return real_prepared(self, *a, **kw)

    monkeypatch.setattr(GlobalSparseAttn, "forward_prepared", prepared)

    def ref(self, *a):
        calls["reference"] += 1
        return real_ref(self, *a)

    monkeypatch.setattr(GlobalSparseAttn, "forward_fused", fused)
    monkeypatch.setattr(GlobalSparseAttn, "forward_reference", ref)
    return calls


def _fallback_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning)
            and "reference path" in str(w.message)]


# ---------------------------------------------------------------------------------------------
# Structure and state_dict.


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_keys_match_official(name):
    sd = FACTORIES[name]().state_dict()
    assert list(sd.keys()) == KEYS[name]
    assert list(FACTORIES[name](use_fused=True).state_dict().keys()) == KEYS[name]


def test_official_shapes_and_hyperparameters():
    m = edgevit_xxs()
    sd = m.state_dict()
    assert sd["blocks1.0.SelfAttn.attn.LocalProp.weight"].shape == (36, 1, 4, 4)
    assert sd["blocks2.0.SelfAttn.attn.LocalProp.weight"].shape == (72, 1, 2, 2)
    assert sd["blocks1.0.LocalAgg.attn.weight"].shape == (36, 1, 5, 5)
    assert sd["blocks1.0.LocalAgg.pos_embed.weight"].shape == (36, 1, 3, 3)
    assert sd["patch_embed1.proj.weight"].shape == (36, 3, 4, 4)
    assert sd["patch_embed2.proj.weight"].shape == (72, 36, 2, 2)
    assert sd["blocks3.0.SelfAttn.mlp.fc1.weight"].shape == (576, 144)
    assert sd["head.weight"].shape == (1000, 288)
    a1, a4 = m.blocks1[0].SelfAttn.attn, m.blocks4[0].SelfAttn.attn
    assert (a1.num_heads, a1.sr, a1.scale) == (1, 4, 36 ** -0.5)
    assert a1.norm.eps == 1e-5 and m.blocks1[0].SelfAttn.norm1.eps == 1e-6
    assert m.patch_embed1.norm.eps == 1e-5
    assert (a4.num_heads, a4.sr) == (8, 1) and isinstance(a4.norm, nn.Identity)
    assert isinstance(m.blocks4[0].LocalAgg, nn.Identity)
    assert m.blocks3[0].SelfAttn.attn.num_heads == 4
    assert edgevit_s().blocks4[0].SelfAttn.attn.num_heads == 8
    assert sum(p.numel() for p in m.parameters()) == 4067704


def test_state_dict_round_trip_and_set_fused():
    ref, fused = _pair("edgevit_xxs")
    fused2 = edgevit_xxs(use_fused=False)
    fused2.load_state_dict(fused.state_dict(), strict=True)  # fused -> unfused
    for k, v in ref.state_dict().items():
        assert torch.equal(v, fused2.state_dict()[k]), k

    sd_before = {k: (v.data_ptr(), v.clone()) for k, v in fused.state_dict().items()}
    assert fused.set_fused(False) is fused and fused.set_fused(True) is fused
    sd_after = fused.state_dict()
    assert list(sd_after) == list(sd_before)
    for k, v in sd_after.items():
        assert v.data_ptr() == sd_before[k][0] and torch.equal(v, sd_before[k][1]), k

    attns = [m for m in fused.modules() if isinstance(m, GlobalSparseAttn)]
    assert len(attns) == 7 and all(a.use_fused for a in attns)
    assert "use_fused=True" in repr(fused)
    fused.set_fused(False)
    assert not any(a.use_fused for a in attns) and "use_fused=True" not in repr(fused)


def test_op_receives_the_modules_parameters(monkeypatch):
    # With autograd on (eval mode, parameters requiring grad) every call is lgl_fused on the
    # module's own parameters.
    torch.manual_seed(0)
    model = _randomize_(edgevit_xxs()).eval().set_fused(True)
    seen = []
    real = torch.ops.edgevit.lgl_fused

    def spy(*args):
        seen.append(args)
        return real(*args)

    monkeypatch.setattr(torch.ops.edgevit, "lgl_fused", spy)
    x = torch.randn(1, 3, 64, 64)
    y0 = model(x)
    assert y0.requires_grad
    assert len(seen) == 7
    a = model.blocks1[0].SelfAttn.attn
    args = seen[0]
    assert args[3:6] == (1, 4, a.scale)
    assert args[6] is a.qkv.weight and args[7] is a.qkv.bias
    assert args[8] is a.LocalProp.weight and args[9] is a.LocalProp.bias
    assert args[10] is a.norm.weight and args[11] is a.norm.bias and args[12] == a.norm.eps
    assert args[13] is a.proj.weight and args[14] is a.proj.bias
    a4, args4 = model.blocks4[1].SelfAttn.attn, seen[-1]
    assert args4[4] == 1 and args4[8:12] == (None, None, None, None)
    assert args4[6] is a4.qkv.weight and args4[13] is a4.proj.weight

    # An in-place change of a parameter changes the fused output (no copies anywhere).
    with torch.no_grad():
        a.LocalProp.weight.mul_(1.5)
    y1 = model(x)
    with torch.no_grad():
        model.set_fused(False)
        y1_ref = model(x)
    assert (y1 - y0).abs().max() > 1e-3
    torch.testing.assert_close(y1.detach(), y1_ref, rtol=0,
                               atol=F32_RTOL * max(1.0, y1_ref.abs().max().item()))


def test_prepared_weights_cache(monkeypatch):
    # Eval mode without autograd: each GlobalSparseAttn prepares its weights once
    # (lgl_prepare on its own parameters) and reuses them until a parameter changes.
    import edgevit_kernels

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
    # ... with SelfAttn's norm1 folded in (x + attn(norm1(x)) is one call).
    n1 = model.blocks1[0].SelfAttn.norm1
    assert prepares[0][9] is True and prepares[0][10] is n1.weight and prepares[0][11] is n1.bias
    assert set(model.state_dict()) == keys  # the cache is not state

    with torch.no_grad():
        ref0 = model.set_fused(False)(x)
        model.set_fused(True)
    torch.testing.assert_close(y0, ref0, rtol=0, atol=F32_RTOL * max(1.0, ref0.abs().max().item()))

    # In-place changes rebuild just the changed module's preparation.
    with torch.no_grad():
        a.LocalProp.weight.mul_(1.5)
        y1 = model(x)
        model.load_state_dict(model.state_dict())  # copies into every parameter: all rebuilt
        y2 = model(x)
        ref1 = model.set_fused(False)(x)
    assert len(prepares) == 7 + 1 + 7
    assert (y1 - y0).abs().max() > 1e-3
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, ref1, rtol=0, atol=F32_RTOL * max(1.0, ref1.abs().max().item()))

    # train() drops the cache; training calls run lgl_fused (autograd) and prepare nothing.
    model.set_fused(True).train()
    assert all(m._prepared is None for m in model.modules() if hasattr(m, "_prepared"))
    model(x).sum().backward()
    assert len(prepares) == 15 and len(fused) == 7


# ---------------------------------------------------------------------------------------------
# Fused == unfused: values.

MAX_ERR = {}


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("hw", [(224, 224), (200, 296)])
def test_fused_matches_reference_float32(name, hw, monkeypatch):
    ref, fused = _pair(name)
    B = 2 if name == "edgevit_xxs" else 1
    x = torch.randn(B, 3, *hw)
    calls = _count_calls(monkeypatch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback here
        y_ref = ref(x)
        assert calls == {"fused": 0, "reference": sum(1 for _ in _attns(ref))}
        y = fused(x)
        assert calls["fused"] == calls["reference"]
    assert y.shape == (B, 1000)
    scale = max(1.0, y_ref.abs().max().item())
    err = (y - y_ref).abs().max().item()
    MAX_ERR[("float32", name, hw)] = err
    assert err <= F32_RTOL * scale, f"max |diff| {err:.3g} vs logit scale {scale:.3g}"


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fused_logits_and_top1_on_64_inputs(name):
    # Issue 5's acceptance bar, on the eval fast path (inference mode, as the benchmarks run):
    # 64 random 224x224 inputs, fused logits within 1e-3 (max abs, fp32) of the reference's and
    # the same top-1 class for every input.
    ref, fused = _pair(name)
    g = torch.Generator().manual_seed(64)
    worst, agree = 0.0, 0
    with torch.inference_mode():
        for _ in range(4):
            x = torch.randn(16, 3, 224, 224, generator=g)
            y_ref, y = ref(x), fused(x)
            worst = max(worst, (y - y_ref).abs().max().item())
            agree += int((y.argmax(1) == y_ref.argmax(1)).sum())
    assert fused._plan is not None and fused._plan.steps is not None  # the plan served them
    assert worst <= 1e-3, f"max |d logits| {worst:.3g}"
    assert agree == 64, f"top-1 agreement {agree}/64"


def _attns(model):
    return [m for m in model.modules() if isinstance(m, GlobalSparseAttn)]


@pytest.mark.parametrize("hw", [(224, 224), (200, 296)])
def test_fused_matches_reference_float64(hw):
    ref, fused = _pair("edgevit_xxs", torch.float64)
    x = torch.randn(1, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        y_ref, y = ref(x), fused(x)
    err = (y - y_ref).abs().max().item()
    MAX_ERR[("float64", "edgevit_xxs", hw)] = err
    assert y.dtype == torch.float64 and err <= F64_ATOL, err


def test_forward_features_non_square():
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 200, 296)
    with torch.no_grad():
        f_ref, f = ref.forward_features(x), fused.forward_features(x)
    # 200x296 -> /4 50x74 -> 25x37 -> 12x18 -> 6x9
    assert f.shape == f_ref.shape == (1, 288, 6, 9)
    torch.testing.assert_close(f, f_ref, rtol=0, atol=F32_RTOL * max(1.0, f_ref.abs().max().item()))
    for hw, out in [((32, 32), (1, 1)), ((32, 45), (1, 1)), ((97, 33), (3, 1))]:
        with torch.no_grad():
            assert fused.forward_features(torch.randn(1, 3, *hw)).shape[-2:] == out
            assert fused(torch.randn(2, 3, *hw)).shape == (2, 1000)


def test_reference_path_is_official_when_ratio_divides():
    """Our generalised reference path == the official code (no crop) where r divides H, W."""
    torch.manual_seed(0)
    attn = GlobalSparseAttn(48, num_heads=2, qkv_bias=True, sr_ratio=4).eval()
    with torch.no_grad():
        attn.LocalProp.bias.normal_()
        attn.norm.weight.normal_()
    B, H, W, C = 2, 8, 12, 48
    x = torch.randn(B, H * W, C)

    def official(self, x, H, W):  # verbatim official forward (eval mode)
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, H, W)
        x = self.sampler(x)
        x = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(x).reshape(B, -1, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (a @ v).transpose(1, 2).reshape(B, -1, C)
        x = x.permute(0, 2, 1).reshape(B, C, int(H / self.sr), int(W / self.sr))
        x = self.LocalProp(x)
        x = x.reshape(B, C, -1).permute(0, 2, 1)
        x = self.norm(x)
        return self.proj(x)

    with torch.no_grad():
        torch.testing.assert_close(attn(x, H, W), official(attn, x, H, W), rtol=0, atol=0)
        attn.use_fused = True
        torch.testing.assert_close(attn(x, H, W), official(attn, x, H, W), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (Triton kernel)")
def test_fused_matches_reference_cuda(monkeypatch):
    """Unverified here (no GPU on the CPU runners); the tolerance allows for TF32-free fp32
    reductions in a different order."""
    pytest.importorskip("triton")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    ref, fused = _pair("edgevit_xxs")
    ref, fused = ref.cuda(), fused.cuda()
    x = torch.randn(2, 3, 200, 296, device="cuda")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        y_ref, y = ref(x), fused(x)
    scale = max(1.0, y_ref.abs().max().item())
    assert (y - y_ref).abs().max().item() <= 1e-3 * scale


# ---------------------------------------------------------------------------------------------
# Fused == unfused: gradients.


def _assert_grads_close(ref, fused, x, dtype):
    outs = []
    for m in (ref, fused):
        m.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)).sum().backward()
        outs.append((xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (gx_ref, g_ref), (gx, g) = outs
    worst = 0.0
    for n in g_ref:
        assert g[n] is not None, n
        scale = max(g_ref[n].abs().max().item(), 1e-3)
        err = (g[n] - g_ref[n]).abs().max().item()
        worst = max(worst, err / scale)
        tol = 1e-9 if dtype == torch.float64 else 2e-3
        assert err <= tol * scale, f"{n}: max |diff| {err:.3g}, grad scale {scale:.3g}"
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    assert (gx - gx_ref).abs().max() <= tol * gx_ref.abs().max()
    return worst


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_gradients_match_reference(dtype):
    ref, fused = _pair("edgevit_xxs", dtype, drop_path_rate=0.0)
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    MAX_ERR[("grad-rel", str(dtype).split(".")[-1], "edgevit_xxs", (64, 64))] = \
        _assert_grads_close(ref, fused, x, dtype)


# ---------------------------------------------------------------------------------------------
# torch.compile.


def test_torch_compile_fullgraph_fused():
    """fullgraph=True: any graph break raises. aot_eager traces the op through its fake kernel
    and autograd registration; inductor would take > 60 s to compile here."""
    torch._dynamo.reset()
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(2, 3, 64, 64)
    graphs = []
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    compiled = torch.compile(fused, fullgraph=True, backend=backend)
    with torch.no_grad():
        y_ref, y_eager = ref(x), fused(x)
        t = time.perf_counter()
        y = compiled(x)
        print(f"compile+run {time.perf_counter() - t:.1f} s")
        y2 = compiled(x)
    assert len(graphs) == 1
    n_ops = sum(1 for node in graphs[0].graph.nodes if node.op == "call_function"
                and "lgl_fused" in str(node.target))
    assert n_ops == 7
    torch.testing.assert_close(y, y_eager, rtol=0, atol=1e-6 * max(1.0, y_eager.abs().max().item()))
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    assert (y - y_ref).abs().max() <= F32_RTOL * max(1.0, y_ref.abs().max().item())
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# Fallback policy.


def test_no_fallback_and_no_warning_in_eval(monkeypatch):
    _, fused = _pair("edgevit_xxs")
    calls = _count_calls(monkeypatch)
    with warnings.catch_warnings(record=True) as rec, torch.no_grad():
        warnings.simplefilter("always")
        fused(torch.randn(1, 3, 64, 64))
    assert not _fallback_warnings(rec)
    assert calls == {"fused": 7, "reference": 0}


def test_training_proj_dropout_still_fused(monkeypatch):
    """drop_rate > 0 only: proj_drop is applied after the op, so the op still serves."""
    ref, fused = _pair("edgevit_xxs", drop_rate=0.1)
    ref.train(), fused.train()
    calls = _count_calls(monkeypatch)
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        torch.manual_seed(1)
        y_ref = ref(x)
        torch.manual_seed(1)
        y = fused(x)
    assert not _fallback_warnings(rec) and calls == {"fused": 7, "reference": 7}
    # The same dropout masks are drawn in the same order by both paths.
    assert (y - y_ref).abs().max() <= F32_RTOL * max(1.0, y_ref.abs().max().item())


def test_attention_dropout_falls_back_and_warns_once(monkeypatch):
    ref, fused = _pair("edgevit_xxs", attn_drop_rate=0.2, drop_path_rate=0.1)
    ref.train(), fused.train()
    calls = _count_calls(monkeypatch)
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for seed in (1, 2):
            torch.manual_seed(seed)
            y_ref = ref(x)
            torch.manual_seed(seed)
            y = fused(x)
            torch.testing.assert_close(y, y_ref, rtol=0, atol=0)  # same path, same masks
    w = _fallback_warnings(rec)
    assert len(w) == 1 and "attention dropout" in str(w[0].message)
    assert calls == {"fused": 0, "reference": 28}
    # eval: attention dropout is off, the op serves again.
    fused.eval()
    with torch.no_grad():
        fused(x)
    assert calls["fused"] == 7


def test_no_kernel_for_device_falls_back_and_warns_once(monkeypatch):
    ref, fused = _pair("edgevit_xxs")
    monkeypatch.setattr(edgevit_kernels.ops, "has_kernel_for", lambda device: False)
    calls = _count_calls(monkeypatch)
    x = torch.randn(1, 3, 96, 80)
    with warnings.catch_warnings(record=True) as rec, torch.no_grad():
        warnings.simplefilter("always")
        y1, y2 = fused(x), fused(x)
        y_ref = ref(x)
    w = _fallback_warnings(rec)
    assert len(w) == 1 and "no lgl_fused kernel for device type 'cpu'" in str(w[0].message)
    assert calls == {"fused": 0, "reference": 21}
    torch.testing.assert_close(y1, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(y2, y_ref, rtol=0, atol=0)
    # A second model warns again (the record is per model), a standalone module on its own.
    other = edgevit_xxs(use_fused=True).eval()
    with warnings.catch_warnings(record=True) as rec, torch.no_grad():
        warnings.simplefilter("always")
        other(x), other(x)
    assert len(_fallback_warnings(rec)) == 1


def test_unsupported_dtype_falls_back(monkeypatch):
    ref, fused = _pair("edgevit_xxs", torch.bfloat16)
    calls = _count_calls(monkeypatch)
    x = torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)
    with warnings.catch_warnings(record=True) as rec, torch.no_grad():
        warnings.simplefilter("always")
        y, y_ref = fused(x), ref(x)
    w = _fallback_warnings(rec)
    assert len(w) == 1 and "bfloat16" in str(w[0].message)
    assert calls["fused"] == 0
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


def test_kernels_import_failure_falls_back(monkeypatch):
    ref, fused = _pair("edgevit_xxs")
    monkeypatch.setattr(em, "_kernels_module", None)
    monkeypatch.setattr(em, "_kernels_error", "ImportError: simulated")
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as rec, torch.no_grad():
        warnings.simplefilter("always")
        y, y_ref = fused(x), ref(x)
    w = _fallback_warnings(rec)
    assert len(w) == 1 and "could not be imported" in str(w[0].message)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


def test_import_edgevit_without_kernels():
    code = (
        "import sys, warnings\n"
        "sys.modules['edgevit_kernels'] = None  # any import of it fails\n"
        "import torch, edgevit\n"
        "m = edgevit.edgevit_xxs(use_fused=True).eval()\n"
        "with warnings.catch_warnings(record=True) as rec:\n"
        "    warnings.simplefilter('always')\n"
        "    y = m(torch.randn(1, 3, 32, 32))\n"
        "assert y.shape == (1, 1000)\n"
        "assert len(rec) == 1 and 'could not be imported' in str(rec[0].message), rec\n"
        "print('ok')\n"
    )
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(edgevit.__file__))  # where `edgevit` is found now
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_zz_report_max_errors():
    """Prints the largest fused-vs-unfused errors of this run (pytest -s shows them)."""
    for k, v in sorted(MAX_ERR.items(), key=str):
        print(k, f"{v:.3g}")


# ---------------------------------------------------------------------------------------------
# The eval fast path of use_fused models: channels_last maps, folded LocalAgg BatchNorms.


def test_eval_fast_path_layout_and_values():
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        y_ref, y = ref(x), fused(x)
        stages = fused.forward_features(x, return_stages=True)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=F32_RTOL * max(1.0, y_ref.abs().max().item()))
    assert all(s.is_contiguous(memory_format=torch.channels_last) for s in stages)
    la = fused.blocks1[0].LocalAgg
    assert la._folded is not None  # the folded path ran


def test_forward_features_return_stages():
    ref, fused = _pair("edgevit_xs")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        s_ref = ref.forward_features(x, return_stages=True)
        s_fused = fused.forward_features(x, return_stages=True)
        feats = ref.forward_features(x)
    assert [tuple(s.shape) for s in s_ref] == [(1, 48, 16, 24), (1, 96, 8, 12), (1, 240, 4, 6),
                                               (1, 384, 2, 3)]
    for a, b in zip(s_fused, s_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=F32_RTOL * max(1.0, b.abs().max().item()))
    torch.testing.assert_close(feats, ref.norm(s_ref[-1]))


def test_folded_batchnorm_cache_follows_parameters_and_statistics():
    ref, fused = _pair("edgevit_xxs")
    keys = set(fused.state_dict())
    la = fused.blocks1[0].LocalAgg
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused(x)
        first = la._folded
        fused(x)
        assert la._folded is first  # reused
        # A running statistic changes in place (as a training step would): rebuilt.
        for m in (ref, fused):
            m.blocks1[0].LocalAgg.norm1.running_mean.add_(0.5)
            m.blocks1[0].LocalAgg.norm2.weight.mul_(1.5)
        y, y_ref = fused(x), ref(x)
    assert la._folded is not first
    torch.testing.assert_close(y, y_ref, rtol=0, atol=F32_RTOL * max(1.0, y_ref.abs().max().item()))
    assert set(fused.state_dict()) == keys
    fused.train()
    assert la._folded is None
    fused(x).sum().backward()  # training runs the unfolded modules, with gradients
    assert la.norm1.weight.grad is not None and la._folded is None


# ---------------------------------------------------------------------------------------------
# EdgeVit's eval plan: the fast path as one flat list of op calls, checked once per call.


def _tree_output(model, x, **kw):
    """The model's output through the module tree (the eval plan switched off)."""
    plan_fn = em.EdgeVit._eval_plan
    em.EdgeVit._eval_plan = lambda self, x: None
    try:
        return model.forward_features(x, **kw) if kw else model(x)
    finally:
        em.EdgeVit._eval_plan = plan_fn


@pytest.mark.parametrize("name", ["edgevit_xxs", "edgevit_xs"])
@pytest.mark.parametrize("hw", [(224, 224), (32, 47)])
def test_eval_plan_equals_module_tree_bitwise(name, hw):
    # The plan calls the same ops on the same prepared weights as the module tree's fast path.
    _, fused = _pair(name)
    x = torch.randn(2, 3, *hw)
    with torch.inference_mode():
        y = fused(x)
        assert fused._plan is not None and fused._plan.steps is not None
        stages = fused.forward_features(x, return_stages=True)
        assert torch.equal(y, _tree_output(fused, x))
        for a, b in zip(stages, _tree_output(fused, x, return_stages=True)):
            assert torch.equal(a, b)


def test_eval_plan_follows_parameters_modules_and_modes():
    ref, fused = _pair("edgevit_xxs")
    keys = set(fused.state_dict())
    x = torch.randn(1, 3, 64, 64)
    tol = dict(rtol=0, atol=F32_RTOL * 20)

    def check():
        with torch.no_grad():
            y, y_ref = fused(x), ref(x)
        torch.testing.assert_close(y, y_ref, **tol)
        return y

    y0 = check()
    plan = fused._plan
    check()
    assert fused._plan is plan  # reused while nothing changes
    assert set(fused.state_dict()) == keys  # not state

    # In-place change of a parameter (version counter): rebuilt, values follow.
    for m in (ref, fused):
        with torch.no_grad():
            m.blocks3[1].SelfAttn.mlp.fc2.weight.mul_(1.5)
    y1 = check()
    assert fused._plan is not plan and (y1 - y0).abs().max() > 1e-3
    # A replaced parameter and a replaced submodule: rebuilt.
    plan = fused._plan
    for m in (ref, fused):
        w = m.blocks2[0].SelfAttn.attn.proj.weight
        m.blocks2[0].SelfAttn.attn.proj.weight = nn.Parameter(w.detach() * 0.5)
    check()
    assert fused._plan is not plan
    plan = fused._plan
    for m in (ref, fused):
        old = m.blocks1[0].LocalAgg.conv2
        new = nn.Conv2d(old.in_channels, old.out_channels, 1)
        with torch.no_grad():
            new.weight.copy_(old.weight * -1.0)
            new.bias.copy_(old.bias)
        m.blocks1[0].LocalAgg.conv2 = new
    check()
    assert fused._plan is not plan

    # train() drops it; a submodule in training mode, or autograd, runs the module tree.
    fused.train()
    assert fused._plan is None
    fused.eval()
    check()
    fused.blocks2[0].train()
    with torch.no_grad():
        assert fused._eval_plan(x) is None
    fused.blocks2[0].eval()
    with torch.no_grad():
        assert fused._eval_plan(x) is not None
    assert fused._eval_plan(x) is None  # grad enabled, parameters require grad
    assert fused(x).requires_grad


def test_eval_plan_keeps_hooks_firing():
    # The plan calls no module, so with any forward hook or pre-hook the module tree runs.
    ref, fused = _pair("edgevit_xxs")
    x = torch.randn(1, 3, 64, 64)
    seen = []
    h = fused.blocks3[0].SelfAttn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        y = fused(x)
    assert seen == [torch.Size([1, 144, 4, 4])]
    h.remove()
    p = fused.blocks1[0].register_forward_pre_hook(lambda m, i: seen.append("pre"))
    with torch.no_grad():
        fused(x)
    assert seen[-1] == "pre"
    p.remove()
    g = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(m))
    try:
        n = len(seen)
        with torch.no_grad():
            fused(x)
        assert len(seen) > n
    finally:
        g.remove()
    with torch.no_grad():
        assert fused._eval_plan(x) is not None  # back on the plan
        torch.testing.assert_close(fused(x), y, rtol=0, atol=0)


def test_eval_plan_under_no_grad_returns_normal_tensors():
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
    assert all(s.is_contiguous(memory_format=torch.channels_last) for s in stages)
    y.add_(1.0)  # allowed: not an inference tensor
    w = torch.ones(1000, requires_grad=True)
    (stages[-1].sum() * w.sum()).backward()  # usable in a later autograd graph
    assert w.grad is not None
