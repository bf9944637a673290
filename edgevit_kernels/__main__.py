"""The main job: ``edgevit-bench`` / ``python -m edgevit_kernels``.

    python -m edgevit_kernels [--variants xxs,xs,s] [--batch 1] [--resolution 224 [224]]
                              [--threads N] [--runs 30] [--baselines eager,fused,compile,onnxruntime|all]
                              [--chart edgevit_bench.png] [--json PATH]

Random weights (nothing is downloaded), eval mode, fp32. Times the eager reference, use_fused=True,
torch.compile of the reference (opt-in) and ONNX Runtime on the exported reference (when installed);
prints median latency, IQR, speedup over eager, max |logit difference| and top-1 agreement against
eager, and draws a chart. The implementation is edgevit_kernels/bench.py.
"""
from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    from .bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
