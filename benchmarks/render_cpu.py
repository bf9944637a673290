"""Render saved pytest-benchmark JSONs of test_bench_lgl_fused.py into <machine>/cpu.md + cpu.png.

    python benchmarks/render_cpu.py benchmarks/results/raw/cpu*.json --out benchmarks/results/<machine>
    EDGEVIT_CPU_ISA=avx2 runs: ... --out benchmarks/results/<machine> --name cpu_avx2

Per (stage, batch): median and IQR of each contender, the op's speedup over eager and
torch.compile, its time over the dense floor, achieved GFLOP/s (dense FLOPs / median), and the
targets checked on these numbers (stages with r > 1, B = 1 and 8: at least 4x over eager and
torch.compile, or at most 1.2x the floor; every shape at most 1.5x the floor). Given several
runs, each time cell comes from the run with the median median of that cell, and each ratio is
the median over runs of the ratio measured within one run (the contenders of a shape run back
to back).
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict


def load(paths):
    """Rows keyed by (stage, B): per contender the stats of the run with the median median
    (one run: that run's; three runs: the middle one), and per contender the list of its
    medians run by run (None where a run lacks it), so ratios can be taken within each run."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    per = defaultdict(lambda: defaultdict(list))
    by_run = defaultdict(lambda: defaultdict(lambda: [None] * len(runs)))
    info = {}
    for i, data in enumerate(runs):
        for b in data["benchmarks"]:
            e = b["extra_info"]
            key = (e["stage"], e["B"])
            info.setdefault(key, e)
            per[key][e["contender"]].append(b["stats"])
            by_run[key][e["contender"]][i] = b["stats"]["median"] * 1e3
    rows = defaultdict(dict)
    for key, contenders in per.items():
        rows[key]["info"] = info[key]
        rows[key]["by_run"] = by_run[key]
        for c, stats in contenders.items():
            stats = sorted(stats, key=lambda st: st["median"])
            rows[key][c] = stats[(len(stats) - 1) // 2]
    return runs[-1], rows, len(runs)


def run_ratio(by_run, num, den):
    """num / den measured side by side within each run, the median over runs (the lower
    middle one for an even count): this VM's speed drifts between runs, and a ratio of cells
    taken from different runs would mix machine states."""
    r = sorted(a / b for a, b in zip(by_run[num], by_run[den]) if a is not None and b is not None)
    return r[(len(r) - 1) // 2]


def targets(info, vs_eager, vs_compile, over_floor):
    """Every stage with r>1, B = 1 and 8: >=4x eager and compile, or <=1.2x floor; every shape:
    <= 1.5x floor."""
    ok = over_floor <= 1.5
    if info["r"] > 1:
        for v in (vs_eager, vs_compile):
            ok &= v >= 4.0 or over_floor <= 1.2
    return ok


def _caches(info) -> str:
    """What the kernels read of this CPU (``edgevit_kernels.cpu_info()``), when the run has it."""
    c = info.get("cpu_info")
    if not c:
        return ""
    return (f" (nr {c['nr']}), L1d {c['l1d'] >> 10} KiB / L2 {c['l2'] >> 10} KiB / "
            f"L3 {c['l3'] >> 20} MiB ({c['cache_source']}), pool of {c['threads']} threads")


OPS = ("lgl_fused", "prepared")  # the op, weights prepared per call / once


def main():
    p = argparse.ArgumentParser()
    p.add_argument("json", nargs="+", help="one or more runs of the suite (median run per cell)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--name", default="cpu", help="file stem: <out>/<name>.md and <name>.png")
    args = p.parse_args()
    data, rows, nruns = load(args.json)
    first = next(r["info"] for r in rows.values() if r["info"]["contender"] != "scalar")
    mi = data.get("machine_info", {})
    lines = [
        "# lgl_fused on CPU: latency against eager, torch.compile and the dense floor",
        "",
        f"Measured {data.get('datetime', '')[:19]} on **{first['cpu']}**, {first['threads']} threads, "
        f"ISA `{first['isa']}`{_caches(first)}, torch {first['torch']}, Python {mi.get('python_version', '?')}; fp32, "
        "inference mode, the contenders of each shape back to back in one pytest-benchmark run "
        "(`benchmarks/test_bench_lgl_fused.py`, rendered by `benchmarks/render_cpu.py`)"
        + (f"; {nruns} runs. Each time is the run with the median median; each ratio (speedups, "
           "over floor, and the targets checked on them) is the median over the runs of that ratio "
           "measured within one run, where the contenders of a shape ran back to back seconds "
           "apart (this VM's speed drifts between runs, so a ratio of times from different runs "
           "would mix machine states)." if nruns > 1 else "."),
        "",
        "Times are medians in ms (IQR in brackets). *floor* = plain `torch.mm`/`torch.bmm` for the op's "
        "four dense products only. *lgl_fused* as users call it, with the same weights on every "
        "call: after the first call the prepared (packed and folded) weights come from its weight "
        "cache, found by a byte comparison of the weights that every call makes. *uncached* = "
        "lgl_fused with the cache off (`EDGEVIT_WEIGHT_CACHE_MB=0`), preparing the weights on every "
        "call (its time over the floor in brackets; no target). *prepared* = `lgl_fused_prepared` "
        "with weights prepared once by `lgl_prepare`, which is how the fused model runs in eval mode. "
        "Speedups and GFLOP/s are given as lgl_fused / prepared. GFLOP/s = dense FLOPs / median. "
        "XS and S share all stage shapes.",
        "",
        "| stage | B | eager | compile | floor | lgl_fused | uncached | prepared | vs eager | vs compile "
        "| over floor | GFLOP/s (floor) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    chart = []
    worst = {op: {"eager": None, "compile": None, "floor": None} for op in OPS}
    scalar_rows = []
    for (stage, B), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        info = r["info"]
        med = {c: r[c]["median"] * 1e3 for c in ("eager", "compile", "floor") + OPS + ("uncached", "scalar") if c in r}
        iqr = {c: r[c]["iqr"] * 1e3 for c in med}
        if not all(c in med for c in ("eager", "compile", "floor") + OPS):
            continue
        br = r["by_run"]
        ve = {op: run_ratio(br, "eager", op) for op in OPS}
        vc = {op: run_ratio(br, "compile", op) for op in OPS}
        vf = {op: run_ratio(br, op, "floor") for op in OPS}
        gf = {op: info["flops"] / (med[op] * 1e-3) / 1e9 for op in OPS}
        gfl = info["flops"] / (med["floor"] * 1e-3) / 1e9
        ok = {op: targets(info, ve[op], vc[op], vf[op]) for op in OPS}
        cell = lambda c: f"{med[c]:.3f} ({iqr[c]:.3f})"
        unc = f"{med['uncached']:.3f} ({run_ratio(br, 'uncached', 'floor'):.2f})" if "uncached" in med else "-"
        both = lambda d, fmt: " / ".join(fmt.format(d[op]) for op in OPS)
        lines.append(
            f"| {stage} | {B} | {cell('eager')} | {cell('compile')} | {cell('floor')} | "
            f"{cell('lgl_fused')} | {unc} | {cell('prepared')} | {both(ve, '{:.2f}x')} | {both(vc, '{:.2f}x')} | "
            f"{both(vf, '{:.2f}')} | {both(gf, '{:.0f}')} ({gfl:.0f}) | "
            f"{' / '.join('met' if ok[op] else 'MISSED' for op in OPS)} |")
        chart.append((f"{stage} B={B}", med))
        for op in OPS:
            w = worst[op]
            if info["r"] > 1:
                w["eager"] = min(ve[op], w["eager"] or ve[op])
                w["compile"] = min(vc[op], w["compile"] or vc[op])
            w["floor"] = max(vf[op], w["floor"] or vf[op])
        if "scalar" in med:
            # The scalar gemm's rate on the op's largest product, and what 1.5x eager would take
            # against the op's dense FLOPs at that rate (need / bound, within each run).
            rate = bound = reach = None
            if "scalar_gemm" in r:
                rate = info["proj_flops"] / (r["scalar_gemm"]["median"] * 1e9)
                bound = info["flops"] / (rate * 1e9) * 1e3
                reach = run_ratio(br, "eager", "scalar_gemm") / 1.5 * info["proj_flops"] / info["flops"]
            scalar_rows.append((stage, med["eager"], med["scalar"], iqr["scalar"],
                                run_ratio(br, "eager", "scalar"), rate, bound, reach))
    lines.append("")
    for op in OPS:
        w = worst[op]
        lines.append(
            f"- {op}: slowest speedup on stages with r>1 (B = 1 and 8): {w['eager']:.2f}x over eager, "
            f"{w['compile']:.2f}x over torch.compile; worst time over the floor: {w['floor']:.2f}.")
    if scalar_rows:
        lines += [
            "",
            "Forced scalar variant (`EDGEVIT_CPU_ISA=scalar`, `lgl_fused`), B = 1, stages with r > 1; "
            "target: at least 1.5x faster than eager. The scalar variant is plain C++ built for the "
            "baseline ISA (SSE2 on x86-64: 4 lanes, no FMA), so its dense products have a ceiling: "
            "*scalar gemm* is the rate of its gemm on the op's largest product alone (the projection, "
            "[H*W, C] x [C, C]^T, weights packed once, `linear_fused_prepared` under "
            "`EDGEVIT_CPU_ISA=scalar`, same run), *bound* the op's dense FLOPs at that rate: about "
            "the least the forced-scalar op can take (its other products have fewer rows or "
            "K = head_dim, and run no faster). *1.5x eager / bound* < 1 (median over runs of the ratio "
            "within each run) means that 1.5x eager would take less time than the bound.",
            "",
            "| stage | eager | lgl_fused scalar | vs eager | scalar gemm GFLOP/s | bound | "
            "1.5x eager / bound | target |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for stage, eager, sc, sc_iqr, v, rate, bound, reach in scalar_rows:
            verdict = "met" if v >= 1.5 else "MISSED"
            if v < 1.5 and reach is not None and reach < 1:
                verdict += " (below the bound)"
            num = lambda x, fmt: "-" if x is None else fmt.format(x)
            lines.append(f"| {stage} | {eager:.3f} | {sc:.3f} ({sc_iqr:.3f}) | {v:.2f}x | "
                         f"{num(rate, '{:.1f}')} | {num(bound, '{:.3f}')} | {num(reach, '{:.2f}')} | "
                         f"{verdict} |")
    lines += ["", f"![latency chart]({args.name}.png)", ""]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as fh:
        fh.write("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: {args.name}.md written, no chart")
        return
    fig, ax = plt.subplots(figsize=(13, 5))
    width = 0.16
    for i, c in enumerate(("eager", "compile", "floor") + OPS):
        ax.bar([j + i * width for j in range(len(chart))], [m[c] for _, m in chart], width, label=c)
    ax.set_xticks([j + 2 * width for j in range(len(chart))], [n for n, _ in chart], rotation=45, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("median latency, ms (log)")
    ax.set_title(f"lgl_fused on {first['cpu']} ({first['threads']} threads, {first['isa']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"{args.name}.png"), dpi=110)
    print(f"wrote {os.path.join(args.out, args.name + '.md')} and {args.name}.png")


if __name__ == "__main__":
    main()
