"""Builds and runs the torch-free native harness (tests/native) for this machine.

The harness compares every SIMD variant of the lgl_fused micro-kernels this CPU runs (AVX2,
AVX-512 on x86-64; NEON on aarch64) against the scalar reference on thousands of shapes, with
guard pages and canaries for out-of-bounds accesses, plus the whole fused driver per ISA. It is
built into a private directory with the same per-file ISA flags as setup.py. Skipped where there
is no C++ compiler or make.

The same harness also runs cross-compiled for aarch64 under qemu-user (NEON vs scalar: the NEON
proof) and under ASan + UBSan + LeakSanitizer. Those skip without their tools, except when
EDGEVIT_REQUIRE_ARM=1 (set by .ci/run, which installs g++-aarch64-linux-gnu and qemu-user):
then a missing tool is a failure, so CI cannot pass without proving NEON.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.slow  # the slowest files: `pytest -m "not slow"` skips them

NATIVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")


CXX = os.environ.get("CXX", "g++")
HAVE_TOOLS = shutil.which("make") is not None and shutil.which(CXX) is not None


def _make(target, build_dir):
    jobs = str(max(1, min(os.cpu_count() or 1, 8)))
    proc = subprocess.run(
        ["make", "-C", NATIVE, "-j", jobs, target, f"BUILD={build_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
    )
    return proc, proc.stdout


@pytest.mark.skipif(not HAVE_TOOLS, reason="needs make and a C++ compiler (g++ or $CXX)")
def test_native_harness(tmp_path):
    proc, out = _make("native", tmp_path)
    assert proc.returncode == 0, f"native harness failed (exit {proc.returncode}):\n{out[-6000:]}"
    ok = re.findall(r"^(\w+): (\d+) cases OK$", out, flags=re.M)
    if not ok:
        # Only possible on a CPU without any SIMD variant the build has.
        assert "nothing to compare" in out, out[-3000:]
        pytest.skip("no SIMD micro-kernel variant runs on this CPU")
    assert all(int(n) > 1000 for _, n in ok), out[-3000:]
    assert "FAIL" not in out, out[-6000:]


ARM_TOOLS = shutil.which("aarch64-linux-gnu-g++") is not None and shutil.which("qemu-aarch64") is not None
REQUIRE_ARM = os.environ.get("EDGEVIT_REQUIRE_ARM") == "1"


@pytest.mark.skipif(not HAVE_TOOLS or (not ARM_TOOLS and not REQUIRE_ARM),
                    reason="needs aarch64-linux-gnu-g++ and qemu-aarch64 (apt: g++-aarch64-linux-gnu qemu-user)")
def test_native_harness_neon_under_qemu(tmp_path):
    assert ARM_TOOLS, "EDGEVIT_REQUIRE_ARM=1 but aarch64-linux-gnu-g++ / qemu-aarch64 are missing"
    proc, out = _make("arm", tmp_path)
    assert proc.returncode == 0, f"aarch64 harness failed (exit {proc.returncode}):\n{out[-6000:]}"
    counts = dict(re.findall(r"^(\w+): (\d+) cases OK$", out, flags=re.M))
    assert int(counts.get("neon", 0)) > 1000, out[-3000:]


@pytest.mark.skipif(not HAVE_TOOLS, reason="needs make and a C++ compiler (g++ or $CXX)")
def test_native_harness_asan_ubsan(tmp_path):
    proc, out = _make("asan", tmp_path)
    assert proc.returncode == 0, f"sanitized harness failed (exit {proc.returncode}):\n{out[-6000:]}"
    assert re.search(r"^\w+: \d+ cases OK$", out, flags=re.M), out[-3000:]
    assert "runtime error" not in out and "ERROR: AddressSanitizer" not in out, out[-6000:]
