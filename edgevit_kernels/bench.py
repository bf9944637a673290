"""Model-level benchmark of EdgeViT: the main job (``edgevit-bench`` / ``python -m edgevit_kernels``).

For each EdgeViT variant (random weights, nothing downloaded; eval mode, fp32) this times the
inference paths and checks them against the eager reference:

* ``eager``          the reference model, ``use_fused=False`` (the official computation);
* ``fused``          the same weights with ``use_fused=True`` (the package's CPU kernels);
* ``compile``        ``torch.compile`` of the reference (opt-in: compiling costs minutes);
* ``compile-fused``  ``torch.compile`` of the fused model (opt-in, like ``compile``);
* ``onnxruntime``    the reference exported to ONNX (``torch.onnx.export``, TorchScript exporter,
                     the dynamo exporter if that fails) run by ONNX Runtime, CPUExecutionProvider,
                     ``intra_op_num_threads`` = torch threads, ``inter_op_num_threads`` = 1, all
                     graph optimisations;
* ``openvino``       the same ONNX file compiled by OpenVINO's CPU plugin,
                     ``INFERENCE_NUM_THREADS`` = torch threads, ``PERFORMANCE_HINT=LATENCY``,
                     ``INFERENCE_PRECISION_HINT=f32``.
ONNX Runtime and OpenVINO are skipped with a note when not installed.

Method: every path runs in its own process (as a user runs it: one runtime's idle threads then
cannot slow another's), kept alive for the whole variant. The timed runs are taken in blocks,
one block per path in turn, the order rotated every block, with a pause between blocks (ONNX
Runtime's and OpenMP's idle threads spin for a while after a run). ``--contention`` times every
block twice, quiet and with another process keeping one core busy, and reports each path's
slowdown.

Reported per (variant, path): median latency, interquartile range, speedup over eager, fused's
lead over the path (the median over rounds of the ratio of the two paths' blocks in one round,
and its range: on a shared machine whose speed drifts this is steadier than a ratio of
medians), achieved GFLOP/s (FLOPs counted once with ``torch.utils.flop_counter``) and its share
of this machine's fp32 matmul rate (``torch.mm`` 2048 x 2048, measured in the same run), max |logit difference|
against the eager reference and top-1 agreement with it, over the timed batch plus further
fixed random batches (at least ``EVAL_SAMPLES`` images).

The helpers here (``build_model``, ``make_runner``, ``machine_info``, ...) are shared with the
pytest-benchmark suite ``benchmarks/test_bench_model.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn as nn

VARIANTS = ("xxs", "xs", "s")
BASELINES = ("eager", "fused", "compile", "compile-fused", "onnxruntime", "openvino")
# What a plain run does. torch.compile is opt-in: compiling XXS alone takes ~40 s on 2 cores
# (XS/S more), which would push the default run past two minutes.
DEFAULT_BASELINES = ("eager", "fused", "onnxruntime", "openvino")
OPTIONAL_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # path -> package
BLOCK_RUNS = 5  # timed runs per block (a path's runs are spread over blocks taken in turn)
PAUSE_S = 0.2  # between blocks: idle runtime threads stop spinning
BUSY_SPREAD = 0.15  # IQR / median above this: the machine was probably busy (a warning)
EVAL_SAMPLES = 16  # images compared for max |d logits| and top-1 agreement (at least)
ATOL = 1e-3  # max |d logits| allowed against eager (logits are O(1), see build_model)
FALLBACK_MARK = "runs the unfused reference path"  # text of edgevit's fallback RuntimeWarning


# ---------------------------------------------------------------------------------------------
# Machine and versions


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, with its family / model on x86 (a VM's name alone, e.g.
    "AMD EPYC", does not say which generation) or implementer / part on Arm."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, value = (t.strip() for t in line.split(":", 1))
                    fields.setdefault(key, value)
    except OSError:
        pass
    if "model name" in fields:
        extra = f" (family {fields['cpu family']} model {fields['model']})" if "cpu family" in fields else ""
        return fields["model name"] + extra
    if "CPU part" in fields:
        return (f"{platform.machine()} CPU implementer {fields.get('CPU implementer', '?')} "
                f"part {fields['CPU part']}")
    return platform.processor() or platform.machine()


def package_version(name: str) -> Optional[str]:
    """``name``'s version, or None if it is not installed (or does not import)."""
    try:
        module = __import__(name)
    except Exception:
        return None
    return getattr(module, "__version__", "unknown")


