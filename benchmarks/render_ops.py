"""Render pytest-benchmark JSON of the per-op benchmarks (test_bench_mlp_fused.py,
test_bench_patch_embed.py, test_bench_dwconv.py, test_bench_linear_fused.py) into one markdown
summary, results/<machine>/ops.md.

    F="benchmarks/test_bench_mlp_fused.py benchmarks/test_bench_patch_embed.py
       benchmarks/test_bench_dwconv.py benchmarks/test_bench_linear_fused.py"
    python -m pytest $F --benchmark-json=benchmarks/results/raw/ops.json
    OMP_NUM_THREADS=1 python -m pytest $F --benchmark-json=benchmarks/results/raw/ops_1t.json
    python benchmarks/render_ops.py benchmarks/results/raw/ops.json benchmarks/results/raw/ops_1t.json

One section per thread count; in it, per op and (shape, B): median ms of the reference, the op
and its prepared form, hot and cold side by side, the speedups over the reference and each
contender's cold/hot ratio, and flags for rows measured under contention. Several runs (JSON
files) of one thread count: each time is the median over runs of the medians and each ratio
the median over runs of the ratio measured within one run (the contenders of a shape run back
to back).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections import defaultdict

OPS = ("mlp_fused", "patch_embed", "dwconv", "linear_fused")
CONTENDERS = ("reference", "op", "prepared")
SHORT = {"reference": "ref", "op": "op", "prepared": "prep"}
MODES = ("hot", "cold")
STALL = 3.0  # a contender's median over its minimum above which its calls were held up
CANARY = 10.0  # canary over the run's fastest canary above which a core was taken (threads > 1)


class Table:
    """The benchmarks of one thread count: per row key (op, case, B), per (mode, contender),
    one median and one minimum (ms) per run (None where a run lacks it), the row's extra_info
    and its canaries."""

    def __init__(self, nruns):
        self.med = defaultdict(lambda: defaultdict(lambda: [None] * nruns))
        self.min = defaultdict(lambda: defaultdict(lambda: [None] * nruns))
        self.canary = defaultdict(list)
        self.evict_bytes = None
        self.info, self.order = {}, {}

    def rows(self, op):
        return sorted((k for k in self.info if k[0] == op), key=lambda k: (k[2], self.order[k]))


def load(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    tables = {}
    for i, data in enumerate(runs):
        for b in data["benchmarks"]:
            e = b.get("extra_info", {})
            if e.get("op") not in OPS:
                continue
            t = tables.setdefault(e["threads"], Table(len(runs)))
            key, cell = (e["op"], e["case"], e["B"]), (e["mode"], e["contender"])
            t.info.setdefault(key, e)
            t.order.setdefault(key, len(t.order))
            t.med[key][cell][i] = b["stats"]["median"] * 1e3
            t.min[key][cell][i] = b["stats"]["min"] * 1e3
            t.canary[key].extend(e.get("canary_ms", ()))
            t.evict_bytes = e.get("evict_bytes", t.evict_bytes)
    return runs, tables


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(cell, num, den):
    """num / den within each run, the median over runs."""
    return median([a / b for a, b in zip(cell.get(num, ()), cell.get(den, ())) if a and b])


def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


def plan_form(cell, mode):
    """The op's form the inference plan runs: prepared where it exists, else the op."""
    return "prepared" if (mode, "prepared") in cell else "op"


def flags(t, k, floor):
    """Why a row's ratios are suspect: 'core taken' when its canary (an ATen parallel add, which
    stalls for a timeslice while another process holds a core) was CANARY x the run's fastest,
    and the contenders whose median exceeds STALL x their minimum."""
    out = []
    if t.info[k]["threads"] > 1 and floor and max(t.canary[k], default=0) > CANARY * floor:
        out.append("core taken")
    out += [f"{mode} {SHORT[n]}" for mode in MODES for n in CONTENDERS
            if any(a and b and a > STALL * b
                   for a, b in zip(t.med[k].get((mode, n), ()), t.min[k].get((mode, n), ())))]
    return out


