"""Parity of the Triton forward of ``edgevit::lgl_fused`` against ``lgl_reference``.

Without CUDA the kernels run in Triton's interpreter on CPU tensors (fp32, plus a little fp16;
slow, so shapes are kept tiny; the whole file takes ~20 s of CPU). With CUDA the same small-shape cases run compiled on the GPU, plus EdgeViT stage
shapes in fp32/fp16/bf16, dispatch through ``torch.ops.edgevit.lgl_fused``, gradients and
``torch.compile``.
"""
import os

import pytest

pytestmark = pytest.mark.slow  # the slowest files: `pytest -m "not slow"` skips them
import torch

# conftest.py sets TRITON_INTERPRET=1 without CUDA, before any module imports the kernels.
pytest.importorskip("triton")

from edgevit_kernels.reference import lgl_reference  # noqa: E402
from edgevit_kernels.triton import lgl_fused as lf  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

HAS_CUDA = torch.cuda.is_available() and not INTERPRET
DEVICE = "cuda" if HAS_CUDA else "cpu"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (and TRITON_INTERPRET unset)")

# fp32 tolerance, TF32 off: atol = rtol = 1e-4 (observed ~1e-6 in the interpreter); with TF32
# on, 2e-3 of the output scale. 16-bit tolerances are relative to the output scale (atol =
# tol * max|ref|), against the fp32 reference evaluated on the same rounded inputs: the kernel
# accumulates in fp32 while eager 16-bit rounds between ops.
FP32_TOL = 1e-4
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


@pytest.fixture(autouse=True)
def _no_tf32():
    # The reference and the kernel both follow these flags; off makes fp32 parity exact-ish.
    if not HAS_CUDA:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _assert_close_scaled(out, ref, dtype, tol=None, scaled=None, msg=""):
    """fp32: atol = rtol = tol. 16-bit (or scaled): atol = tol * max(max|ref|, 1), rtol = tol."""
    tol = TOL[dtype] if tol is None else tol
    scaled = dtype != torch.float32 if scaled is None else scaled
    atol = tol * max(ref.abs().max().item(), 1.0) if scaled else tol
    torch.testing.assert_close(out.float(), ref.float(), atol=atol, rtol=tol,
                               msg=(lambda m: f"{msg}: {m}") if msg else None)