def ort_version() -> Optional[str]:
    """onnxruntime's version, or None if it is not installed (or does not import)."""
    return package_version("onnxruntime")


def machine_info(threads: int) -> dict:
    import edgevit_kernels

    info = edgevit_kernels.cpu_info()
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "threads": threads,
        "isa": info["isa"],
        "caches": {k: info[k] for k in ("l1d", "l2", "l3", "cache_source")},
        "tiles": {"nr": info["nr"], "mlp_hidden_tile": info["mlp_hidden_tile"],
                  "chunks_per_thread": info["chunks_per_thread"]},
        "torch": torch.__version__,
        "onnxruntime": ort_version(),
        "openvino": package_version("openvino"),
        "python": platform.python_version(),
    }


def machine_line(info: dict) -> str:
    """One line naming the machine and what the kernels chose for it (for table headers)."""
    c, t = info["caches"], info["tiles"]
    return (f"{info['cpu']}, {info['threads']} threads, ISA {info['isa']} (nr {t['nr']}), "
            f"L1d {c['l1d'] >> 10} KiB / L2 {c['l2'] >> 10} KiB / L3 {c['l3'] >> 20} MiB "
            f"({c['cache_source']}), torch {info['torch']}, onnxruntime "
            f"{info['onnxruntime'] or 'not installed'}, openvino {info['openvino'] or 'not installed'}")


def matmul_gflops(threads: int, n: int = 2048, reps: int = 5) -> float:
    """This machine's fp32 matmul rate: ``torch.mm`` of two n x n matrices, best of ``reps``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def model_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``x`` (matmuls and convolutions, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------
# Models and inference paths


def build_model(variant: str, seed: int = 0) -> nn.Module:
    """EdgeViT ``variant`` (xxs, xs, s) with random weights, eval mode, reference path.

    On top of the default init (which leaves LayerNorm/BatchNorm affine at 1/0, biases at 0 and
    tiny logits), biases, norm affines and BatchNorm statistics are randomised and the head is
    scaled so logits are O(1): the max |d logits| and top-1 comparisons then mean something."""
    import edgevit

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    model = getattr(edgevit, f"edgevit_{variant}")(use_fused=False)
    g = torch.Generator().manual_seed(seed + 1)

    def rnd(t, scale, offset=0.0):
        return torch.randn(t.shape, generator=g) * scale + offset

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(rnd(m.running_mean, 0.2))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(rnd(m.weight, 0.2, 1.0))
                m.bias.copy_(rnd(m.bias, 0.1))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(rnd(m.weight, 0.2, 1.0))
                m.bias.copy_(rnd(m.bias, 0.1))
            elif isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.copy_(rnd(m.bias, 0.02))
        model.head.weight.mul_(20.0)
    return model.eval()


def export_onnx(model: nn.Module, x: torch.Tensor, path: str) -> str:
    """Export ``model`` (reference path) for input shape ``x.shape`` to ``path``; returns the
    exporter used: the TorchScript exporter (``dynamo=False``, opset 17, one self-contained file)
    first, the dynamo exporter (``dynamo=True``, needs onnxscript) if that one fails."""
    errors = []
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # "torchvision is not installed. Skipping torchvision::nms" and the like
        lg.setLevel(logging.ERROR)
    try:
        return _export_onnx(model, x, path, errors)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)


def _export_onnx(model, x, path, errors):
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.no_grad(), \
                    contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter's chatter
                warnings.simplefilter("ignore")
                kw = dict(dynamo=True, verbose=False) if dynamo else dict(dynamo=False, opset_version=17)
                torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"], **kw)
            return "dynamo" if dynamo else "torchscript"
        except Exception as e:  # try the other exporter
            errors.append(f"dynamo={dynamo}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    raise RuntimeError("torch.onnx.export failed with both exporters: " + "; ".join(errors))


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


@dataclass
class Runner:
    fn: Callable[[torch.Tensor], torch.Tensor]
    setup_s: float = 0.0
    note: str = ""
    keep: list = field(default_factory=list)  # objects that must outlive fn (temp dirs)


def make_runner(path: str, model: nn.Module, x: torch.Tensor, threads: int) -> Runner:
    """A callable for inference path ``path`` on ``model`` (reference, not modified) for inputs
    of ``x``'s shape. Compilation / export happen here or, for ``compile``, on the first call
    (counted in ``setup_s`` by ``prepare``)."""
    t0 = time.perf_counter()
    if path == "eager":
        return Runner(model)
    if path == "fused":
        return Runner(copy.deepcopy(model).set_fused(True))
    if path == "compile":
        return Runner(torch.compile(model, dynamic=False))
    if path == "compile-fused":
        return Runner(torch.compile(copy.deepcopy(model).set_fused(True), dynamic=False))
    if path == "openvino":
        if package_version("openvino") is None:
            raise RuntimeError("openvino is not installed (pip install openvino)")
        import openvino as ov

        tmp = tempfile.TemporaryDirectory(prefix="edgevit-onnx-")
        file = os.path.join(tmp.name, "model.onnx")
        exporter = export_onnx(model, x, file)
        compiled = ov.Core().compile_model(file, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        out = compiled.output(0)

        def fn(t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(request.infer([t.numpy()])[out].copy())

        return Runner(fn, time.perf_counter() - t0, f"ONNX exporter: {exporter}", [tmp, compiled, request])
    if path == "onnxruntime":
        if ort_version() is None:
            raise RuntimeError("onnxruntime is not installed (pip install onnxruntime)")
        tmp = tempfile.TemporaryDirectory(prefix="edgevit-onnx-")
        file = os.path.join(tmp.name, "model.onnx")
        exporter = export_onnx(model, x, file)
        sess = ort_session(file, threads)
        in_name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name

        def fn(t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(sess.run([out_name], {in_name: t.numpy()})[0])

        return Runner(fn, time.perf_counter() - t0, f"ONNX exporter: {exporter}", [tmp, sess])
    raise ValueError(f"unknown path {path!r}")


def prepare(runner: Runner, x: torch.Tensor) -> Runner:
    """First call (compiles ``compile``), timed into ``setup_s``; notes a fused-path fallback."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        runner.fn(x)
    runner.setup_s += time.perf_counter() - t0
    fallback = [str(w.message) for w in caught if FALLBACK_MARK in str(w.message)]
    if fallback:
        runner.note = (runner.note + "; " if runner.note else "") + "FELL BACK: " + fallback[0]
    return runner


