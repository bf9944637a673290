"""GPU timing of ``edgevit::lgl_fused``: eager reference vs torch.compile(reference) vs the Triton op.

One pytest-benchmark group per (stage shape, batch, dtype) so the three implementations sit
side by side; ``benchmarks/render_gpu.py`` turns the ``--benchmark-json`` output
(git-ignored ``benchmarks/results/raw/gpu.json``) into
``benchmarks/results/gpu.md``. Run via ``benchmarks/gpu_check.sh``.

Knobs (environment): BENCH_BATCHES="1,64,256", BENCH_DTYPES="bf16,fp32", BENCH_IMPLS=
"eager,compile,triton". fp32 runs with torch's default TF32 setting, which all three follow;
it is recorded in extra_info.
"""
import os

import pytest
import torch

pytest.importorskip("pytest_benchmark")
if not torch.cuda.is_available():
    pytest.skip("GPU benchmarks need CUDA", allow_module_level=True)
triton = pytest.importorskip("triton")

import edgevit_kernels  # noqa: E402  (schema, fake kernel, CUDA registration)
from edgevit_kernels.reference import lgl_reference  # noqa: E402

# EdgeViT stages at 224x224: (H=W, C, heads, r). XS and S share their stage shapes.
STAGES = {
    "XXS": [(56, 36, 1, 4), (28, 72, 2, 2), (14, 144, 4, 2), (7, 288, 8, 1)],
    "XS/S": [(56, 48, 1, 4), (28, 96, 2, 2), (14, 240, 5, 2), (7, 384, 8, 1)],
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _env_list(name, default):
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


BATCHES = [int(b) for b in _env_list("BENCH_BATCHES", "64,256,1")]
DTYPE_NAMES = _env_list("BENCH_DTYPES", "bf16,fp32")
IMPLS = _env_list("BENCH_IMPLS", "eager,compile,triton")


def _cases():
    # Target groups first (B=64 bf16, B=256 fp32) so a run cut short still has them.
    order = sorted(((b, d) for b in BATCHES for d in DTYPE_NAMES),
                   key=lambda bd: ((bd[0], bd[1]) != (64, "bf16"), (bd[0], bd[1]) != (256, "fp32")))
    for B, dname in order:
        for model, stages in STAGES.items():
            for si, stage in enumerate(stages, 1):
                for impl in IMPLS:
                    yield pytest.param(model, si, stage, B, dname, impl,
                                       id=f"{model}-s{si}-B{B}-{dname}-{impl}")


@pytest.fixture(scope="module", autouse=True)
def _autotune_on():
    # The op picks one fixed config under pytest; benchmarks must measure the tuned kernels.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEVIT_TRITON_AUTOTUNE", "1")
        mp.delenv("TRITON_INTERPRET", raising=False)
        yield


_INPUTS = {}


def _inputs(B, H, C, heads, r, dtype):
    key = (B, H, C, heads, r, dtype)
    if key not in _INPUTS:
        _INPUTS.clear()  # one group's tensors at a time (B=256 at 56x56 is ~150 MB per tensor)
        g = torch.Generator(device="cuda").manual_seed(0)

        def rnd(*shape, s=1.0):
            return (torch.randn(*shape, generator=g, device="cuda") * s).to(dtype)

        prop = r > 1
        _INPUTS[key] = (
            rnd(B, H * H, C), H, H, heads, r, (C // heads) ** -0.5,
            rnd(3 * C, C, s=C ** -0.5), rnd(3 * C, s=0.1),
            rnd(C, 1, r, r) if prop else None, rnd(C, s=0.1) if prop else None,
            (1 + rnd(C, s=0.1)) if prop else None, rnd(C, s=0.1) if prop else None,
            1e-5, rnd(C, C, s=C ** -0.5), rnd(C, s=0.1),
        )
    return _INPUTS[key]


def _impl(name):
    if name == "eager":
        return lgl_reference
    if name == "compile":
        # Static shapes, compiled afresh per group: the best torch.compile can do for this shape
        # and no guard-chain cost from earlier groups.
        torch._dynamo.reset()
        return torch.compile(lgl_reference, dynamic=False)
    if name == "triton":
        return torch.ops.edgevit.lgl_fused
    raise ValueError(name)


# Agreement with eager required before timing, relative to the output scale.
CHECK_TOL = {torch.float32: 2e-3, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("model,stage_idx,stage,B,dname,impl", list(_cases()))
def test_lgl_fused(benchmark, model, stage_idx, stage, B, dname, impl):
    H, C, heads, r = stage
    dtype = DTYPES[dname]
    args = _inputs(B, H, C, heads, r, dtype)
    fn = _impl(impl)

    with torch.no_grad():
        out = fn(*args)  # compiles / autotunes outside the timed region
        fn(*args)
        torch.cuda.synchronize()
        err = None
        if impl != "eager":
            ref = lgl_reference(*args)
            err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1)).item()
            assert err <= CHECK_TOL[dtype], f"{impl} disagrees with eager: scaled max error {err:.3g}"
            del ref
        del out

    benchmark.group = f"{model} stage {stage_idx}: C={C} heads={heads} r={r} {H}x{H} | B={B} | {dname}"
    benchmark.extra_info.update(
        model=model, stage=stage_idx, H=H, W=H, C=C, heads=heads, r=r, B=B, dtype=dname,
        impl=impl, max_scaled_err_vs_eager=err,
        gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
        cuda=torch.version.cuda, tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
    )

    def run():
        with torch.no_grad():
            fn(*args)
        torch.cuda.synchronize()

    benchmark(run)