def make_args(B, H, W, C, heads, r, *, dtype=torch.float32, device=DEVICE, qkv_bias=True,
              proj_bias=True, noncontig_x=False, noncontig_w=False, seed=0):
    """Positional op arguments. Weights ~ C^-1/2 keep activations O(1), so the softmax is
    neither uniform nor one-hot and LayerNorm sees real variance."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, s=1.0):
        return (torch.randn(*shape, generator=g) * s).to(dtype)

    N = H * W
    if noncontig_x:  # channel stride 1 broken twice over: [B, C, N] transposed
        x = rnd(B, C, N).transpose(1, 2)
    else:
        x = rnd(B, N, C)
    if noncontig_w:
        qkv_w = rnd(C, 3 * C, s=C ** -0.5).t()
        proj_w = rnd(C, C, s=C ** -0.5).t()
    else:
        qkv_w = rnd(3 * C, C, s=C ** -0.5)
        proj_w = rnd(C, C, s=C ** -0.5)
    qkv_b = rnd(3 * C, s=0.1) if qkv_bias else None
    proj_b = rnd(C, s=0.1) if proj_bias else None
    if r > 1:
        prop_w, prop_b = rnd(C, 1, r, r), rnd(C, s=0.1)
        norm_w, norm_b = 1 + rnd(C, s=0.1), rnd(C, s=0.1)
    else:
        prop_w = prop_b = norm_w = norm_b = None
    args = [x, H, W, heads, r, (C // heads) ** -0.5, qkv_w, qkv_b, prop_w, prop_b,
            norm_w, norm_b, 1e-5, proj_w, proj_b]
    return [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]


def fp32_args(args):
    return [a.float() if isinstance(a, torch.Tensor) else a for a in args]


# (B, H, W, C, heads, r, options). Shapes not divisible by r, n crossing several 16-token
# blocks, C crossing several 16-channel blocks, head_dim 8..36, missing biases, strided inputs.
SMALL_CASES = [
    pytest.param(1, 5, 7, 16, 2, 2, {}, id="5x7-r2-C16h2"),
    pytest.param(2, 9, 6, 24, 3, 4, {"noncontig_x": True}, id="9x6-r4-C24h3-strided_x"),
    pytest.param(2, 7, 7, 36, 1, 1, {"qkv_bias": False}, id="7x7-r1-C36h1-no_qkv_bias"),
    pytest.param(1, 11, 9, 36, 1, 2, {"proj_bias": False, "noncontig_x": True},
                 id="11x9-r2-C36h1-no_proj_bias-strided_x"),
    pytest.param(2, 6, 5, 24, 3, 1, {"noncontig_w": True, "qkv_bias": False, "proj_bias": False},
                 id="6x5-r1-C24h3-strided_w-no_bias"),
    pytest.param(1, 3, 5, 16, 2, 4, {}, id="3x5-r4-single_row"),
    pytest.param(2, 4, 4, 16, 2, 4, {}, id="4x4-r4-one_token"),
    pytest.param(1, 10, 10, 48, 2, 1, {}, id="10x10-r1-C48h2-n100"),
    pytest.param(1, 28, 28, 36, 1, 4, {"noncontig_x": True}, id="28x28-r4-C36h1-stage_like"),
]


@pytest.mark.parametrize("B,H,W,C,heads,r,opts", SMALL_CASES)
def test_parity_small(B, H, W, C, heads, r, opts):
    args = make_args(B, H, W, C, heads, r, **opts)
    out = lf.lgl_fused_triton(*args)
    ref = lgl_reference(*args)
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=FP32_TOL, rtol=FP32_TOL)


@pytest.mark.parametrize("B,H,W,C,heads,r", [(2, 9, 11, 40, 2, 2), (1, 7, 7, 48, 2, 1)])
def test_parity_fp16(B, H, W, C, heads, r):
    # The interpreter runs fp16 faithfully (its bf16 tl.dot does not), so 16-bit paths get
    # a CPU check too. Reference: fp32 math on the same fp16 inputs.
    args = make_args(B, H, W, C, heads, r, dtype=torch.float16, noncontig_x=True)
    out = lf.lgl_fused_triton(*args)
    assert out.dtype == torch.float16
    _assert_close_scaled(out, lgl_reference(*fp32_args(args)), torch.float16)


def test_empty_batch():
    args = make_args(0, 4, 4, 16, 2, 2)
    out = lf.lgl_fused_triton(*args)
    assert out.shape == (0, 16, 16)


@pytest.mark.parametrize("bad,msg", [
    (lambda a: a.__setitem__(1, 5), "must equal H\\*W"),
    (lambda a: a.__setitem__(3, 5), "must be a positive multiple of num_heads"),
    (lambda a: a.__setitem__(8, None), "prop_weight is required when sr_ratio > 1"),
    (lambda a: a.__setitem__(6, a[6][:, :8]), "qkv_weight must have shape"),
    (lambda a: a.__setitem__(0, a[0].double()), "x must be float32, float16 or bfloat16 on CUDA"),
])
def test_input_checks(bad, msg):
    args = make_args(1, 4, 4, 16, 2, 2, device="cpu")
    bad(args)
    with pytest.raises(RuntimeError, match=msg):
        lf.lgl_fused_triton(*args)


def test_cpu_tensors_never_tune(monkeypatch):
    x = torch.empty(1, device="cpu")
    assert not lf._use_autotune(x)
    monkeypatch.setenv("EDGEVIT_TRITON_AUTOTUNE", "1")
    assert not lf._use_autotune(x)  # CPU tensors never tune


def test_config_pruning_keeps_one():
    import triton

    cfgs = [triton.Config(dict(BLOCK_M=m, BLOCK_N=nb, BLOCK_K=k)) for m, nb, k, _, _ in lf._ATTN_CANDIDATES]
    assert lf._prune_attn(cfgs, {"C": 16, "n_tok": 1})
    assert len(lf._prune_attn(cfgs, {"C": 36, "n_tok": 196})) == len(cfgs)
    assert all(c.kwargs["BLOCK_K"] > 16 for c in lf._prune_attn(cfgs, {"C": 384, "n_tok": 196}))
    cfgs = [triton.Config(dict(BLOCK_T=t, BLOCK_O=o, BLOCK_K=k)) for t, o, k, _, _ in lf._OUT_CANDIDATES]
    assert lf._prune_out(cfgs, {"C": 16})


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.bfloat16] if HAS_CUDA else []), ids=str)
@pytest.mark.parametrize("r", [1, 2])
def test_every_tuning_candidate(monkeypatch, r, dtype):
    # Each autotune candidate must be numerically right, not just the one that wins on a GPU.
    args = make_args(2, 9, 11, 40, 2, r, noncontig_x=True, dtype=dtype)
    ref = lgl_reference(*fp32_args(args))
    attn = [dict(BLOCK_M=m, BLOCK_N=nb, BLOCK_K=k, num_warps=w, num_stages=s)
            for m, nb, k, w, s in lf._ATTN_CANDIDATES]
    outc = [dict(BLOCK_T=t, BLOCK_O=o, BLOCK_K=k, num_warps=w, num_stages=s)
            for t, o, k, w, s in lf._OUT_CANDIDATES]
    for i in range(max(len(attn), len(outc))):
        monkeypatch.setattr(lf, "_FIXED_ATTN", attn[i % len(attn)])
        monkeypatch.setattr(lf, "_FIXED_OUT", outc[i % len(outc)])
        out = lf.lgl_fused_triton(*args)
        _assert_close_scaled(out, ref, dtype, msg=f"{attn[i % len(attn)]} {outc[i % len(outc)]}")


@pytest.mark.skipif(HAS_CUDA, reason="the CUDA variant is test_cuda_op_matches_launcher_and_tuned_path")
def test_autotuned_launch_path(monkeypatch):
    # Drives the real Autotuner wrappers (key names, pruning, grid lambdas) with a CPU timer.
    import time

    timed = []

    def cpu_bench(fn, quantiles):
        timed.append(fn)
        t0 = time.perf_counter()
        fn()
        return [time.perf_counter() - t0] * len(quantiles)

    monkeypatch.setattr(lf, "_use_autotune", lambda x: True)
    monkeypatch.setattr(lf, "_autotune_kwargs", lambda: {"do_bench": cpu_bench})
    lf._tuned_kernels.cache_clear()
    try:
        args = make_args(1, 16, 15, 64, 2, 2)  # n = 64, C = 64: several candidates survive
        torch.testing.assert_close(lf.lgl_fused_triton(*args), lgl_reference(*args),
                                   atol=FP32_TOL, rtol=FP32_TOL)
        assert len(timed) > 2
    finally:
        lf._tuned_kernels.cache_clear()


def test_the_cuda_kernel_is_registered():
    pytest.importorskip("edgevit_kernels._C")
    import edgevit_kernels  # noqa: F401  (ops.py registers the CUDA shim)

    assert torch._C._dispatch_has_kernel_for_dispatch_key("edgevit::lgl_fused", "CUDA")


# ---------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------
# (H=W, C, heads, r): EdgeViT XXS then XS/S stages at 224x224, then awkward ones.
STAGES = [
    (56, 36, 1, 4), (28, 72, 2, 2), (14, 144, 4, 2), (7, 288, 8, 1),
    (56, 48, 1, 4), (28, 96, 2, 2), (14, 240, 5, 2), (7, 384, 8, 1),
]
AWKWARD = [  # (H, W, C, heads, r)
    (11, 13, 40, 5, 3),   # head_dim 8 < 16, r = 3
    (3, 5, 20, 1, 1),     # n = 15
    (17, 9, 96, 3, 4),    # r does not divide either side
    (29, 31, 144, 4, 2),  # n = 240 > 196
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]




def _op(*args):
    import edgevit_kernels  # noqa: F401  (loads the schema and the CUDA registration)

    return torch.ops.edgevit.lgl_fused(*args)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("H,W,C,heads,r", [(s[0], s[0], *s[1:]) for s in STAGES] + AWKWARD)
def test_cuda_parity(H, W, C, heads, r, dtype):
    args = make_args(2, H, W, C, heads, r, dtype=dtype, noncontig_x=(H % 2 == 0))
    out = _op(*args)
    assert out.dtype == dtype and out.shape == args[0].shape
    ref = lgl_reference(*fp32_args(args))
    _assert_close_scaled(out, ref, dtype)


@requires_cuda
@pytest.mark.parametrize("H,C,heads,r", [(28, 96, 2, 2), (7, 384, 8, 1)])
def test_cuda_fp32_tf32(H, C, heads, r):
    # With TF32 allowed the kernel's fp32 dots use it too (as F.linear does): 2e-3 of scale.
    args = make_args(2, H, H, C, heads, r)
    ref = lgl_reference(*args)  # TF32 off: the exact answer
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by the autouse fixture
    out = _op(*args)
    _assert_close_scaled(out, ref, torch.float32, tol=2e-3, scaled=True)


@requires_cuda
def test_cuda_op_matches_launcher_and_tuned_path(monkeypatch):
    args = make_args(4, 28, 28, 72, 2, 2, dtype=torch.bfloat16)
    fixed = lf.lgl_fused_triton(*args)
    torch.testing.assert_close(_op(*args), fixed, atol=0, rtol=0)
    # The autotuned configs are what benchmarks and users run: check their numerics too.
    monkeypatch.setenv("EDGEVIT_TRITON_AUTOTUNE", "1")
    tuned = lf.lgl_fused_triton(*args)
    _assert_close_scaled(tuned, lgl_reference(*fp32_args(args)), torch.bfloat16)


@requires_cuda
@pytest.mark.parametrize("H,C,heads,r", [(28, 72, 2, 2), (7, 288, 8, 1), (9, 24, 3, 4)])
def test_cuda_grad(H, C, heads, r):
    args = make_args(2, H, H, C, heads, r)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    leaves_op = [a.detach().requires_grad_() if i in tensors else a for i, a in enumerate(args)]
    leaves_ref = [a.detach().requires_grad_() if i in tensors else a for i, a in enumerate(args)]
    out = _op(*leaves_op)
    ref = lgl_reference(*leaves_ref)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(out, ref, atol=FP32_TOL, rtol=FP32_TOL)
    for i in tensors:
        gi, gr = leaves_op[i].grad, leaves_ref[i].grad
        torch.testing.assert_close(gi, gr, atol=FP32_TOL * max(gr.abs().max().item(), 1.0),
                                   rtol=FP32_TOL, msg=lambda m: f"arg {i}: {m}")


@requires_cuda
def test_cuda_torch_compile_fullgraph():
    import edgevit_kernels  # noqa: F401

    args = make_args(2, 14, 14, 144, 4, 2, dtype=torch.bfloat16)

    def f(x, *rest):
        return torch.ops.edgevit.lgl_fused(x * 1.0, *rest) + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    out = compiled(*args)
    torch.testing.assert_close(out, f(*args))
