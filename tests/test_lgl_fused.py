"""edgevit::lgl_fused on CPU against its pure-PyTorch reference.

Tolerances (max abs and rel error against the reference computed in the same dtype, on outputs
of O(1) magnitude): float32 atol = rtol = 1e-4 (the kernels sum in another order and, on SIMD
ISAs, use FMA and a polynomial exp; errors seen are ~1e-5); float64 atol = rtol = 1e-10.
"""
import os
import subprocess
import sys
import threading

import pytest
import torch

import edgevit_kernels
from edgevit_kernels import lgl_fused, lgl_reference
from lgl_samples import AWKWARD_SHAPES, EDGEVIT_SHAPES, cpu_isa, make_args, shape_id

TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}
ISAS = edgevit_kernels.supported_cpu_isas()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", EDGEVIT_SHAPES + AWKWARD_SHAPES, ids=shape_id)
def test_matches_reference(shape, dtype, isa):
    args = make_args(*shape, dtype=dtype)
    out = lgl_fused(*args)
    assert out.shape == args[0].shape and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, lgl_reference(*args), **TOL[dtype])


@pytest.mark.parametrize("shape", [(2, 14, 14, 72, 2, 2), (1, 7, 9, 40, 5, 1)], ids=shape_id)
def test_optional_biases_none(shape, isa):
    args = make_args(*shape, qkv_bias=False, proj_bias=False)
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), **TOL[torch.float32])


def test_large_mean_input(isa):
    # A large common offset must not cancel precision away in the LayerNorm statistics.
    args = make_args(1, 28, 28, 72, 2, 2, x_offset=1e3)
    ref64 = lgl_reference(*[a.double() if isinstance(a, torch.Tensor) else a for a in args])
    err_op = (lgl_fused(*args).double() - ref64).abs().max().item()
    err_ref = (lgl_reference(*args).double() - ref64).abs().max().item()
    assert err_op <= max(4 * err_ref, 1e-4), (err_op, err_ref)


def test_non_contiguous_x(isa):
    args = make_args(2, 12, 10, 48, 4, 3)
    x = args[0]
    args[0] = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, batch-minor strides
    assert not args[0].is_contiguous()
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), **TOL[torch.float32])
    args[0] = torch.randn(2, 120, 96)[:, :, ::2]  # channel stride 2
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), **TOL[torch.float32])


def test_nan_and_inf_propagate_like_reference(isa):
    args = make_args(1, 8, 8, 16, 2, 2)
    x = args[0].clone()
    x[0, 0, 3] = float("nan")      # a sampled token (0, 0): poisons every attention row
    x[0, 1, 5] = float("inf")      # not sampled (0, 1): dropped like in the reference
    args[0] = x
    out, ref = lgl_fused(*args), lgl_reference(*args)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().all()
    args[0] = make_args(1, 8, 8, 16, 2, 2)[0]
    args[0][0, 9, 0] = float("inf")  # not sampled
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), **TOL[torch.float32])


def test_empty_batch():
    args = make_args(0, 4, 6, 8, 2, 2)
    out = lgl_fused(*args)
    assert out.shape == (0, 24, 8)


@pytest.mark.parametrize("shape", [(3, 28, 28, 72, 2, 2), (2, 7, 7, 288, 8, 1), (1, 56, 56, 36, 1, 4)], ids=shape_id)
def test_bitwise_identical_for_any_thread_count(shape):
    args = make_args(*shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lgl_fused(*args)
        torch.set_num_threads(max(2, threads))
        many = lgl_fused(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_unknown_or_unavailable_isa_is_a_clear_error():
    before = edgevit_kernels.cpu_isa()
    supported = ",".join(ISAS)
    with pytest.raises(ValueError, match=r"set_cpu_isa: expected an ISA among auto, scalar, neon, "
                                         rf"avx2, avx512, got 'sse9'; this machine supports {supported}$"):
        edgevit_kernels.set_cpu_isa("sse9")
    missing = next(i for i in ("neon", "avx2", "avx512") if i not in ISAS)
    with pytest.raises(ValueError, match=f"set_cpu_isa: ISA '{missing}' is not available: .*; "
                                         f"this machine supports {supported}$"):
        edgevit_kernels.set_cpu_isa(missing)
    with pytest.raises(TypeError, match="set_cpu_isa: name must be a str or None, got int"):
        edgevit_kernels.set_cpu_isa(2)
    assert edgevit_kernels.cpu_isa() == before  # a rejected call changes nothing
    torch.testing.assert_close(lgl_fused(*make_args(1, 4, 4, 8, 1, 2)),
                               lgl_reference(*make_args(1, 4, 4, 8, 1, 2)), **TOL[torch.float32])


def test_set_cpu_isa_auto_is_the_best():
    with cpu_isa("scalar"):  # restores the ISA in use before (CI may force one)
        for auto in (None, "auto", ""):
            edgevit_kernels.set_cpu_isa("scalar")
            assert edgevit_kernels.set_cpu_isa(auto) == ISAS[-1] == edgevit_kernels.cpu_isa()


def test_set_cpu_isa_while_ops_run():
    """Ops in flight while another thread switches the ISA finish on one ISA: each result is
    bitwise that of the ISA it ran with, never a crash or a mix."""
    args = make_args(1, 14, 14, 48, 2, 2)
    expected = []
    for name in ISAS:
        with cpu_isa(name):
            expected.append(lgl_fused(*args))
    errors, stop = [], threading.Event()

    def run():
        try:
            while not stop.is_set():
                out = lgl_fused(*args)
                if not any(torch.equal(out, e) for e in expected):
                    errors.append("a result matching no ISA")
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=run) for _ in range(2)]
    with cpu_isa(ISAS[0]):
        for t in threads:
            t.start()
        try:
            for i in range(200):
                edgevit_kernels.set_cpu_isa(ISAS[i % len(ISAS)])
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
    assert not errors, errors[:3]


