"""The main job: run reference EdgeViT models with and without ``use_fused`` and compare.

    python -m edgevit_kernels [--variants xxs,xs,s] [--batch 1] [--resolution 224] [--threads N]
                              [--runs 30] [--baselines eager,fused,compile]

Random weights (nothing is downloaded), eval mode, fp32. Prints median latency, spread
(interquartile range), speedup over eager and the max |logit difference| against eager.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

BASELINES = ("eager", "fused", "compile")


def _time(fn, x, runs: int, warmup: int = 3) -> list[float]:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    import edgevit
    import edgevit_kernels

    p = argparse.ArgumentParser(prog="edgevit-bench", description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="xxs,xs,s", help="comma list of xxs, xs, s")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--resolution", type=int, nargs="+", default=[224], help="H [W]")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--baselines", default="eager,fused", help=f"comma list of {', '.join(BASELINES)}")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    H = args.resolution[0]
    W = args.resolution[-1]
    baselines = [b for b in args.baselines.split(",") if b]
    for b in baselines:
        if b not in BASELINES:
            p.error(f"--baselines: unknown {b!r}; choose from {', '.join(BASELINES)}")
    print(f"# {_cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
          f"ISA {edgevit_kernels.cpu_isa()}, B={args.batch}, {H}x{W}, fp32, median of {args.runs}")
    print(f"{'model':6} {'path':8} {'median ms':>10} {'IQR ms':>8} {'speedup':>8} {'max|dlogit|':>12}")
    for name in args.variants.split(","):
        torch.manual_seed(0)
        model = getattr(edgevit, f"edgevit_{name}")().eval()
        x = torch.randn(args.batch, 3, H, W)
        with torch.inference_mode():
            ref = model.set_fused(False)(x)
        eager_ms = None
        for path in baselines:
            if path == "eager":
                fn = model.set_fused(False)
            elif path == "fused":
                fn = model.set_fused(True)
            else:
                fn = torch.compile(model.set_fused(False))
            times = _time(fn, x, args.runs)
            with torch.inference_mode():
                diff = (fn(x) - ref).abs().max().item()
            q = statistics.quantiles(times, n=4)
            med = statistics.median(times)
            eager_ms = med if path == "eager" else eager_ms
            speedup = f"{eager_ms / med:7.2f}x" if eager_ms else "      -"
            print(f"{name:6} {path:8} {med:10.2f} {q[2] - q[0]:8.2f} {speedup:>8} {diff:12.2e}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
