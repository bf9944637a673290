"""Render a saved pytest-benchmark JSON of test_bench_model.py into results/model.md + model.png.

    python benchmarks/render_model.py benchmarks/results/raw/model[123].json --out benchmarks/results/<machine>

Per (variant, batch): median and IQR of eager, fused (use_fused=True), torch.compile and ONNX
Runtime; fused's speedup over eager, compile and ORT; and the issue-5 targets checked on the
numbers of this one run:

* B = 1: fused >= 2.5x faster than eager, and >= 1.2x faster than ONNX Runtime;
* B = 8: fused at least as fast as ONNX Runtime.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

PATHS = ("eager", "fused", "compile", "onnxruntime")
ORDER = {"xxs": 0, "xs": 1, "s": 2}


def load(paths):
    """Rows keyed by (variant, B): per path the stats of the run with the median median (one
    run: that run's; three runs: the middle one), as render_cpu.py does, so a burst of load on
    this shared VM during one run does not decide a ratio."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    per = defaultdict(lambda: defaultdict(list))
    rows = defaultdict(dict)
    for data in runs:
        for b in data["benchmarks"]:
            e = b["extra_info"]
            key = (e["variant"], e["B"])
            rows[key].setdefault("info", e)
            per[key][e["path"]].append(
                {"median": b["stats"]["median"] * 1e3, "iqr": b["stats"]["iqr"] * 1e3,
                 "rounds": b["stats"]["rounds"], "diff": e.get("max_abs_diff")})
    for key, paths_ in per.items():
        for path, cells in paths_.items():
            cells = sorted(cells, key=lambda c: c["median"])
            rows[key][path] = cells[(len(cells) - 1) // 2]
    return runs[-1], rows, len(runs)


def targets(B, med):
    """[(text, met or None if not measurable)] for the issue-5 targets of this row."""
    f, e, o = med.get("fused"), med.get("eager"), med.get("onnxruntime")
    out = []
    if B == 1:
        out.append(("fused >= 2.5x eager", None if f is None or e is None else e / f >= 2.5))
        out.append(("fused >= 1.2x ORT", None if f is None or o is None else o / f >= 1.2))
    elif B == 8:
        out.append(("fused <= ORT", None if f is None or o is None else f <= o))
    return out


def _verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="one or more runs of the suite (median run per cell)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    data, rows, nruns = load(args.json)
    if not rows:
        raise SystemExit(f"{args.json}: no benchmarks of test_bench_model.py in them")
    first = next(iter(rows.values()))["info"]
    mi = data.get("machine_info", {})
    ort = first.get("onnxruntime") or "not installed"
    lines = [
        "# EdgeViT model latency on CPU: eager vs use_fused=True vs torch.compile vs ONNX Runtime",
        "",
        f"Measured {data.get('datetime', '')[:19]} on **{first['cpu']}**, {first['threads']} threads, "
        f"ISA `{first['isa']}`, torch {first['torch']}, onnxruntime {ort}, "
        f"Python {mi.get('python_version', '?')}; random weights, eval mode, fp32, inference mode, "
        f"{first['H']}x{first['W']}; all paths side by side in one pytest-benchmark run "
        "(`benchmarks/test_bench_model.py`, rendered by `benchmarks/render_model.py`)"
        + (f"; {nruns} runs, each cell from the run with the median median (this VM's speed "
           "drifts between runs)." if nruns > 1 else "."),
        "",
        "Paths: *eager* = the reference model (`use_fused=False`); *fused* = the same weights with "
        "`use_fused=True`; *compile* = `torch.compile` of the reference; *ORT* = the reference "
        "exported with `torch.onnx.export` and run by ONNX Runtime (CPUExecutionProvider, "
        "intra-op threads = torch threads, all graph optimisations). Times are medians in ms "
        "(IQR in brackets). Every path's logits were checked against eager (max |diff| <= 1e-3) "
        "before timing.",
        "",
        "Issue-5 targets: B = 1: fused >= 2.5x faster than eager and >= 1.2x faster than ORT; "
        "B = 8: fused at least as fast as ORT.",
        "",
        "| model | B | eager | fused | compile | ORT | fused vs eager | fused vs compile | fused vs ORT "
        "| max \\|Δ logits\\| fused | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    chart = []
    summary = []
    for (variant, B), r in sorted(rows.items(), key=lambda kv: (kv[0][1], ORDER.get(kv[0][0], 9))):
        med = {c: r[c]["median"] for c in PATHS if c in r}
        cell = lambda c: f"{r[c]['median']:.2f} ({r[c]['iqr']:.2f})" if c in r else "–"
        f = med.get("fused")
        ratio = lambda c: f"{med[c] / f:.2f}x" if f and c in med else "–"
        t = targets(B, med)
        tcell = "; ".join(f"{name}: **{_verdict(ok)}**" for name, ok in t) or "–"
        summary += [ok for _, ok in t]
        diff = r.get("fused", {}).get("diff")
        lines.append(f"| EdgeViT-{variant.upper()} | {B} | {cell('eager')} | {cell('fused')} | "
                     f"{cell('compile')} | {cell('onnxruntime')} | {ratio('eager')} | "
                     f"{ratio('compile')} | {ratio('onnxruntime')} | "
                     f"{'–' if diff is None else f'{diff:.1e}'} | {tcell} |")
        chart.append((variant, B, med))
    met = sum(1 for ok in summary if ok)
    missed = sum(1 for ok in summary if ok is False)
    na = sum(1 for ok in summary if ok is None)
    lines += [
        "",
        f"Targets: {met} met, {missed} MISSED" + (f", {na} not measurable (path missing)" if na else "")
        + ". Speedups are ratios of medians (> 1: fused is faster).",
        "",
        "![latency chart](model.png)",
        "",
    ]
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "model.md")
    with open(md, "w") as fh:
        fh.write("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: {md} written, no chart")
        return 0
    batches = sorted({B for _, B, _ in chart})
    fig, axes = plt.subplots(1, len(batches), figsize=(max(8, 6 * len(batches)), 5), squeeze=False)
    paths = [c for c in PATHS if any(c in m for _, _, m in chart)]
    width = 0.8 / len(paths)
    for ax, B in zip(axes[0], batches):
        group = [(v, m) for v, b, m in chart if b == B]
        for i, c in enumerate(paths):
            xs = [j + (i - (len(paths) - 1) / 2) * width for j, (_, m) in enumerate(group) if c in m]
            ys = [m[c] for _, m in group if c in m]
            bars = ax.bar(xs, ys, width, label="ORT" if c == "onnxruntime" else c)
            if c == "fused":
                ax.bar_label(bars, labels=[f"{m['eager'] / m['fused']:.2f}x" if "eager" in m else ""
                                           for _, m in group if c in m], fontsize=7, padding=2)
        ax.set_xticks(range(len(group)), [f"EdgeViT-{v.upper()}" for v, _ in group])
        ax.set_ylabel("median latency, ms")
        ax.set_title(f"B = {B} (label: fused speedup over eager)", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"EdgeViT {first['H']}x{first['W']} fp32, random weights\n{first['cpu']} ({first['threads']} threads, "
                 f"{first['isa']}), torch {first['torch']}, ORT {ort}", fontsize=9)
    fig.tight_layout()
    png = os.path.join(args.out, "model.png")
    fig.savefig(png, dpi=110)
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
