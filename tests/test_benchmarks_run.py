"""Every CPU benchmark file runs: one small case of each, through pytest-benchmark with timing
off, so a renamed API or a stale call in benchmarks/ fails here rather than in the next
session's measurement (test_bench_lgl_fused.py called a removed method unnoticed once)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (file, -k expression): the smallest real shape, every contender but torch.compile (minutes)
CASES = [
    ("test_bench_lgl_fused.py", "XXS-3 and not compile"),
    ("test_bench_mlp_fused.py", "XXS-3 and not compile"),
    ("test_bench_patch_embed.py", "XXS-4 and not compile"),
    ("test_bench_dwconv.py", "XXS-3 and not compile"),
    ("test_bench_linear_fused.py", "XXS-3 and not compile"),
    ("test_bench_model.py", "xxs-B1 and (eager or fused) and not compile"),
]


@pytest.mark.parametrize("name, select", CASES, ids=[c[0] for c in CASES])
def test_benchmark_file_runs(name, select):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", os.path.join("benchmarks", name), "-k", select,
         "--benchmark-disable", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
