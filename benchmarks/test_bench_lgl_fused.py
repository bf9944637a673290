"""CPU latency of edgevit::lgl_fused against what a user has today, side by side in one run.

    for i in 1 2 3 4 5; do python -m pytest benchmarks/test_bench_lgl_fused.py \
        --benchmark-json=benchmarks/results/raw/cpu$i.json; done
    python benchmarks/render_cpu.py benchmarks/results/raw/cpu[1-5].json

The raw JSON goes to the git-ignored benchmarks/results/raw/ (conftest.py creates it); the
rendered .md and .png beside it are what the repository keeps.

One pytest-benchmark group per (stage shape, batch): the official GlobalSparseAttn module in eager
mode, torch.compile of it, the dense floor (plain torch.mm / torch.bmm for just the op's four
dense products, on tensors of the same shapes), lgl_fused (as users call it: the weights it
prepares are found again in its weight cache, after a byte comparison, on every call but the
first), lgl_fused with the cache off (EDGEVIT_WEIGHT_CACHE_MB=0: weights prepared on every
call), lgl_fused_prepared (weights prepared once by lgl_prepare, as the fused model runs in eval
mode) and, at B = 1 on stages with r > 1, lgl_fused forced to the scalar variant
(EDGEVIT_CPU_ISA) next to scalar_gemm, the op's largest dense product alone through the scalar
variant's gemm: the rate that bounds what the forced-scalar op can reach.
fp32, all threads, inference mode. XS and S share every stage shape (same widths and head_dim),
so their rows are one.
"""
from __future__ import annotations

import platform

import pytest
import torch

import edgevit_kernels
from edgevit import GlobalSparseAttn

# (label, C, num_heads, sr_ratio, H = W) at 224 x 224
STAGES = [
    ("XXS-1", 36, 1, 4, 56), ("XXS-2", 72, 2, 2, 28), ("XXS-3", 144, 4, 2, 14), ("XXS-4", 288, 8, 1, 7),
    ("XS/S-1", 48, 1, 4, 56), ("XS/S-2", 96, 2, 2, 28), ("XS/S-3", 240, 5, 2, 14), ("XS/S-4", 384, 8, 1, 7),
]
BATCHES = [1, 8]
CONTENDERS = ["eager", "compile", "floor", "lgl_fused", "uncached", "prepared", "scalar",
              "scalar_gemm"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def dense_flops(B, C, heads, r, H):
    n = (-(-H // r)) ** 2
    d = C // heads
    return 2 * B * (n * C * 3 * C + 2 * heads * n * n * d + H * H * C * C)


def make_module(C, heads, r, seed=0):
    torch.manual_seed(seed)
    m = GlobalSparseAttn(C, num_heads=heads, qkv_bias=True, sr_ratio=r).eval()
    with torch.no_grad():  # non-trivial LayerNorm and propagation parameters
        for p in m.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1)
        if r > 1:
            m.norm.weight.add_(1.0)
    return m


def dense_floor(module, x, H):
    """The op's four dense products as plain ATen calls, on tensors of the shapes the op uses."""
    B, N, C = x.shape
    r, heads = module.sr, module.num_heads
    n, d = (-(-H // r)) ** 2, C // heads
    xs = torch.randn(B * n, C)
    q, k, v = (torch.randn(B * heads, n, d) for _ in range(3))
    kt, attn = k.transpose(1, 2), torch.randn(B * heads, n, n)
    y = torch.randn(B * N, C)
    wq, wp = module.qkv.weight.t(), module.proj.weight.t()

    def run(_x):
        torch.mm(xs, wq)
        torch.bmm(q, kt)
        torch.bmm(attn, v)
        return torch.mm(y, wp)

    return run


def proj_flops(C, H):
    """The projection's FLOPs, [H*W, C] x [C, C]^T: the largest of the op's dense products."""
    return 2 * H * H * C * C


def scalar_gemm_call(module, H):
    """The projection alone through linear_fused_prepared, weights packed once: under
    EDGEVIT_CPU_ISA=scalar, the scalar variant's gemm on the op's largest product (large M, K = C),
    its best case (the op's other products have fewer rows or K = head_dim), so the op's dense
    FLOPs / this rate is about the least time the forced-scalar op can take."""
    C = module.proj.weight.shape[0]
    y = torch.randn(H * H, C)
    prepared = edgevit_kernels.linear_prepare(module.proj.weight, module.proj.bias)

    def run(_x):
        return edgevit_kernels.linear_fused_prepared(y, prepared, C)

    return run


def fused_call(module, H):
    m = module
    weights, eps = m.op_weights()

    def run(x):
        return torch.ops.edgevit.lgl_fused(
            x, H, H, m.num_heads, m.sr, m.scale, *weights[:6], eps, *weights[6:])

    return run


def prepared_call(module, H):
    m = module
    weights, eps = m.op_weights()
    prepared = edgevit_kernels.lgl_prepare(*weights, m.sr)

    def run(x):
        return torch.ops.edgevit.lgl_fused_prepared(x, H, H, m.num_heads, m.sr, m.scale, eps,
                                                    prepared)

    return run


# The decorator nearest the function varies slowest: contenders innermost, so the contenders of
# one (stage, B) run back to back (seconds apart) and share the VM's speed of that moment.
@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("stage", STAGES, ids=[s[0] for s in STAGES])
def test_lgl_fused_cpu(benchmark, stage, B, contender, monkeypatch, request):
    label, C, heads, r, H = stage
    if contender in ("scalar", "scalar_gemm"):
        if B != 1 or r == 1:
            pytest.skip("the forced-scalar target is for B = 1, r > 1")
        previous = edgevit_kernels.cpu_isa()
        edgevit_kernels.set_cpu_isa("scalar")
        request.addfinalizer(lambda: edgevit_kernels.set_cpu_isa(previous))
    if contender == "uncached":
        monkeypatch.setenv("EDGEVIT_WEIGHT_CACHE_MB", "0")
    module = make_module(C, heads, r)
    x = torch.randn(B, H * H, C)
    fn = {
        "eager": lambda: lambda t: module(t, H, H),
        "compile": lambda: torch.compile(lambda t: module(t, H, H), dynamic=False),
        "floor": lambda: dense_floor(module, x, H),
        "lgl_fused": lambda: fused_call(module, H),
        "prepared": lambda: prepared_call(module, H),
        "uncached": lambda: fused_call(module, H),
        "scalar": lambda: fused_call(module, H),
        "scalar_gemm": lambda: scalar_gemm_call(module, H),
    }[contender]()
    benchmark.group = f"{label} C={C} heads={heads} r={r} {H}x{H} B={B}"
    benchmark.extra_info.update(
        contender=contender, stage=label, B=B, C=C, heads=heads, r=r, H=H,
        flops=dense_flops(B, C, heads, r, H), proj_flops=proj_flops(C, H),
        isa=edgevit_kernels.cpu_isa(), cpu_info=edgevit_kernels.cpu_info(),
        threads=torch.get_num_threads(), torch=torch.__version__, cpu=_cpu_model(),
    )
    with torch.inference_mode():
        if contender not in ("eager", "floor", "scalar_gemm"):
            torch.testing.assert_close(fn(x), module(x, H, H), atol=1e-3, rtol=1e-3)
        for _ in range(3):  # warm-up (and compilation) outside the timed rounds
            fn(x)
        # Many rounds: this shared VM's speed drifts, and a long window keeps the medians comparable.
        benchmark.pedantic(fn, args=(x,), rounds=min(1000, max(100, int(3e10 / dense_flops(B, C, heads, r, H)))),
                           warmup_rounds=10, iterations=1)
