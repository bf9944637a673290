"""CPU latency of edgevit::mlp_fused and mlp_fused_prepared against mlp_reference (eager), at
every EdgeViT MLP shape, hot and cold, side by side in one run.

    python -m pytest benchmarks/test_bench_mlp_fused.py --benchmark-json=benchmarks/results/raw/ops.json
    python benchmarks/render_ops.py benchmarks/results/raw/ops.json

Both residual forms of the plan (python/edgevit/inference.py): *attn*, SelfAttn's
x + mlp(norm2(x)) on [B, H*W, C] with the LayerNorm (eps 1e-6) in the op; *agg*, LocalAgg's
x + mlp(x) on the [B, H, W, C] view, its BatchNorm folded into fc1 (stages 1-3). *op* prepares
(packs) the weights on every call; *prepared* takes them from mlp_prepare, as the plan does.
Shapes, modes, tolerance: op_bench_common.py.
"""
from __future__ import annotations

import pytest
import torch

from edgevit_kernels import mlp_reference
from op_bench_common import BATCHES, MODES, case_id, mlp_cases, rnd, run

CASES = mlp_cases()
CONTENDERS = ("reference", "op", "prepared")
EPS = 1e-6  # SelfAttn's norm2 (LayerNorm(eps=1e-6)); unused without layer_norm


def make(case, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    C, hidden, N = case.C, case.hidden, case.side * case.side
    x = rnd(g, B, case.side, case.side, C) if not case.layer_norm else rnd(g, B, N, C)
    w = (rnd(g, hidden, C, scale=C ** -0.5), rnd(g, hidden, scale=0.1),
         rnd(g, C, hidden, scale=hidden ** -0.5), rnd(g, C, scale=0.1), case.layer_norm,
         1 + rnd(g, C, scale=0.1) if case.layer_norm else None,
         rnd(g, C, scale=0.1) if case.layer_norm else None)
    return x, w


# The decorator nearest the function varies slowest: the six (mode, contender) runs of one
# (shape, B) are back to back and share the machine's state of that moment.
@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_mlp_fused_cpu(benchmark, request, case, B, mode, contender):
    x, w = make(case, B)
    ops = torch.ops.edgevit
    if contender == "prepared":
        prepared = ops.mlp_prepare(*w)
        fn = lambda: ops.mlp_fused_prepared(x, prepared, EPS, True)
    elif contender == "op":
        fn = lambda: ops.mlp_fused(x, *w, EPS, True)
    else:
        fn = lambda: mlp_reference(x, *w, EPS, True)
    run(benchmark, request, op="mlp_fused", case=case, B=B, contender=contender, mode=mode,
        fn=fn, reference=lambda: mlp_reference(x, *w, EPS, True))
