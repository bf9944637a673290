"""Model-level latency of EdgeViT: eager vs use_fused=True vs torch.compile vs ONNX Runtime.

    python -m pytest benchmarks/test_bench_model.py --benchmark-min-rounds=20 --benchmark-max-time=2 \
        --benchmark-json=benchmarks/results/raw/model1.json   (three runs: model1..3.json)
    python benchmarks/render_model.py benchmarks/results/raw/model[123].json

The raw JSON goes to the git-ignored benchmarks/results/raw/ (conftest.py creates it); the
rendered .md and .png beside it are what the repository keeps.

One pytest-benchmark group per (variant, batch): XXS, XS and S at 224x224, B in {1, 8}, random
weights (``edgevit_kernels.bench.build_model``: O(1) logits), eval mode, fp32, inference mode, all
torch threads (ONNX Runtime gets as many intra-op threads, all graph optimisations,
CPUExecutionProvider, the reference exported with ``torch.onnx.export``). Before timing, every
non-eager path's logits are checked against eager (max |diff| <= 1e-3); compilation, export and
warm-up happen outside the timed rounds (their seconds are in ``extra_info["setup_s"]``).
The ``onnxruntime`` cases skip when onnxruntime is not installed.
"""
from __future__ import annotations

import pytest
import torch

import edgevit_kernels
from edgevit_kernels.bench import (ATOL, BASELINES, FALLBACK_MARK, build_model, cpu_model,
                                   make_runner, ort_version, prepare)

VARIANTS = ["xxs", "xs", "s"]
BATCHES = [1, 8]
RES = 224

_models: dict = {}
_refs: dict = {}


def _model(variant):
    if variant not in _models:
        _models[variant] = build_model(variant)
    return _models[variant]


def _input(B):
    return torch.randn(B, 3, RES, RES, generator=torch.Generator().manual_seed(42))


def _ref(variant, B):
    if (variant, B) not in _refs:
        with torch.inference_mode():
            _refs[(variant, B)] = _model(variant)(_input(B))
    return _refs[(variant, B)]


@pytest.mark.parametrize("path", BASELINES)
@pytest.mark.parametrize("B", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_model_latency(benchmark, variant, B, path):
    if path == "onnxruntime" and ort_version() is None:
        pytest.skip("onnxruntime is not installed (pip install onnxruntime)")
    threads = torch.get_num_threads()
    model, x = _model(variant), _input(B)
    runner = prepare(make_runner(path, model, x, threads), x)  # compiles / exports, first call
    assert FALLBACK_MARK not in runner.note, runner.note
    with torch.inference_mode():
        diff = (runner.fn(x).float() - _ref(variant, B)).abs().max().item()
        assert diff <= ATOL, f"{variant} B={B} {path}: max |d logits| {diff:.3e} > {ATOL}"
        for _ in range(2):  # warm-up outside the timed rounds
            runner.fn(x)
    benchmark.group = f"EdgeViT-{variant.upper()} {RES}x{RES} B={B}"
    benchmark.extra_info.update(
        path=path, variant=variant, B=B, H=RES, W=RES, threads=threads,
        torch=torch.__version__, onnxruntime=ort_version(), cpu=cpu_model(),
        isa=edgevit_kernels.cpu_isa(), max_abs_diff=diff, setup_s=runner.setup_s, note=runner.note,
    )
    with torch.inference_mode():
        benchmark(runner.fn, x)
