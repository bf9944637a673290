"""Fused-model latency of two checkouts of this package, interleaved on one machine.

Each checkout must have its extension built in place (``python setup.py build_ext --inplace``
or an editable install). For every (model, batch) and round, one process per checkout times
``model(x)`` with ``use_fused=True`` in eval mode under ``torch.inference_mode()``; the order of
the two alternates between rounds, and each round's ratio is taken within the round (the VM's
speed drifts between rounds far more than within one). Prints a markdown table: the median over
rounds of each tree's median latency, and the median and range of the per-round ratios.

    python benchmarks/compare_trees.py /path/to/old /path/to/new --rounds 5
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import json, statistics, sys, time
    import torch
    import edgevit, edgevit_kernels
    name, batch, calls, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(edgevit, "edgevit_" + name)(use_fused=True).eval()
    x = torch.randn(batch, 3, 224, 224)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(calls):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    print(json.dumps(dict(median_ms=1e3 * statistics.median(times), kernels=edgevit_kernels.__file__,
                          isa=edgevit_kernels.cpu_isa())))
""")


def run(tree, name, batch, calls, threads):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.join(tree, "python")]))
    out = subprocess.run([sys.executable, "-c", WORKER, name, str(batch), str(calls), str(threads)],
                         capture_output=True, text=True, env=env, check=True, cwd=tree)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if not res["kernels"].startswith(os.path.abspath(tree)):
        raise RuntimeError(f"{tree}: imported edgevit_kernels from {res['kernels']}")
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--models", nargs="+", default=["xxs", "xs", "s"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    trees = [os.path.abspath(args.old), os.path.abspath(args.new)]
    print(f"old = {trees[0]}\nnew = {trees[1]}\n")
    print("| model | B | old ms | new ms | new / old (median, range over rounds) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for batch in args.batches:
            calls = 30 if batch == 1 else 8
            ms = {t: [] for t in trees}
            ratios = []
            for r in range(args.rounds):
                order = trees if r % 2 == 0 else trees[::-1]
                got = {t: run(t, name, batch, calls, args.threads)["median_ms"] for t in order}
                for t in trees:
                    ms[t].append(got[t])
                ratios.append(got[trees[1]] / got[trees[0]])
            old, new = (statistics.median(ms[t]) for t in trees)
            print(f"| {name} | {batch} | {old:.2f} | {new:.2f} | {statistics.median(ratios):.3f} "
                  f"({min(ratios):.3f}-{max(ratios):.3f}) |", flush=True)


if __name__ == "__main__":
    main()
