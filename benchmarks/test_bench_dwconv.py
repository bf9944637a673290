"""CPU latency of edgevit::dwconv against dwconv_reference (eager depthwise conv2d [+ x]), at
every EdgeViT depthwise convolution, hot and cold, side by side in one run.

    python -m pytest benchmarks/test_bench_dwconv.py --benchmark-json=benchmarks/results/raw/ops.json
    python benchmarks/render_ops.py benchmarks/results/raw/ops.json

*pos*: the blocks' positional encoding x + conv3x3(x) (every stage); *agg*: LocalAgg's 5x5
aggregation without residual (stages 1-3). Inputs channels_last, as in the plan. dwconv has no
prepared form. Shapes, modes, tolerance: op_bench_common.py.
"""
from __future__ import annotations

import pytest
import torch

from edgevit_kernels import dwconv_reference
from op_bench_common import BATCHES, MODES, case_id, dwconv_cases, rnd, run

CASES = dwconv_cases()
CONTENDERS = ("reference", "op")


def make(case, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = rnd(g, B, case.C, case.side, case.side).contiguous(memory_format=torch.channels_last)
    w = rnd(g, case.C, 1, case.k, case.k, scale=1.0 / case.k)
    return x, w, rnd(g, case.C, scale=0.1)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_dwconv_cpu(benchmark, request, case, B, mode, contender):
    x, w, b = make(case, B)
    if contender == "op":
        fn = lambda: torch.ops.edgevit.dwconv(x, w, b, case.residual)
    else:
        fn = lambda: dwconv_reference(x, w, b, case.residual)
    run(benchmark, request, op="dwconv", case=case, B=B, contender=contender, mode=mode,
        fn=fn, reference=lambda: dwconv_reference(x, w, b, case.residual))
