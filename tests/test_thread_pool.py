"""The kernels' own thread pool (csrc/cpu/thread_pool.h) and cpu_info().

Correctness only: the pool's point is speed on a busy machine, which `edgevit-bench
--contention` measures; here it must give the serial result for any thread count, survive fork,
nest, and run beside other threads and processes.
"""
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

import edgevit_kernels as ek
from edgevit_kernels.reference import mlp_reference

C, HIDDEN, TOKENS = 96, 384, 196


def _mlp_args(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, TOKENS, C, generator=g)
    w = [torch.randn(HIDDEN, C, generator=g) * C ** -0.5, torch.randn(HIDDEN, generator=g),
         torch.randn(C, HIDDEN, generator=g) * HIDDEN ** -0.5, torch.randn(C, generator=g),
         torch.randn(C, generator=g) + 1, torch.randn(C, generator=g)]
    return x, w


def _mlp(x, w):
    return ek.mlp_fused(x, *w[:4], True, w[4], w[5], 1e-6, True)


def _with_threads(n, fn):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def test_cpu_info_names_the_choices():
    info = ek.cpu_info()
    assert info["isa"] == ek.cpu_isa()
    assert info["nr"] in (4, 8, 16)
    assert info["cache_source"] in ("sysfs", "cpuid", "default")
    assert info["l1d"] >= 4096 and info["l2"] >= info["l1d"]
    assert 16 << 10 <= info["mlp_hidden_tile"] <= 256 << 10
    assert info["threads"] == torch.get_num_threads()
    assert info["chunks_per_thread"] >= 1


def test_cpu_info_caches_match_sysfs():
    base = "/sys/devices/system/cpu/cpu0/cache"
    if not os.path.isdir(base):
        pytest.skip("no sysfs cache description on this machine")
    sizes = {}
    for index in sorted(os.listdir(base)):
        if not index.startswith("index"):
            continue
        read = lambda f: open(os.path.join(base, index, f)).read().strip()
        if read("type") != "Instruction":
            s = read("size")
            sizes[int(read("level"))] = int(s[:-1]) * {"K": 1 << 10, "M": 1 << 20}[s[-1]]
    info = ek.cpu_info()
    assert info["cache_source"] == "sysfs"
    assert info["l2"] == sizes[2]
    assert info["mlp_hidden_tile"] == min(256 << 10, max(16 << 10, sizes[2] // 16))


def test_pool_starts_threads_minus_one_workers():
    x, w = _mlp_args()
    _with_threads(3, lambda: _mlp(x, w))
    assert ek.cpu_info()["pool_workers"] >= 2


@pytest.mark.parametrize("threads", [1, 2, 3, 5, 8])
def test_more_threads_than_cores_same_bits(threads):
    x, w = _mlp_args()
    want = _with_threads(1, lambda: _mlp(x, w))
    got = _with_threads(threads, lambda: _mlp(x, w))
    assert torch.equal(got, want)
    torch.testing.assert_close(got, mlp_reference(x, *w[:4], True, w[4], w[5], 1e-6, True),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_op_after_fork_in_child():
    # The parent's workers do not exist in a forked child: its first op must start its own
    # workers (a pool waiting for the parent's would hang; at::parallel_for's OpenMP team does
    # hang there, so the child touches no ATen op that runs in parallel).
    x, w = _mlp_args()
    want = _with_threads(2, lambda: _mlp(x, w))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.alarm(60)  # a hang kills the child: the parent then sees it fail, not wait
            os.close(read_end)
            torch.set_num_threads(2)
            data = _mlp(x, w).numpy().tobytes()
            while data:
                data = data[os.write(write_end, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    got = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(want.shape)
    assert torch.equal(got, want)


def test_concurrent_callers_share_the_pool():
    # Two Python threads calling ops at once: one gets the pool, the other runs inline.
    x, w = _mlp_args()
    want = _mlp(x, w)
    outs, errors = [], []

    def work():
        try:
            for _ in range(20):
                outs.append(_mlp(x, w))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(outs) == 60 and all(torch.equal(o, want) for o in outs)


def test_right_answer_with_a_busy_core():
    # A process spinning on one core: the caller may run every chunk itself; bits must not change.
    x, w = _mlp_args()
    want = _with_threads(1, lambda: _mlp(x, w))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        got = [_with_threads(2, lambda: _mlp(x, w)) for _ in range(30)]
    finally:
        spinner.kill()
        spinner.wait()
    assert all(torch.equal(g, want) for g in got)
