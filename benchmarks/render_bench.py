"""Render ``edgevit-bench --json`` files into one markdown summary (results/<machine>/bench.md).

    edgevit-bench --baselines all --batch 1 --json benchmarks/results/raw/bench_b1.json
    edgevit-bench --baselines all --batch 8 --runs 10 --json benchmarks/results/raw/bench_b8.json
    edgevit-bench --variants xxs,xs,s --contention --baselines eager,fused,onnxruntime,openvino \
        --json benchmarks/results/raw/bench_busy.json
    python benchmarks/render_bench.py benchmarks/results/raw/bench_*.json --out benchmarks/results/<machine>

One table per file: the machine line (CPU, ISA, caches, tiles, versions) and matmul rate from the
file's header, then per (model, path) median and IQR, speedup over eager, fused's lead over each
runtime (median and range over rounds of the ratio within a round), GFLOP/s and share of the
matmul rate, Δ logits; with --contention, quiet and busy medians and the slowdown.
"""
import argparse
import json
import os

from edgevit_kernels.bench import machine_line


def table(data: dict) -> str:
    cfg, rows = data["config"], data["results"]
    busy = cfg.get("contention", False)
    m = data["machine"]
    out = [f"### B = {cfg['batch']}, {cfg['height']}x{cfg['width']}, {m['isa']} kernels"
           + (", one core busy" if busy else ""),
           "", ((f"Started {data['started']}; ") if "started" in data else "")
           + f"{machine_line(m)}; fp32 matmul rate {m['matmul_gflops']:.0f} GFLOP/s; "
           f"{cfg['runs']} runs per path in blocks of {cfg['block_runs']}, each path in its own process.",
           ""]
    head = "| model | path | median ms | IQR ms | vs eager | fused vs this | GFLOP/s | of matmul |"
    head += " busy ms | slowdown |" if busy else " max \\|Δ logits\\| |"
    out += [head, "|" + "---|" * (10 if busy else 9)]
    fused = {r["variant"]: r["median_ms"] for r in rows if r["path"] == "fused"}
    for r in rows:
        if "fused_lead" in r:  # within-round ratios; older files have only medians
            lead = f"{r['fused_lead']:.2f}x ({r['fused_lead_min']:.2f}–{r['fused_lead_max']:.2f})"
        elif r["path"] != "fused" and r["variant"] in fused:
            lead = f"{r['median_ms'] / fused[r['variant']]:.2f}x"
        else:
            lead = ""
        line = (f"| {r['variant'].upper()} | {r['path']} | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} | "
                f"{r['speedup_vs_eager']:.2f}x | {lead} | {r['gflops']:.0f} | {100 * r['matmul_share']:.0f}% |")
        line += (f" {r['busy_median_ms']:.2f} | {r['slowdown']:.2f}x |" if busy
                 else f" {r['max_abs_diff']:.1e} |")
        out.append(line)
    notes = [n for n in data.get("notes", []) if "IQR" in n]
    if notes:
        out += ["", "Spread warnings: " + "; ".join(notes)]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True, help="results/<machine> folder")
    p.add_argument("--title", default="edgevit-bench")
    args = p.parse_args()
    parts = [f"# {args.title}", ""]
    for f in args.files:
        with open(f) as fh:
            parts += [table(json.load(fh)), ""]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench.md")
    with open(path, "w") as fh:
        fh.write("\n".join(parts))
    print(path)


if __name__ == "__main__":
    main()
