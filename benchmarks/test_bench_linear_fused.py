"""CPU latency of edgevit::linear_fused and linear_fused_prepared against linear_reference
(eager F.linear [+ residual]), at LocalAgg's 1x1 convolutions, hot and cold, side by side.

    python -m pytest benchmarks/test_bench_linear_fused.py --benchmark-json=benchmarks/results/raw/ops.json
    python benchmarks/render_ops.py benchmarks/results/raw/ops.json

The two the plan runs in each LocalAgg (stages 1-3), on the [B, H, W, C] view of the map:
*conv1* (norm1 folded in, no residual) and *conv2* (x + conv2(u)). *op* packs the weight on
every call; *prepared* takes it from linear_prepare, as the plan does. Shapes, modes,
tolerance: op_bench_common.py.
"""
from __future__ import annotations

import pytest
import torch

from edgevit_kernels import linear_reference
from op_bench_common import BATCHES, MODES, case_id, linear_cases, rnd, run

CASES = linear_cases()
CONTENDERS = ("reference", "op", "prepared")


def make(case, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    C, s = case.C, case.side
    x = rnd(g, B, s, s, C)
    w, b = rnd(g, C, C, scale=C ** -0.5), rnd(g, C, scale=0.1)
    return x, w, b, rnd(g, B, s, s, C) if case.residual else None


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_linear_fused_cpu(benchmark, request, case, B, mode, contender):
    x, w, b, res = make(case, B)
    ops = torch.ops.edgevit
    if contender == "prepared":
        prepared = ops.linear_prepare(w, b)
        fn = lambda: ops.linear_fused_prepared(x, prepared, case.C, res)
    elif contender == "op":
        fn = lambda: ops.linear_fused(x, w, b, res)
    else:
        fn = lambda: linear_reference(x, w, b, res)
    run(benchmark, request, op="linear_fused", case=case, B=B, contender=contender, mode=mode,
        fn=fn, reference=lambda: linear_reference(x, w, b, res))
