"""Render the GPU pytest-benchmark JSON into a Markdown report and check the speed targets.

    python benchmarks/render_gpu.py benchmarks/results/raw/gpu.json [-o benchmarks/results/gpu.md] [--strict]

Targets (Triton op vs the eager reference / torch.compile of it, medians):
  * B=64, bf16, every stage with r > 1: >= 2.0x eager and >= 1.3x compile
  * B=256, fp32, every stage:           >= 1.5x eager
Missed or unmeasured targets are flagged in the report; --strict also makes them exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

IMPLS = ("eager", "compile", "triton")


def targets_for(info: dict) -> list[tuple[str, float]]:
    """(baseline impl, minimum speedup) pairs that apply to a group."""
    if info["B"] == 64 and info["dtype"] == "bf16" and info["r"] > 1:
        return [("eager", 2.0), ("compile", 1.3)]
    if info["B"] == 256 and info["dtype"] == "fp32":
        return [("eager", 1.5)]
    return []


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def load(path: Path) -> tuple[dict, dict]:
    data = json.loads(path.read_text())
    groups: dict = defaultdict(dict)
    meta: dict = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "impl" not in info:
            continue
        key = (info["model"], info["stage"], info["B"], info["dtype"])
        groups[key][info["impl"]] = {"stats": bench["stats"], "info": info}
        meta = meta or {k: info.get(k) for k in ("gpu", "torch", "triton", "cuda", "tf32_matmul")}
    meta["datetime"] = data.get("datetime")
    return groups, meta


def render(groups: dict, meta: dict) -> tuple[str, list[str]]:
    # Order: model, then batch, dtype, stage -- the way the targets read.
    def order(key):
        model, stage, B, dtype = key
        return (model != "XXS", B, dtype, stage)

    rows, misses, checked = [], [], 0
    for key in sorted(groups, key=order):
        model, stage, B, dtype = key
        g = groups[key]
        info = next(iter(g.values()))["info"]
        med = {impl: g[impl]["stats"]["median"] for impl in IMPLS if impl in g}
        cells = []
        for impl in IMPLS:
            if impl in g:
                s = g[impl]["stats"]
                cells.append(f"{_us(s['median'])} (IQR {_us(s['iqr'])})")
            else:
                cells.append("–")
        speed = {}
        for base in ("eager", "compile"):
            if "triton" in med and base in med and med["triton"] > 0:
                speed[base] = med[base] / med["triton"]
        flags = []
        for base, need in targets_for(info):
            checked += 1
            got = speed.get(base)
            label = f"{model} s{stage} B={B} {dtype}: triton vs {base}"
            if got is None:
                flags.append(f"❔ vs {base} (not measured)")
                misses.append(f"{label}: not measured (target {need}x)")
            elif got >= need:
                flags.append(f"✅ ≥{need}x {base}")
            else:
                flags.append(f"❌ <{need}x {base}")
                misses.append(f"{label}: {got:.2f}x < {need}x")
        shape = f"C={info['C']} h={info['heads']} r={info['r']} {info['H']}x{info['W']}"
        ratios = [f"{speed[b]:.2f}x" if b in speed else "–" for b in ("eager", "compile")]
        rows.append("| " + " | ".join([model, str(stage), shape, str(B), dtype, *cells, *ratios,
                                       " ".join(flags)]) + " |")

    out = [
        "# edgevit::lgl_fused on GPU",
        "",
        f"GPU: **{meta.get('gpu')}** · torch {meta.get('torch')} (CUDA {meta.get('cuda')}) · "
        f"Triton {meta.get('triton')} · fp32 TF32 matmul: {meta.get('tf32_matmul')} · "
        f"run {meta.get('datetime')}",
        "",
        "Times are medians in µs per call (synchronised), with the interquartile range. "
        "Speedups are median ratios: baseline / Triton. Eager and compile run "
        "`edgevit_kernels.reference.lgl_reference`; Triton is `torch.ops.edgevit.lgl_fused` "
        "(autotuned).",
        "",
        f"Targets: B=64 bf16 r>1 stages ≥2x eager and ≥1.3x compile; B=256 fp32 ≥1.5x eager. "
        f"**{checked - len(misses)}/{checked} met** over the {len(groups)} groups measured "
        f"(a full run has 48: 8 stage shapes x B in 1, 64, 256 x bf16, fp32).",
        "",
    ]
    if misses:
        out += ["Missed:", ""] + [f"- {m}" for m in misses] + [""]
    out += [
        "| model | stage | shape | B | dtype | eager µs | compile µs | triton µs "
        "| vs eager | vs compile | targets |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
    ]
    return "\n".join(out), misses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "gpu.md")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    groups, meta = load(args.json)
    if not groups:
        print(f"no lgl_fused benchmarks in {args.json}", file=sys.stderr)
        return 2
    text, misses = render(groups, meta)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}: {len(groups)} groups, {len(misses)} target(s) missed")
    for m in misses:
        print(f"  MISSED {m}")
    return 1 if (args.strict and misses) else 0


if __name__ == "__main__":
    sys.exit(main())