_AT_START = """
import torch, edgevit_kernels as ek
from lgl_samples import make_args
args = make_args(1, 4, 4, 8, 1, 2)
try:
    print("isa", ek.cpu_isa())
except ValueError as e:
    print("error", e)
try:
    ek.lgl_fused(*args)
    print("op ok")
except ValueError as e:
    print("op error", e)
print("set", ek.set_cpu_isa(None))
ek.lgl_fused(*args)
print("op ok")
"""


@pytest.mark.parametrize("env", ["scalar", "bogus"])
def test_edgevit_cpu_isa_is_read_once_at_start(env):
    """EDGEVIT_CPU_ISA picks the ISA when the extension loads; a bad value does not break the
    import: cpu_isa() and every op raise, naming it, until set_cpu_isa chooses one."""
    environ = dict(os.environ, EDGEVIT_CPU_ISA=env,
                   PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    out = subprocess.run([sys.executable, "-c", _AT_START], env=environ, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if env == "scalar":
        assert lines == ["isa scalar", "op ok", f"set {ISAS[-1]}", "op ok"]
    else:
        expect = (f"EDGEVIT_CPU_ISA at start: expected an ISA among auto, scalar, neon, avx2, "
                  f"avx512, got 'bogus'; this machine supports {','.join(ISAS)}; call "
                  "edgevit_kernels.set_cpu_isa(name)")
        assert lines[0].startswith("error edgevit: " + expect), lines
        assert lines[1].startswith("op error edgevit: " + expect), lines
        assert lines[2:] == [f"set {ISAS[-1]}", "op ok"]


# ---------------------------------------------------------------- torch integration

OPCHECK_SHAPES = [(1, 4, 4, 8, 2, 1), (2, 5, 7, 12, 3, 2), (3, 6, 5, 8, 1, 4)]


@pytest.mark.parametrize("shape", OPCHECK_SHAPES, ids=shape_id)
def test_opcheck(shape):
    args = make_args(*shape)
    for a in args:
        if isinstance(a, torch.Tensor):
            a.requires_grad_(True)
    torch.library.opcheck(torch.ops.edgevit.lgl_fused.default, args)


@pytest.mark.parametrize("shape", [(1, 4, 4, 8, 2, 1), (2, 3, 5, 4, 2, 2), (1, 5, 3, 4, 1, 4), (1, 3, 3, 6, 3, 3)],
                         ids=shape_id)
def test_gradcheck_float64(shape):
    args = make_args(*shape, dtype=torch.float64)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def f(*ts):
        call = list(args)
        for i, t in zip(tensors, ts):
            call[i] = t
        return lgl_fused(*call)

    inputs = tuple(args[i].clone().requires_grad_(True) for i in tensors)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_backward_matches_reference_float32():
    args = make_args(2, 14, 14, 72, 2, 2)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    grads = []
    for fn in (lgl_fused, lgl_reference):
        call = list(args)
        for i in tensors:
            call[i] = args[i].clone().requires_grad_(True)
        out = fn(*call)
        out.backward(torch.ones_like(out) / out.numel() ** 0.5)
        grads.append([call[i].grad for i in tensors])
    for g_op, g_ref in zip(*grads):
        torch.testing.assert_close(g_op, g_ref, atol=1e-4, rtol=1e-3)


def test_torch_compile_fullgraph():
    args = make_args(2, 10, 9, 24, 3, 2)

    def f(x, *rest):
        return lgl_fused(x * 2.0, *rest) + 1.0

    compiled = torch.compile(f, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(*args), f(*args), **TOL[torch.float32])


def test_meta_tensors_give_shapes():
    args = make_args(3, 6, 5, 12, 3, 2, device="meta")
    out = lgl_fused(*args)
    assert out.device.type == "meta" and out.shape == (3, 30, 12)


# ---------------------------------------------------------------- bad input

def _bad(mutate, match, shape=(2, 6, 6, 12, 3, 2)):
    args = make_args(*shape)
    mutate(args)
    with pytest.raises(RuntimeError, match=match):
        lgl_fused(*args)


def test_bad_x_not_3d():
    _bad(lambda a: a.__setitem__(0, a[0].reshape(-1)), r"x must be 3-D \[B, N, C\], got shape \[864\]")


def test_bad_n_not_h_times_w():
    _bad(lambda a: a.__setitem__(1, 7), r"x.size\(1\) must equal H\*W = 7\*6 = 42, got 36")


def test_bad_c_not_multiple_of_heads():
    _bad(lambda a: a.__setitem__(3, 5), r"must be a positive multiple of num_heads = 5, got C = 12")


def test_bad_num_heads_zero():
    _bad(lambda a: a.__setitem__(3, 0), r"num_heads must be >= 1, got 0")


@pytest.mark.parametrize("i, name, shape, expected", [
    (6, "qkv_weight", (36, 11), r"\[36, 12\]"),
    (7, "qkv_bias", (35,), r"\[36\]"),
    (8, "prop_weight", (12, 1, 3, 3), r"\[12, 1, 2, 2\]"),
    (9, "prop_bias", (11,), r"\[12\]"),
    (10, "norm_weight", (13,), r"\[12\]"),
    (11, "norm_bias", (1, 12), r"\[12\]"),
    (13, "proj_weight", (12, 13), r"\[12, 12\]"),
    (14, "proj_bias", (24,), r"\[12\]"),
])
def test_bad_weight_shapes(i, name, shape, expected):
    _bad(lambda a: a.__setitem__(i, torch.zeros(shape)), rf"{name} must have shape {expected}, got")


def test_bad_sr_ratio():
    _bad(lambda a: a.__setitem__(4, 0), r"sr_ratio must be >= 1, got 0")


@pytest.mark.parametrize("hw", [(0, 6), (6, 0), (-1, 6)])
def test_bad_h_or_w(hw):
    _bad(lambda a: (a.__setitem__(1, hw[0]), a.__setitem__(2, hw[1])), r"H and W must be >= 1")


@pytest.mark.parametrize("i, name", [(8, "prop_weight"), (9, "prop_bias"), (10, "norm_weight"), (11, "norm_bias")])
def test_bad_prop_norm_missing_with_r_gt_1(i, name):
    _bad(lambda a: a.__setitem__(i, None), rf"{name} is required when sr_ratio > 1 \(got None, sr_ratio = 2\)")


@pytest.mark.parametrize("i, name", [(8, "prop_weight"), (9, "prop_bias"), (10, "norm_weight"), (11, "norm_bias")])
def test_bad_prop_norm_given_with_r_1(i, name):
    def mutate(a):
        given = a[i]
        a[4] = 1
        a[8:12] = [None] * 4
        a[i] = given
    _bad(mutate, rf"{name} must be None when sr_ratio = 1 \(got a tensor, sr_ratio = 1\)")


def test_bad_dtype_mismatch():
    _bad(lambda a: a.__setitem__(6, a[6].double()), r"qkv_weight must have the dtype of x \(Float\), got Double")


def test_bad_device_mismatch():
    _bad(lambda a: a.__setitem__(13, a[13].to("meta")), r"proj_weight must be on the device of x \(cpu\), got meta")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool], ids=str)
