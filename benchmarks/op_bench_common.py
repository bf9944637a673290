"""What the per-op CPU benchmarks share (test_bench_mlp_fused.py, test_bench_patch_embed.py,
test_bench_dwconv.py, test_bench_linear_fused.py; rendered by render_ops.py): the EdgeViT
shapes each op runs at, the correctness check done before timing, the hot and cold timing
modes, and the machine record kept in every benchmark's extra_info.

Shapes are those of ``python/edgevit/model.py`` at 224 x 224, as the inference plan
(``python/edgevit/inference.py``) calls the ops: XXS widths (36, 72, 144, 288), XS and S
widths (48, 96, 240, 384) (XS and S share every shape, so their rows are one), token maps
56, 28, 14, 7, MLP hidden = 4 C, patch sizes 4, 2, 2, 2, and a LocalAgg (5x5 dwconv, two 1x1
convolutions, a MLP without LayerNorm) in the stages with sr_ratio > 1 (the first three).

Modes. *hot*: the same call repeated (pytest-benchmark's own calibration of rounds); weights,
input and output stay in cache between calls where they fit. *cold*: before each timed call
(outside the timed region, pedantic's ``setup``) a buffer of 2 x (threads x L2 + L3) bytes,
sizes from ``edgevit_kernels.cpu_info()``, is read and written, so the call finds its weights,
input and output in DRAM: an upper bound on what the caches lose inside a model, where the
input was just written by the previous op.

Threads: torch's (all cores unless OMP_NUM_THREADS says otherwise), recorded with the machine.
On a machine shared with other work, ATen's OpenMP regions (the references) stall for a
timeslice whenever another process holds a core, which the edgevit ops' pool avoids; each
benchmark records a canary (canary_ms) so the render can mark the rows measured so, and a run
with OMP_NUM_THREADS=1 compares the kernels free of that effect.
"""
from __future__ import annotations

import functools
import os
import platform
import re
import time
from typing import Callable, NamedTuple, Optional

import torch

import edgevit_kernels

BATCHES = (1, 8)
MODES = ("hot", "cold")
# What both checks allow: |op - ref| <= RTOL |ref| + ATOL max(1, max |ref|). fp32 sums of up to
# 1536 products in another order than ATen's differ by ~1e-6 of the output's scale
# (tests/test_mlp_fused.py); 1e-4 catches a wrong result, not a rounding difference.
RTOL = ATOL = 1e-4

# ----------------------------------------------------------------------------- shapes

WIDTHS = {"XXS": (36, 72, 144, 288), "XS/S": (48, 96, 240, 384)}
SIDES = (56, 28, 14, 7)  # token map side per stage at 224 x 224
IMAGE = 224
PATCH = (4, 2, 2, 2)
SR_RATIOS = (4, 2, 2, 1)  # LocalAgg only where sr_ratio > 1
MLP_RATIO = 4


def _stages():
    for family, widths in WIDTHS.items():
        for i, C in enumerate(widths):
            yield f"{family}-{i + 1}", i, widths, C


def _dedup(cases):
    """One case per distinct shape (every field but the label); labels of the same shape joined."""
    out = {}
    for c in cases:
        key = c[1:]
        out[key] = out[key]._replace(label=f"{out[key].label}+{c.label}") if key in out else c
    return list(out.values())


class MlpCase(NamedTuple):
    label: str
    C: int
    hidden: int
    side: int
    layer_norm: bool  # SelfAttn's x + mlp(norm2(x)); without: LocalAgg's x + mlp(x), BN folded

    @property
    def shape(self):
        ln = " LN" if self.layer_norm else ""
        return f"C={self.C} hidden={self.hidden} {self.side}x{self.side}{ln}"


class PatchEmbedCase(NamedTuple):
    label: str
    Cin: int
    Cout: int
    patch: int
    side: int  # input side

    @property
    def shape(self):
        return f"{self.Cin}->{self.Cout} p={self.patch} {self.side}x{self.side}"


class DwconvCase(NamedTuple):
    label: str
    C: int
    side: int
    k: int
    residual: bool  # pos_embed: x + conv3x3(x); LocalAgg.attn: conv5x5(u)

    @property
    def shape(self):
        return f"C={self.C} {self.side}x{self.side} k={self.k}" + (" +x" if self.residual else "")


class LinearCase(NamedTuple):
    label: str
    C: int
    side: int
    residual: bool  # LocalAgg conv1 (norm1 folded in): no residual; conv2: x + conv2(u)

    @property
    def shape(self):
        return f"{self.C}->{self.C} {self.side}x{self.side}" + (" +res" if self.residual else "")


def mlp_cases():
    cases = []
    for label, i, _, C in _stages():
        if SR_RATIOS[i] > 1:
            cases.append(MlpCase(f"{label} agg", C, MLP_RATIO * C, SIDES[i], False))
        cases.append(MlpCase(f"{label} attn", C, MLP_RATIO * C, SIDES[i], True))
    return _dedup(cases)


def patch_embed_cases():
    cases = []
    for label, i, widths, C in _stages():
        Cin, side = (3, IMAGE) if i == 0 else (widths[i - 1], SIDES[i - 1])
        cases.append(PatchEmbedCase(label, Cin, C, PATCH[i], side))
    return _dedup(cases)


def dwconv_cases():
    cases = []
    for label, i, _, C in _stages():
        if SR_RATIOS[i] > 1:
            cases.append(DwconvCase(f"{label} agg", C, SIDES[i], 5, False))
        cases.append(DwconvCase(f"{label} pos", C, SIDES[i], 3, True))
    return _dedup(cases)


