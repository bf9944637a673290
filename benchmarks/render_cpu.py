"""Render a saved pytest-benchmark JSON of test_bench_lgl_fused.py into results/cpu.md + cpu.png.

    python benchmarks/render_cpu.py benchmarks/results/cpu.json [--out benchmarks/results]

Per (stage, batch): median and IQR of each contender, lgl_fused's speedup over eager and
torch.compile, its time over the dense floor, achieved GFLOP/s (dense FLOPs / median), and the
issue-3 targets checked on the numbers of this one run.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        key = (e["stage"], e["B"])
        rows[key]["info"] = e
        rows[key][e["contender"]] = b["stats"]
    return data, rows


def targets(info, eager, compile_, floor, fused):
    """Issue 3: B=1 & r>1: >=4x eager and compile unless that means < 1.2x floor (then <=1.2x floor);
    every shape: <= 1.5x floor."""
    ok = fused <= 1.5 * floor
    if info["B"] == 1 and info["r"] > 1:
        for base in (eager, compile_):
            ok &= base / fused >= 4.0 or fused <= 1.2 * floor
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("json")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args()
    data, rows = load(args.json)
    first = next(iter(rows.values()))["info"]
    mi = data.get("machine_info", {})
    lines = [
        "# lgl_fused on CPU: latency against eager, torch.compile and the dense floor",
        "",
        f"Measured {data.get('datetime', '')[:19]} on **{first['cpu']}**, {first['threads']} threads, "
        f"ISA `{first['isa']}`, torch {first['torch']}, Python {mi.get('python_version', '?')}; fp32, "
        "inference mode, all contenders side by side in one pytest-benchmark run "
        "(`benchmarks/test_bench_lgl_fused.py`, rendered by `benchmarks/render_cpu.py`).",
        "",
        "Times are medians in ms (IQR in brackets). *floor* = plain `torch.mm`/`torch.bmm` for the op's "
        "four dense products only. GFLOP/s = dense FLOPs / median. XS and S share all stage shapes.",
        "",
        "| stage | B | eager | compile | floor | lgl_fused | vs eager | vs compile | fused/floor | GFLOP/s fused (floor) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    chart = []
    worst = {"eager": None, "compile": None, "floor": None}
    for (stage, B), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        info = r["info"]
        med = {c: r[c]["median"] * 1e3 for c in ("eager", "compile", "floor", "lgl_fused") if c in r}
        iqr = {c: r[c]["iqr"] * 1e3 for c in med}
        if len(med) < 4:
            continue
        f = med["lgl_fused"]
        ve, vc, vf = med["eager"] / f, med["compile"] / f, f / med["floor"]
        gf = info["flops"] / (f * 1e-3) / 1e9
        gfl = info["flops"] / (med["floor"] * 1e-3) / 1e9
        ok = targets(info, med["eager"], med["compile"], med["floor"], f)
        cell = lambda c: f"{med[c]:.3f} ({iqr[c]:.3f})"
        lines.append(f"| {stage} | {B} | {cell('eager')} | {cell('compile')} | {cell('floor')} | "
                     f"{cell('lgl_fused')} | {ve:.2f}x | {vc:.2f}x | {vf:.2f} | {gf:.1f} ({gfl:.1f}) | "
                     f"{'met' if ok else 'MISSED'} |")
        chart.append((f"{stage} B={B}", med))
        if B == 1 and info["r"] > 1:
            worst["eager"] = min(ve, worst["eager"] or ve)
            worst["compile"] = min(vc, worst["compile"] or vc)
        worst["floor"] = max(vf, worst["floor"] or vf)
    lines += [
        "",
        f"Slowest speedup at B=1 on stages with r>1: {worst['eager']:.2f}x over eager, "
        f"{worst['compile']:.2f}x over torch.compile. Worst lgl_fused/floor ratio: {worst['floor']:.2f}.",
        "",
        "![latency chart](cpu.png)",
        "",
    ]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cpu.md"), "w") as fh:
        fh.write("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: cpu.md written, no chart")
        return
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.2
    for i, c in enumerate(("eager", "compile", "floor", "lgl_fused")):
        ax.bar([j + i * width for j in range(len(chart))], [m[c] for _, m in chart], width, label=c)
    ax.set_xticks([j + 1.5 * width for j in range(len(chart))], [n for n, _ in chart], rotation=45, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("median latency, ms (log)")
    ax.set_title(f"lgl_fused on {first['cpu']} ({first['threads']} threads, {first['isa']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "cpu.png"), dpi=110)
    print(f"wrote {os.path.join(args.out, 'cpu.md')} and cpu.png")


if __name__ == "__main__":
    main()