def eval_batches(x: torch.Tensor, samples: int = EVAL_SAMPLES, seed: int = 1234) -> list[torch.Tensor]:
    """``x`` and further fixed random batches of its shape, at least ``samples`` images in all."""
    g = torch.Generator().manual_seed(seed)
    n = max(1, math.ceil(samples / x.shape[0]))
    return [x] + [torch.randn(x.shape, generator=g) for _ in range(n - 1)]


def compare(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> tuple[float, int, int]:
    """(max |out - ref|, images whose top-1 agrees, images) over the batches."""
    diff, agree, total = 0.0, 0, 0
    for o, r in zip(outs, refs):
        o = o.float()
        diff = max(diff, (o - r).abs().max().item())
        agree += int((o.argmax(-1) == r.argmax(-1)).sum())
        total += r.shape[0]
    return diff, agree, total


def block_ratios(num_ms: list[float], den_ms: list[float], block_runs: int = BLOCK_RUNS) -> list[float]:
    """median(num's block k) / median(den's block k) for every block both have: two paths'
    blocks of one round are taken seconds apart, so the ratio within a round cancels the drift
    of a shared machine's speed between rounds, which a ratio of whole-run medians keeps."""
    n = min(len(num_ms), len(den_ms))
    return [statistics.median(num_ms[k:k + block_runs]) / statistics.median(den_ms[k:k + block_runs])
            for k in range(0, n, block_runs)]


def summarize(times_ms: list[float]) -> dict:
    med = statistics.median(times_ms)
    if len(times_ms) > 1:
        q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    else:
        q1 = q3 = med
    return {"median_ms": med, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1, "min_ms": min(times_ms)}


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """tqdm on stderr when installed, else one rewritten stderr line; ``enabled=False``: silent."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.n, self.enabled, self.desc, self._last = total, 0, enabled, "", 0.0
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, unit="step", leave=False,
                                dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                "{n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
            except ImportError:
                pass

    def set(self, desc: str):
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description_str(desc)
        self._line(force=True)

    def update(self, k: int = 1):
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        self._line()

    def _line(self, force: bool = False):
        if not self.enabled or self.bar is not None:
            return
        now = time.monotonic()
        if force or now - self._last > 0.5 or self.n >= self.total:
            self._last = now
            sys.stderr.write(f"\r\033[K[{100 * self.n // max(1, self.total):3d}%] {self.desc}")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def time_runner(fn, x: torch.Tensor, runs: int, warmup: int, progress: Optional[Progress] = None) -> list[float]:
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
            if progress:
                progress.update()
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
            if progress:
                progress.update()
    return times


# ---------------------------------------------------------------------------------------------
# The main job


def _worker_main(conn, variant: str, path: str, batch: int, H: int, W: int, threads: int) -> None:
    """One inference path in a process of its own: builds the same model (fixed seeds) and input
    as the parent, prepares the path, then answers ("time", runs) and ("eval",) until ("stop",)."""
    torch.set_num_threads(threads)
    try:
        model = build_model(variant)
        x = torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(42))
        runner = prepare(make_runner(path, model, x, threads), x)
        conn.send(("ready", runner.setup_s, runner.note))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}" if str(e) else type(e).__name__))
        return
    while True:
        cmd = conn.recv()
        if cmd[0] == "time":
            conn.send(("ok", time_runner(runner.fn, x, cmd[1], 0)))
        elif cmd[0] == "eval":
            with torch.inference_mode():
                conn.send(("ok", [runner.fn(b).float().numpy() for b in eval_batches(x)]))
        else:
            return


class Worker:
    """The parent's handle on a ``_worker_main`` process."""

    def __init__(self, variant, path, batch, H, W, threads):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: no thread pool inherited
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, variant, path, batch, H, W, threads),
                                daemon=True)
        self.proc.start()
        reply = self._recv()
        if reply[0] == "error":
            self.stop()
            raise RuntimeError(reply[1])
        _, self.setup_s, self.note = reply

    def _recv(self):
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise RuntimeError(f"worker process died (exit code {self.proc.exitcode})")
        return self.conn.recv()

    def call(self, *cmd):
        self.conn.send(cmd)
        return self._recv()[1]

    def stop(self):
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