def linear_cases():
    cases = []
    for label, i, _, C in _stages():
        if SR_RATIOS[i] > 1:
            cases.append(LinearCase(f"{label} conv1", C, SIDES[i], False))
            cases.append(LinearCase(f"{label} conv2", C, SIDES[i], True))
    return _dedup(cases)


def case_id(case) -> str:
    return case.label.replace(" ", "_")


def rnd(g: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _cpuinfo_field(name: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":", 1)[1].strip() for l in f
                         if l.split(":")[0].strip() == name), None)
    except OSError:
        return None


def _amd_core(family: int, model: int) -> Optional[str]:
    if family == 23:
        return "zen2" if model >= 0x30 else "zen"
    if family == 25:
        zen4 = 0x10 <= model < 0x20 or 0x60 <= model < 0x80 or 0xA0 <= model < 0xB0
        return "zen4" if zen4 else "zen3"
    if family == 26:
        return "zen5"
    return None


def machine_slug() -> str:
    """A short name of this CPU for results/<slug>/: vendor and line, AMD core generation from
    the family and model, and the CPU count (e.g. amd-epyc-zen4-2vcpu)."""
    words = re.sub(r"\(.*?\)|processor|cpu|@.*", " ", cpu_model(), flags=re.I).lower().split()
    name = "-".join(re.sub(r"[^a-z0-9]", "", w) for w in words[:2] if re.sub(r"[^a-z0-9]", "", w))
    try:
        family, model = int(_cpuinfo_field("cpu family")), int(_cpuinfo_field("model"))
    except (TypeError, ValueError):
        family = model = -1
    core = _amd_core(family, model) if _cpuinfo_field("vendor_id") == "AuthenticAMD" else None
    return "-".join(p for p in (name or platform.machine(), core, f"{os.cpu_count()}vcpu") if p)


@functools.lru_cache(maxsize=None)
def machine_info() -> dict:
    return dict(cpu=cpu_model(), machine=machine_slug(), isa=edgevit_kernels.cpu_isa(),
                cpu_info=edgevit_kernels.cpu_info(), threads=torch.get_num_threads(),
                torch=torch.__version__)


# ----------------------------------------------------------------------------- timing


class CacheEvictor:
    """Reads and writes 2 x (threads x L2 + L3) bytes: the next call finds nothing of its own in
    any cache. Read-modify-write (``add_``) rather than a fill, which may use non-temporal stores
    that bypass the caches. ~2.5 ms for 68 MB on a 2-vCPU Zen 4; never inside a timed region."""

    def __init__(self):
        info = edgevit_kernels.cpu_info()
        l2 = info.get("l2") or 1 << 20
        l3 = info.get("l3") or 32 << 20
        self.nbytes = 2 * (torch.get_num_threads() * l2 + l3)
        self.buf = torch.zeros(self.nbytes // 4)

    def __call__(self):
        self.buf.add_(1.0)


@functools.lru_cache(maxsize=None)
def evictor() -> CacheEvictor:
    return CacheEvictor()


_CANARY = []


def canary_ms() -> float:
    """One ATen parallel add over 1 MB, in ms: ~0.03 on a quiet 2-vCPU machine, milliseconds
    while another process holds a core (its OpenMP barrier waits for a timeslice of the thread on
    that core). ATen's references run on the same OpenMP threads and are held up alike; the
    edgevit ops' pool is built not to be (csrc/cpu/thread_pool.h). Recorded before and after
    each benchmark, so the render can mark the rows measured under such contention."""
    if not _CANARY:
        _CANARY[:] = [torch.randn(1 << 18), torch.empty(1 << 18)]
    a, out = _CANARY
    t0 = time.perf_counter()
    torch.add(a, 1.0, out=out)
    return (time.perf_counter() - t0) * 1e3


def check_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL * scale)


def _cold_rounds(config, fn: Callable, evict: CacheEvictor) -> int:
    """As many evict + call rounds as fit --benchmark-max-time (at least --benchmark-min-rounds),
    so the cold mode follows the same knobs as the hot one."""
    min_rounds = config.getoption("benchmark_min_rounds")
    max_time = float(config.getoption("benchmark_max_time"))
    t0 = time.perf_counter()
    for _ in range(2):
        evict()
        fn()
    per_round = (time.perf_counter() - t0) / 2
    return max(min_rounds, min(2000, int(max_time / per_round)))


def run(benchmark, request, *, op: str, case, B: int, contender: str, mode: str,
        fn: Callable[[], torch.Tensor], reference: Callable[[], torch.Tensor]) -> None:
    """Check ``fn`` against ``reference`` (unless it is the reference), then time it in ``mode``,
    in inference mode, with the machine, the case and the contention canary in extra_info."""
    benchmark.group = f"{op} {case.label} {case.shape} B={B} {mode}"
    benchmark.extra_info.update(
        op=op, case=case.label, shape=case.shape, B=B, contender=contender, mode=mode,
        loadavg=os.getloadavg(), **machine_info())
    with torch.inference_mode():
        before = canary_ms()
        if contender != "reference":
            check_close(fn(), reference())
        for _ in range(3):  # warm-up outside the timed rounds
            fn()
        if mode == "hot":
            benchmark(fn)
        else:
            evict = evictor()
            benchmark.extra_info["evict_bytes"] = evict.nbytes
            rounds = 1 if benchmark.disabled else _cold_rounds(request.config, fn, evict)
            benchmark.pedantic(fn, setup=evict, rounds=rounds, warmup_rounds=1, iterations=1)
        benchmark.extra_info["canary_ms"] = (before, canary_ms())