def test_bad_integer_dtype(dtype):
    def mutate(a):
        for i, t in enumerate(a):
            if isinstance(t, torch.Tensor):
                a[i] = t.to(dtype)
    _bad(mutate, r"x must be float32 or float64 on CPU, got")


# lgl_fused's weight cache (csrc/lgl_weight_cache.h): reused only for byte-equal weights.
@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.delenv("EDGEVIT_WEIGHT_CACHE_MB", raising=False)
    edgevit_kernels.lgl_weight_cache_clear()
    yield
    edgevit_kernels.lgl_weight_cache_clear()


@pytest.mark.parametrize("shape", [(1, 56, 56, 48, 1, 4), (1, 14, 14, 144, 4, 2), (2, 7, 7, 64, 2, 1)], ids=shape_id)
def test_weight_cache_hits_are_bitwise_equal_to_uncached(shape, fresh_cache, monkeypatch):
    args = make_args(*shape)
    first = lgl_fused(*args)
    again = lgl_fused(*args)
    info = edgevit_kernels.lgl_weight_cache_info()
    assert (info["entries"], info["hits"], info["misses"]) == (1, 1, 1)
    monkeypatch.setenv("EDGEVIT_WEIGHT_CACHE_MB", "0")
    uncached = lgl_fused(*args)
    assert edgevit_kernels.lgl_weight_cache_info()["hits"] == 1  # off: neither read nor filled
    assert torch.equal(first, uncached) and torch.equal(again, uncached)