def header(runs, tables):
    e = next(iter(next(iter(tables.values())).info.values()))
    ci = e.get("cpu_info", {})
    mi = runs[-1].get("machine_info", {})
    mib = lambda n: f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"
    caches = ", ".join(f"{k.upper()} {mib(ci[k])}" for k in ("l1d", "l2", "l3") if ci.get(k))
    loads = [x["loadavg"][0] for t in tables.values() for x in t.info.values() if "loadavg" in x]
    dates = sorted(r.get("datetime", "")[:19] for r in runs)
    return [
        "# edgevit CPU ops against their eager references: hot and cold",
        "",
        f"Runs saved {dates[0]}{' to ' + dates[-1] if len(dates) > 1 else ''} on **{e['cpu']}** "
        f"(`{e['machine']}`), ISA `{e['isa']}`, caches {caches} ({ci.get('cache_source', '?')}), "
        f"{' and '.join(str(n) for n in sorted(tables, reverse=True))} threads, "
        f"torch {e['torch']}, Python {mi.get('python_version', platform.python_version())}; "
        f"{len(runs)} pytest-benchmark run{'s' if len(runs) > 1 else ''} "
        "(`benchmarks/test_bench_{mlp_fused,patch_embed,dwconv,linear_fused}.py`, rendered by "
        "`benchmarks/render_ops.py`)."
        + (f" The machine is shared with other work: 1-minute load average (`uptime`) at the start "
           f"of each benchmark {min(loads):.2f} to {max(loads):.2f} (median "
           f"{statistics.median(loads):.2f})." if loads else ""),
        "",
        "fp32, inference mode, every call checked against the reference before timing "
        "(|op - ref| <= 1e-4 |ref| + 1e-4 max(1, max |ref|)). Shapes: the real EdgeViT XXS and "
        "XS/S shapes at 224 x 224 (XS and S share all of them), as the inference plan calls the "
        "ops (`benchmarks/op_bench_common.py`). *ref* = the eager reference "
        "(`edgevit_kernels.reference`), *op* = the op with its weights as given (prepared on "
        "every call), *prep* = the `*_prepared` form with weights prepared once, which is what "
        "the plan runs (dwconv has none). Times are medians in ms. *hot*: the same call "
        "repeated. *cold*: each timed call preceded, outside the timed region, by a "
        "read-modify-write of 2 x (threads x L2 + L3) bytes (its size in each section), so "
        "weights, input and output all come from DRAM: an upper "
        "bound on the cache loss inside a model, where the input was just written by the "
        "previous op. Speedup = ref / op, ref / prep; cold/hot = a contender's cold median over "
        "its hot one.",
        "",
        f"*Flags*: *core taken* = the row's canary (one ATen parallel add over 1 MB, timed before "
        f"and after each benchmark) took over {CANARY:g}x the run's fastest: another process held "
        "a core, and ATen's OpenMP regions (the references) then wait a timeslice (ms) for their "
        "thread on it, which the edgevit ops' own pool does not (`csrc/cpu/thread_pool.h`), so "
        "such a row overstates the speedups of a quiet machine. *hot ref* etc. = that "
        f"contender's median exceeds {STALL:g}x its minimum. The 1-thread section has no "
        "parallel region to stall: its ratios compare the kernels themselves.",
        "",
    ]


