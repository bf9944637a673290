"""CPU latency of edgevit::patch_embed and patch_embed_prepared against patch_embed_reference
(eager conv2d + LayerNorm), at the four EdgeViT patch embeddings, hot and cold, side by side.

    python -m pytest benchmarks/test_bench_patch_embed.py --benchmark-json=benchmarks/results/raw/ops.json
    python benchmarks/render_ops.py benchmarks/results/raw/ops.json

Inputs as the plan passes them: the [B, 3, 224, 224] image (contiguous) to the first (p = 4),
the channels_last stage maps to the others (p = 2); LayerNorm eps 1e-5 (PatchEmbed's). *op*
re-lays out the weight on every call; *prepared* takes it from patch_embed_prepare, as the
plan does. Shapes, modes, tolerance: op_bench_common.py.
"""
from __future__ import annotations

import pytest
import torch

from edgevit_kernels import patch_embed_reference
from op_bench_common import BATCHES, MODES, case_id, patch_embed_cases, rnd, run

CASES = patch_embed_cases()
CONTENDERS = ("reference", "op", "prepared")
EPS = 1e-5


def make(case, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    Cin, Cout, p = case.Cin, case.Cout, case.patch
    x = rnd(g, B, Cin, case.side, case.side)
    if Cin != 3:
        x = x.contiguous(memory_format=torch.channels_last)
    w = (rnd(g, Cout, Cin, p, p, scale=(Cin * p * p) ** -0.5), rnd(g, Cout, scale=0.1))
    norm = (1 + rnd(g, Cout, scale=0.1), rnd(g, Cout, scale=0.1))
    return x, w, norm


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_patch_embed_cpu(benchmark, request, case, B, mode, contender):
    x, (w, b), (nw, nb) = make(case, B)
    ops = torch.ops.edgevit
    if contender == "prepared":
        prepared = ops.patch_embed_prepare(w, b)
        fn = lambda: ops.patch_embed_prepared(x, prepared, case.Cout, case.patch, True, nw, nb, EPS)
    elif contender == "op":
        fn = lambda: ops.patch_embed(x, w, b, True, nw, nb, EPS)
    else:
        fn = lambda: patch_embed_reference(x, w, b, True, nw, nb, EPS)
    run(benchmark, request, op="patch_embed", case=case, B=B, contender=contender, mode=mode,
        fn=fn, reference=lambda: patch_embed_reference(x, w, b, True, nw, nb, EPS))