class BusyCore:
    """A process that keeps one core busy (``while True: pass``), stopped and resumed by signal,
    so quiet and busy blocks alternate without starting a process for each."""

    def __init__(self):
        import signal
        import subprocess

        self._signal = signal
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        self.pause()

    def pause(self):
        self.proc.send_signal(self._signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(self._signal.SIGCONT)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def _time_blocks(workers: dict, runs: int, warmup: int, busy: Optional[BusyCore], progress) -> dict:
    """{path: {"quiet": [ms], "busy": [ms]}}: blocks of BLOCK_RUNS runs, one per path in turn,
    the order rotated every block, a pause between blocks; with ``busy`` each block is timed
    quiet, then with the busy core."""
    paths = list(workers)
    for w in workers.values():
        if warmup:
            w.call("time", warmup)
        progress.update(warmup)
    times = {p: {"quiet": [], "busy": []} for p in paths}
    blocks = math.ceil(runs / BLOCK_RUNS)
    for k in range(blocks):
        n = min(BLOCK_RUNS, runs - k * BLOCK_RUNS)
        for p in paths[k % len(paths):] + paths[:k % len(paths)]:
            time.sleep(PAUSE_S)
            times[p]["quiet"] += workers[p].call("time", n)
            if busy is not None:
                busy.resume()
                try:
                    times[p]["busy"] += workers[p].call("time", n)
                finally:
                    busy.pause()
            progress.update(n)
    return times


def run(variants, baselines, batch, H, W, threads, runs, warmup, progress: Progress, notes: list,
        contention: bool = False) -> list[dict]:
    results = []
    busy = BusyCore() if contention else None
    try:
        for variant in variants:
            results += _run_variant(variant, baselines, batch, H, W, threads, runs, warmup,
                                    progress, notes, busy)
    finally:
        if busy is not None:
            busy.close()
    return results


def _run_variant(variant, baselines, batch, H, W, threads, runs, warmup, progress, notes,
                 busy) -> list[dict]:
    model = build_model(variant)
    x = torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(42))
    batches = eval_batches(x)
    progress.set(f"{variant}: reference logits, FLOPs")
    with torch.inference_mode():
        refs = [model(b) for b in batches]
    flops = model_flops(model, x)
    workers = {}
    try:
        for path in baselines:
            progress.set(f"{variant} {path}: " + {"compile": "compiling", "compile-fused": "compiling",
                                                  "onnxruntime": "exporting", "openvino": "exporting"}.get(path, "setup"))
            try:
                workers[path] = Worker(variant, path, batch, H, W, threads)
            except Exception as e:
                notes.append(f"{variant} {path}: skipped, {str(e)[:300]}")
                progress.update(warmup + runs * (2 if busy else 1) + len(batches))
                continue
            progress.update()
        progress.set(f"{variant}: timing {', '.join(workers)}" + (" (quiet / busy core)" if busy else ""))
        times = _time_blocks(workers, runs, warmup, busy, progress)
        progress.set(f"{variant}: checking")
        results, eager_med = [], None
        for path, w in workers.items():
            outs = [torch.from_numpy(o) for o in w.call("eval")]
            progress.update(len(batches))
            diff, agree, total = compare(outs, refs)
            s = summarize(times[path]["quiet"])
            if path == "eager":
                eager_med = s["median_ms"]
            gflops = flops / (s["median_ms"] * 1e-3) / 1e9
            r = dict(
                variant=variant, path=path, batch=batch, height=H, width=W, threads=threads, **s,
                speedup_vs_eager=(eager_med / s["median_ms"]) if eager_med else None,
                flops=flops, gflops=gflops,
                max_abs_diff=diff, top1_agree=agree, top1_total=total,
                setup_s=w.setup_s, note=w.note, times_ms=times[path]["quiet"],
            )
            if busy is not None:
                b = summarize(times[path]["busy"])
                r.update(busy_median_ms=b["median_ms"], busy_iqr_ms=b["iqr_ms"],
                         busy_times_ms=times[path]["busy"], slowdown=b["median_ms"] / s["median_ms"])
            if s["iqr_ms"] > BUSY_SPREAD * s["median_ms"]:
                notes.append(f"{variant} {path}: IQR {s['iqr_ms']:.2f} ms is "
                             f"{100 * s['iqr_ms'] / s['median_ms']:.0f}% of the median: the machine "
                             "was probably busy; rerun on a quiet machine")
            results.append(r)
        _add_fused_lead(results)
        return results
    finally:
        for w in workers.values():
            w.stop()