def findings(t):
    """Per op: the lowest and highest speedup of the plan's form, hot and cold, the range of
    the cold/hot ratios; then the lowest speedup of all, over every row and the unflagged."""
    floor = min((c for cs in t.canary.values() for c in cs), default=None)
    lines, pool, clean = [], [], []
    for op in OPS:
        keys = t.rows(op)
        if not keys:
            continue
        parts = []
        for m in MODES:
            sp = [(ratio(t.med[k], (m, "reference"), (m, plan_form(t.med[k], m))), k) for k in keys]
            sp = [x for x in sp if x[0] is not None]
            if not sp:
                continue
            pool += [(s, op, m, k) for s, k in sp]
            clean += [(s, op, m, k) for s, k in sp if not flags(t, k, floor)]
            lo, hi = min(sp), max(sp)
            parts.append(f"{m} {lo[0]:.2f}x ({t.info[lo[1]]['case']}, B={lo[1][2]}) to "
                         f"{hi[0]:.2f}x ({t.info[hi[1]]['case']}, B={hi[1][2]})")
        form = plan_form(t.med[keys[0]], "hot")
        ch = [x for x in (ratio(t.med[k], ("cold", form), ("hot", form)) for k in keys) if x]
        chr_ = [x for x in (ratio(t.med[k], ("cold", "reference"), ("hot", "reference"))
                            for k in keys) if x]
        slower = sum(1 for s, o, _, _ in pool if o == op and s < 1)
        flagged = sum(1 for k in keys if flags(t, k, floor))
        lines.append(
            f"- **{op}** ({form}): speedup over the reference {'; '.join(parts)}. Cold/hot "
            f"{min(ch):.2f} to {max(ch):.2f} (median {statistics.median(ch):.2f}; the "
            f"reference's {min(chr_):.2f} to {max(chr_):.2f}, median "
            f"{statistics.median(chr_):.2f}). Slower than the reference in {slower} of "
            f"{len(keys) * len(MODES)} (shape, B, mode) cells; {flagged} of {len(keys)} rows "
            "flagged.")
    for label, p in (("of all rows", pool), ("of the unflagged rows", clean)):
        if p:
            s, op, m, k = min(p)
            lines.append(f"- Lowest speedup of a plan form {label}: {op} {t.info[k]['case']} "
                         f"({t.info[k]['shape']}), B={k[2]}, {m}: {s:.2f}x.")
    return lines


def op_table(t, op):
    keys = t.rows(op)
    floor = min((c for cs in t.canary.values() for c in cs), default=None)
    conts = [n for n in CONTENDERS if any((m, n) in t.med[k] for k in keys for m in MODES)]
    names = [SHORT[n] for n in conts]
    cols = (["shape", "B"] + [f"{n} {m}" for m in MODES for n in names]
            + [f"speedup {m} ({' / '.join(names[1:])})" for m in MODES]
            + [f"cold/hot ({' / '.join(names)})", "flags"])
    lines = [f"### {op}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for k in keys:
        c, e = t.med[k], t.info[k]
        times = [fmt(median(c.get((m, n), [])), ".3f") for m in MODES for n in conts]
        speed = [" / ".join(fmt(ratio(c, (m, "reference"), (m, n)), ".2f") + "x" for n in conts[1:])
                 for m in MODES]
        ch = " / ".join(fmt(ratio(c, ("cold", n), ("hot", n)), ".2f") for n in conts)
        cells = times + speed + [ch, ", ".join(flags(t, k, floor)) or "-"]
        lines.append(f"| {e['case']} ({e['shape']}) | {e['B']} | " + " | ".join(cells) + " |")
    return lines + [""]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("json", nargs="+", help="pytest-benchmark JSON of one or more runs")
    p.add_argument("--out", help="markdown path (default: benchmarks/results/<machine>/ops.md)")
    args = p.parse_args()
    runs, tables = load(args.json)
    if not tables:
        raise SystemExit("no benchmarks of the per-op files in " + ", ".join(args.json))
    lines = header(runs, tables)
    for threads in sorted(tables, reverse=True):
        t = tables[threads]
        evict = fmt(t.evict_bytes and t.evict_bytes / 2**20, "g", "?")
        lines += [f"## {threads} thread{'s' if threads > 1 else ''}", "",
                  f"Cold: {evict} MiB read and written before each timed call. Findings:", ""]
        lines += findings(t) + [""]
        for op in OPS:
            if t.rows(op):
                lines += op_table(t, op)
    machine = next(iter(next(iter(tables.values())).info.values()))["machine"]
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   machine, "ops.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