@pytest.mark.parametrize("route", ["inplace", "data", "numpy"])
def test_weight_cache_never_serves_changed_weights(route, fresh_cache):
    args = make_args(1, 12, 12, 32, 2, 2)
    lgl_fused(*args)
    proj = args[13]
    if route == "inplace":
        proj.mul_(-1.0)
    elif route == "data":  # bypasses the version counter
        proj.data.copy_(torch.randn_like(proj))
    else:  # so does a NumPy view
        proj.numpy()[0, 0] += 1.0
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), **TOL[torch.float32])
    assert edgevit_kernels.lgl_weight_cache_info()["misses"] == 2


def test_weight_cache_finds_equal_weights_in_new_tensors(fresh_cache):
    args = make_args(1, 12, 12, 32, 2, 2)
    out = lgl_fused(*args)
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    assert torch.equal(lgl_fused(*copies), out)
    assert edgevit_kernels.lgl_weight_cache_info()["hits"] == 1


def _channels_with_entry_over_half_a_mib():
    """A C (r = 2) whose cache entry, on the ISA in use, is over 0.5 MiB and cacheable.

    An entry's size depends on the ISA's panel width (AVX2's entries are ~25% smaller than
    AVX-512's for the same weights), so it is measured through lgl_weight_cache_info(), never
    assumed; the caller's cache is cleared on return."""
    sizes = {}
    for C in range(112, 200, 8):
        edgevit_kernels.lgl_weight_cache_clear()
        lgl_fused(*make_args(1, 8, 8, C, 2, 2, seed=99))
        sizes[C] = edgevit_kernels.lgl_weight_cache_info()["bytes"]
        if (1 << 19) < sizes[C] <= (1 << 20):
            edgevit_kernels.lgl_weight_cache_clear()
            return C
    pytest.fail(f"no C gives a cache entry in (0.5, 1] MiB on {edgevit_kernels.cpu_isa()}: {sizes}")


def test_weight_cache_keys_on_isa_and_is_bounded(fresh_cache, monkeypatch):
    args = make_args(1, 8, 8, 16, 2, 2)
    for isa_name in ISAS:  # the same weights prepared for each ISA: each its own entry
        with cpu_isa(isa_name):
            torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), **TOL[torch.float32])
    assert edgevit_kernels.lgl_weight_cache_info()["entries"] == len(ISAS)
    for seed in range(40):  # more weights than entries: the oldest go
        lgl_fused(*make_args(1, 8, 8, 16, 2, 2, seed=seed + 1))
    assert edgevit_kernels.lgl_weight_cache_info()["entries"] == 32
    monkeypatch.setenv("EDGEVIT_WEIGHT_CACHE_MB", "1")  # 1 MiB: evicts down to it
    C = _channels_with_entry_over_half_a_mib()
    first, second = (make_args(1, 8, 8, C, 2, 2, seed=s) for s in (100, 101))
    lgl_fused(*first)
    lgl_fused(*second)  # the two do not fit in 1 MiB: the first goes
    assert edgevit_kernels.lgl_weight_cache_info()["bytes"] <= 1 << 20
    hits, misses = (edgevit_kernels.lgl_weight_cache_info()[k] for k in ("hits", "misses"))
    lgl_fused(*second)
    lgl_fused(*first)
    info = edgevit_kernels.lgl_weight_cache_info()
    assert (info["hits"], info["misses"]) == (hits + 1, misses + 1)
    monkeypatch.delenv("EDGEVIT_WEIGHT_CACHE_MB")
    big = make_args(1, 7, 7, 384, 8, 1)  # 2.4 MB of weights: over 512 KiB, never cached
    before = edgevit_kernels.lgl_weight_cache_info()
    for _ in range(2):
        torch.testing.assert_close(lgl_fused(*big), lgl_reference(*big), **TOL[torch.float32])
    after = edgevit_kernels.lgl_weight_cache_info()
    assert (after["entries"], after["hits"], after["misses"]) == (before["entries"], before["hits"], before["misses"])
    edgevit_kernels.lgl_weight_cache_clear()
    assert edgevit_kernels.lgl_weight_cache_info() == {"entries": 0, "bytes": 0, "hits": 0, "misses": 0}


def test_weight_cache_bad_budget_is_a_clear_error(fresh_cache, monkeypatch):
    monkeypatch.setenv("EDGEVIT_WEIGHT_CACHE_MB", "lots")
    with pytest.raises(RuntimeError, match="EDGEVIT_WEIGHT_CACHE_MB: expected a whole number of MiB >= 0"):
        lgl_fused(*make_args(1, 8, 8, 16, 2, 2))