def _add_fused_lead(results: list[dict]) -> None:
    """Per non-fused path: fused's lead over it (this path's time / fused's), the median over
    rounds of the ratio within a round (quiet blocks), with its range."""
    fused = next((r for r in results if r["path"] == "fused"), None)
    if fused is None:
        return
    for r in results:
        if r is fused:
            continue
        ratios = block_ratios(r["times_ms"], fused["times_ms"])
        if ratios:
            r.update(fused_lead=statistics.median(ratios), fused_lead_min=min(ratios),
                     fused_lead_max=max(ratios))


def format_table(results: list[dict], atol: float = ATOL) -> str:
    busy = any("slowdown" in r for r in results)
    head = (f"{'model':6} {'path':13} {'median ms':>10} {'IQR ms':>8} {'speedup':>8} {'fused lead':>17} {'GFLOP/s':>8} "
            f"{'of mm':>6} " + (f"{'busy ms':>9} {'slowdown':>8} " if busy else "") +
            f"{'max|dlogit|':>12} {'top-1 agree':>17}  note")
    lines = [head, "-" * len(head)]
    for r in results:
        sp = f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] else "-"
        share = f"{100 * r['matmul_share']:.0f}%" if r.get("matmul_share") else "-"
        agree = f"{100 * r['top1_agree'] / r['top1_total']:.1f}% ({r['top1_agree']}/{r['top1_total']})"
        note = r["note"]
        if r["max_abs_diff"] > atol:
            note = f"MISMATCH (> {atol:g}); " + note
        cont = f"{r['busy_median_ms']:9.2f} {r['slowdown']:7.2f}x " if busy else ""
        lead = (f"{r['fused_lead']:.2f}x ({r['fused_lead_min']:.2f}-{r['fused_lead_max']:.2f})"
                if "fused_lead" in r else "")
        lines.append(f"{r['variant']:6} {r['path']:13} {r['median_ms']:10.2f} {r['iqr_ms']:8.2f} "
                     f"{sp:>8} {lead:>17} {r['gflops']:8.1f} {share:>6} {cont}{r['max_abs_diff']:12.2e} "
                     f"{agree:>17}  {note}".rstrip())
    return "\n".join(lines)


