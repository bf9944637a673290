"""torch.compile of the fused model vs the fused model (and compile of the unfused one).

One process per path, all alive at once, each with its model built (seed 0, eval, 224x224) and
compiled and warmed up at every batch size:

* ``fused``            ``use_fused=True``, no compile (the inference plan);
* ``compile-fused``    ``torch.compile(fused model, dynamic=False)``;
* ``compile-unfused``  ``torch.compile(unfused model, dynamic=False)`` (``--no-unfused``: skip).

Then the driver interleaves them: per round, each process in turn (the order alternates) times
``--calls`` calls of ``model(x)`` under ``torch.inference_mode()`` and reports their median;
the ratio compile-fused / fused is taken within each round. On a VM shared with other jobs the
speed drifts by 2x within seconds, so only ratios of neighbouring measurements mean anything.
Prints a markdown table: each path's median over rounds, the median and range of the per-round
ratios, and max |logits - unfused eager| of fused and compile-fused.

    python benchmarks/compile_vs_fused.py --rounds 15
"""
import argparse
import json
import statistics
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import json, statistics, sys, time
    import torch
    import edgevit, edgevit_kernels
    path, name, batches, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ref = getattr(edgevit, "edgevit_" + name)().eval()
    model = getattr(edgevit, "edgevit_" + name)(use_fused=path != "compile-unfused").eval()
    model.load_state_dict(ref.state_dict())
    run = model if path == "fused" else torch.compile(model, dynamic=False)
    xs, info = {}, {}
    with torch.inference_mode():
        for batch in map(int, batches.split(",")):
            x = xs[batch] = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
            t = time.perf_counter()
            y = run(x)
            info[batch] = dict(setup_s=time.perf_counter() - t, err=(y - ref(x)).abs().max().item())
            for _ in range(3):
                run(x)
    print(json.dumps(dict(info=info, isa=edgevit_kernels.cpu_isa(), torch=torch.__version__)), flush=True)
    for line in sys.stdin:  # "<batch> <calls>": time that many calls, reply with their median
        batch, calls = map(int, line.split())
        times = []
        with torch.inference_mode():
            for _ in range(calls):
                t = time.perf_counter()
                run(xs[batch])
                times.append(time.perf_counter() - t)
        print(1e3 * statistics.median(times), flush=True)
""")


class Worker:
    def __init__(self, path, name, batches, threads):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, path, name, ",".join(map(str, batches)), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.path = path

    def ready(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.path}: worker failed")
        res = json.loads(line)
        res["info"] = {int(b): v for b, v in res["info"].items()}
        return res

    def time(self, batch, calls) -> float:
        self.proc.stdin.write(f"{batch} {calls}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["xxs", "xs", "s"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=5, help="calls per round at B=1 (2 at B > 1)")
    p.add_argument("--no-unfused", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    paths = ["fused", "compile-fused"] + ([] if args.no_unfused else ["compile-unfused"])
    header, rows = None, []
    for name in args.models:
        # Started one after another: compiling in parallel would only slow each compile.
        workers, info = {}, {}
        for path in paths:
            workers[path] = Worker(path, name, args.batches, args.threads)
            res = workers[path].ready()
            header, info[path] = header or res, res["info"]
        for b in args.batches:
            calls = args.calls if b == 1 else 2
            ms = {path: [] for path in paths}
            for r in range(args.rounds):
                for path in (paths if r % 2 == 0 else paths[::-1]):
                    ms[path].append(workers[path].time(b, calls))
            rs = [c / f for c, f in zip(ms["compile-fused"], ms["fused"])]
            med = {path: statistics.median(ms.get(path) or [float("nan")])
                   for path in ("fused", "compile-fused", "compile-unfused")}
            rows.append(f"| {name.upper()} | {b} | {med['fused']:.2f} | {med['compile-fused']:.2f} | "
                        f"{med['compile-unfused']:.2f} | {statistics.median(rs):.3f} "
                        f"({min(rs):.3f}-{max(rs):.3f}) | {info['fused'][b]['err']:.1e} | "
                        f"{info['compile-fused'][b]['err']:.1e} |")
            print(rows[-1], file=sys.stderr, flush=True)
        for w in workers.values():
            w.close()
    print(f"torch {header['torch']}, ISA {header['isa']}, {args.threads} threads, "
          f"{args.rounds} rounds of {args.calls} calls (B = 1) / 2 calls (B > 1)\n")
    print("| model | B | fused ms | compile(fused) ms | compile(unfused) ms | compile(fused) / fused "
          "(median, range over rounds) | fused max Δ | compile(fused) max Δ |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