def write_chart(results: list[dict], path: str, title: str) -> Optional[str]:
    """Grouped bars (median, IQR whiskers, speedup labels); None if written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    variants = list(dict.fromkeys(r["variant"] for r in results))
    paths = list(dict.fromkeys(r["path"] for r in results))
    if not results:
        return "no results"
    width = 0.8 / len(paths)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(variants) + 2), 4.5))
    for i, p in enumerate(paths):
        xs, meds, err, labels = [], [], [[], []], []
        for j, v in enumerate(variants):
            r = next((r for r in results if r["variant"] == v and r["path"] == p), None)
            if r is None:
                continue
            xs.append(j + (i - (len(paths) - 1) / 2) * width)
            meds.append(r["median_ms"])
            err[0].append(r["median_ms"] - r["q1_ms"])
            err[1].append(r["q3_ms"] - r["median_ms"])
            labels.append(f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] else "")
        bars = ax.bar(xs, meds, width, yerr=err, capsize=3, label=p)
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_xticks(range(len(variants)), [f"EdgeViT-{v.upper()}" for v in variants])
    ax.set_ylabel("median latency, ms (whiskers: IQR)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _csv(text: str) -> list[str]:
    return [s.strip().lower() for s in text.split(",") if s.strip()]


def _positive(name):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgevit-bench",
        description="Time EdgeViT (random weights, eval, fp32) eager vs use_fused=True vs "
                    "torch.compile vs ONNX Runtime, check logits against eager, print a table, "
                    "draw a chart.",
        epilog="The default run (XXS, XS, S at 224x224, B=1; eager, fused, onnxruntime) takes about "
               "a minute on 2 cores. torch.compile is opt-in (--baselines all, or name it): "
               "compiling the three models takes minutes. Exit status 1 if a path's logits differ "
               f"from eager by more than {ATOL:g}.")
    p.add_argument("--variants", default=",".join(VARIANTS), metavar="LIST",
                   help=f"comma list of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--batch", type=_positive("--batch"), default=1, help="batch size (default 1)")
    p.add_argument("--resolution", type=_positive("--resolution"), nargs="+", default=[224],
                   metavar="PX", help="H [W]: input height and width, >= 32 (default 224)")
    p.add_argument("--threads", type=_positive("--threads"), default=torch.get_num_threads(),
                   help=f"torch and ONNX Runtime intra-op threads (default {torch.get_num_threads()})")
    p.add_argument("--runs", type=_positive("--runs"), default=30, help="timed runs per path (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--baselines", default=None, metavar="LIST",
                   help=f"comma list of {', '.join(BASELINES)}, or 'all' (default: "
                        f"{','.join(DEFAULT_BASELINES)} -- onnxruntime when installed; compile is opt-in)")
    p.add_argument("--chart", default="edgevit_bench.png", metavar="PATH",
                   help="PNG chart to write (default ./edgevit_bench.png; '' for none)")
    p.add_argument("--contention", action="store_true",
                   help="time every block twice, quiet and with another process keeping one core "
                        "busy, and report each path's slowdown")
    p.add_argument("--json", default=None, metavar="PATH", help="write machine-readable results here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    variants = _csv(args.variants)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        p.error(f"--variants: unknown {', '.join(map(repr, bad)) or '(empty)'}; choose from {', '.join(VARIANTS)}")
    if len(args.resolution) > 2:
        p.error(f"--resolution takes H or H W, got {len(args.resolution)} values")
    H, W = args.resolution[0], args.resolution[-1]
    if min(H, W) < 32:
        p.error(f"--resolution must be at least 32 (EdgeViT downsamples by 32), got {H}x{W}")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    notes: list[str] = []
    if args.baselines is None:
        baselines = list(DEFAULT_BASELINES)
    else:
        baselines = list(BASELINES) if args.baselines.strip().lower() == "all" else _csv(args.baselines)
        bad = [b for b in baselines if b not in BASELINES]
        if bad or not baselines:
            p.error(f"--baselines: unknown {', '.join(map(repr, bad)) or '(empty)'}; "
                    f"choose from {', '.join(BASELINES)} or 'all'")
        baselines = list(dict.fromkeys(baselines))
    for path, package in OPTIONAL_PACKAGES.items():
        if path in baselines and package_version(package) is None:
            baselines.remove(path)
            notes.append(f"{path}: not installed, skipped (pip install {package})")
    # eager first: it is the baseline of the speedups
    baselines.sort(key=lambda b: b != "eager")

    import edgevit  # noqa: F401  (fail early with a clear import error)
    import edgevit_kernels  # noqa: F401

    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    mm_rate = matmul_gflops(args.threads)
    header = (f"# edgevit-bench: {machine_line(info)} | B={args.batch}, {H}x{W}, fp32, random "
              f"weights; each path in its own process, median of {args.runs} runs in blocks of "
              f"{BLOCK_RUNS} taken in turn (warm-up {args.warmup}); fp32 matmul rate "
              f"{mm_rate:.0f} GFLOP/s before the runs (torch.mm 2048^2; again after them, the "
              f"better one sets the shares); accuracy vs eager over >= "
              f"{EVAL_SAMPLES} images" + ("; busy: one other process spinning" if args.contention else ""))
    print(header, flush=True)

    n_eval = len(eval_batches(torch.empty(args.batch, 0)))
    per_path = 1 + args.warmup + args.runs * (2 if args.contention else 1) + n_eval
    progress = Progress(len(variants) * len(baselines) * per_path, enabled=not args.no_progress)
    try:
        results = run(variants, baselines, args.batch, H, W, args.threads, args.runs, args.warmup,
                      progress, notes, contention=args.contention)
    finally:
        progress.close()

    # A busy moment during one measurement would understate the rate (and overstate every
    # share), so it is taken again after the runs and the better one is used.
    mm_rates = (mm_rate, matmul_gflops(args.threads))
    mm_rate = max(mm_rates)
    for r in results:
        r["matmul_share"] = r["gflops"] / mm_rate
    if min(mm_rates) < 0.85 * mm_rate:
        notes.append(f"fp32 matmul rate {mm_rates[0]:.0f} GFLOP/s before the runs, {mm_rates[1]:.0f} "
                     f"after: the machine was probably busy during one; shares use {mm_rate:.0f}")
    print(format_table(results))
    for r in results:
        if r["path"] in ("compile", "compile-fused", "onnxruntime", "openvino"):
            notes.append(f"{r['variant']} {r['path']}: setup (compile / export + session) {r['setup_s']:.1f} s")
    for n in notes:
        print(f"note: {n}")

    if args.chart:
        why = write_chart(results, args.chart,
                          f"EdgeViT, B={args.batch}, {H}x{W}, fp32, random weights\n{info['cpu']}, "
                          f"{args.threads} threads, {info['isa']}, torch {info['torch']}")
        print(f"chart: {args.chart}" if why is None else f"chart: not written ({why})")
    total_s = time.perf_counter() - t_start
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "machine": dict(info, matmul_gflops=mm_rate, matmul_gflops_before_after=mm_rates),
                "config": {"variants": variants, "baselines": baselines, "batch": args.batch,
                           "height": H, "width": W, "threads": args.threads, "runs": args.runs,
                           "warmup": args.warmup, "eval_samples": EVAL_SAMPLES, "atol": ATOL,
                           "block_runs": BLOCK_RUNS, "pause_s": PAUSE_S, "contention": args.contention},
                "results": results, "notes": notes, "total_s": total_s,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - total_s)),
            }, f, indent=1)
        print(f"json: {args.json}")
    print(f"total {total_s:.0f} s")
    return 1 if any(r["max_abs_diff"] > ATOL for r in results) else 0
