"""Hardening of edgevit::lgl_fused: thread safety, memory, determinism, a broken or missing build,
and the bad inputs of the README's "Bad input" tables that tests/test_lgl_fused.py does not already cover.

Findings these tests pin down (see the README):
* The op is reentrant: concurrent calls from Python threads give bitwise the serial results.
* Outputs are bitwise identical over repeated calls and for any torch.set_num_threads value,
  per ISA. Across ISAs they are NOT bitwise identical (FMA, summation order and the polynomial
  exp of the SIMD kernels differ from the scalar ones); they agree within the float32 tolerance
  of tests/test_lgl_fused.py (atol = rtol = 1e-4 on O(1) outputs; max |diff| <= 3e-6 seen on the
  XXS stage shapes at B = 3).
* The op is bitwise the same for any thread count; a whole model is so only per thread count
  (torch's own CPU ops in it, unfused model included, change the last bits with it).
"""
from __future__ import annotations

import faulthandler
import os
import re
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager

import pytest
import torch

import edgevit
import edgevit_kernels
from edgevit_kernels import lgl_fused, lgl_reference
from lgl_samples import cpu_isa, make_args, shape_id

ISAS = edgevit_kernels.supported_cpu_isas()
XXS_STAGES_B3 = [(3, 56, 56, 36, 1, 4), (3, 28, 28, 72, 2, 2), (3, 14, 14, 144, 4, 2), (3, 7, 7, 288, 8, 1)]  # at 224
JOIN_TIMEOUT_S = 120  # a deadlock fails the test instead of hanging the run


@contextmanager
def num_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def deadlock_guard(seconds=JOIN_TIMEOUT_S):
    """Kills the process with every thread's traceback if the block does not end in time."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def run_in_threads(fns):
    """Runs every fn in its own thread, all released at once; returns their results in order."""
    results, errors = [None] * len(fns), []
    barrier = threading.Barrier(len(fns))

    def worker(i):
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT_S)
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {JOIN_TIMEOUT_S} s (deadlock?): {alive}"
    assert not errors, errors
    return results


# ---------------------------------------------------------------- thread safety

THREAD_SHAPES = [(1, 8, 8, 16, 2, 2), (2, 14, 14, 72, 2, 2), (3, 7, 9, 40, 5, 1), (1, 28, 28, 36, 1, 4),
                 (2, 5, 7, 12, 3, 3), (1, 7, 7, 288, 8, 1), (3, 13, 11, 40, 5, 3), (1, 1, 1, 8, 2, 4)]


@pytest.mark.parametrize("isa", ISAS)
def test_concurrent_calls_from_8_threads_equal_serial(isa):
    inputs = [make_args(*s, seed=i, dtype=torch.float64 if i == 5 else torch.float32)
              for i, s in enumerate(THREAD_SHAPES)]
    with cpu_isa(isa):
        serial = [lgl_fused(*a) for a in inputs]
        for _ in range(3):
            # each thread calls its op several times so that the calls overlap
            outs = run_in_threads([lambda a=a: [lgl_fused(*a) for _ in range(5)] for a in inputs])
            for got, want in zip(outs, serial):
                assert all(torch.equal(g, want) for g in got)


@pytest.fixture(scope="module")
def xxs_fused():
    torch.manual_seed(0)
    model = edgevit.edgevit_xxs(use_fused=True).eval()
    inputs = [torch.randn(1 + i % 2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    return model, inputs


def test_model_from_8_threads_equals_serial(xxs_fused):
    model, inputs = xxs_fused

    def infer(x):
        with torch.inference_mode():
            return model(x)

    # The serial runs also run in a fresh thread each, so that they see the same intra-op thread
    # settings as the concurrent ones (torch's own ops in the model depend on the thread count).
    serial = [run_in_threads([lambda x=x: infer(x)])[0] for x in inputs]
    for _ in range(2):
        outs = run_in_threads([lambda x=x: infer(x) for x in inputs])
        for got, want in zip(outs, serial):
            assert torch.equal(got, want)


def test_changing_num_threads_between_calls(xxs_fused):
    """The op is bitwise the same for every thread count. The model is bitwise the same for a
    given thread count, but not across thread counts: torch's own CPU ops in it (unfused model
    included) change the last bits with the thread count."""
    model, inputs = xxs_fused
    args = make_args(3, 14, 14, 72, 2, 2)
    with deadlock_guard(), num_threads(1), torch.inference_mode():
        op_ref, model_ref = lgl_fused(*args), {}
        for n in (1, 2, 1, 2, 1, 2):
            torch.set_num_threads(n)
            assert torch.equal(lgl_fused(*args), op_ref), n
            y = model(inputs[0])
            assert torch.equal(y, model_ref.setdefault(n, y)), n
        torch.testing.assert_close(model_ref[1], model_ref[2], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- memory

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


MEM_LIMIT = 5 * 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("isa", ISAS)
def test_10000_calls_do_not_grow_memory(isa):
    args = make_args(1, 8, 8, 16, 2, 2)
    with cpu_isa(isa), torch.inference_mode():
        for _ in range(200):
            lgl_fused(*args)
        before = _rss_bytes()
        for _ in range(10_000):
            lgl_fused(*args)
        grown = _rss_bytes() - before
    print(f"rss growth over 10000 calls ({isa}): {grown / 2**10:.0f} KiB")
    assert grown < MEM_LIMIT, f"RSS grew by {grown / 2**20:.1f} MB over 10000 calls"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_rejected_calls_do_not_grow_memory():
    # The error path (TORCH_CHECK throwing through the dispatcher) must free what it allocated.
    args = make_args(1, 8, 8, 16, 2, 2)
    args[13] = torch.zeros(16, 15)
    for _ in range(200):
        with pytest.raises(RuntimeError):
            lgl_fused(*args)
    before = _rss_bytes()
    for _ in range(3000):
        try:
            lgl_fused(*args)
        except RuntimeError:
            pass
    grown = _rss_bytes() - before
    print(f"rss growth over 3000 rejected calls: {grown / 2**10:.0f} KiB")
    assert grown < MEM_LIMIT


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", XXS_STAGES_B3, ids=shape_id)
def test_bitwise_deterministic_repeats_and_thread_counts(shape, isa):
    args = make_args(*shape)
    with cpu_isa(isa):
        with num_threads(1):
            first = lgl_fused(*args)
            assert torch.equal(lgl_fused(*args), first)
        with num_threads(2):
            for _ in range(3):
                assert torch.equal(lgl_fused(*args), first)


@pytest.mark.skipif(len(ISAS) < 2, reason="one ISA on this machine")
@pytest.mark.parametrize("shape", XXS_STAGES_B3, ids=shape_id)
def test_across_isas_close_but_not_required_bitwise(shape):
    """Outputs of different ISAs agree within the float32 tolerance; bitwise equality is NOT
    promised (and not observed: FMA, other summation orders, polynomial exp)."""
    args = make_args(*shape)
    outs = {}
    for isa in ISAS:
        with cpu_isa(isa):
            outs[isa] = lgl_fused(*args)
    for i, a in enumerate(ISAS):
        for b in ISAS[i + 1:]:
            torch.testing.assert_close(outs[b], outs[a], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- a broken or missing build

def _run_python(code, timeout=180):
    env = dict(os.environ)
    # where edgevit and edgevit_kernels are imported from now (editable install or PYTHONPATH)
    roots = {os.path.dirname(os.path.dirname(m.__file__)) for m in (edgevit, edgevit_kernels)}
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env, timeout=timeout)
    return out


_BLOCK_C = """
    import importlib.abc, sys
    class BlockC(importlib.abc.MetaPathFinder):  # loading the extension fails, as when broken
        def find_spec(self, name, path=None, target=None):
            if name == "edgevit_kernels._C":
                raise ImportError("{msg}")
    sys.meta_path.insert(0, BlockC())
"""


def test_broken_extension_one_clear_import_error_and_models_fall_back():
    code = _BLOCK_C.format(msg="_C.so: undefined symbol: _ZN3c104impl3fooEv") + """
    import traceback, warnings
    import torch
    try:
        import edgevit_kernels
    except ImportError as e:
        print("MESSAGE:", e)
        print("CHAINED:", e.__cause__ is not None)
    else:
        raise SystemExit("import edgevit_kernels did not fail")
    import edgevit  # must still work
    torch.manual_seed(0)
    plain = edgevit.edgevit_xxs().eval()
    fused = edgevit.edgevit_xxs(use_fused=True).eval()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings(record=True) as rec, torch.inference_mode():
        warnings.simplefilter("always")
        y = [fused(x) for _ in range(3)]
        y_plain = plain(x)
    assert all(torch.equal(t, y_plain) for t in y)
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    print("WARNINGS:", len(msgs))
    for m in msgs:
        print("WARNING:", m)
    """
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    msg = lines["MESSAGE"]
    assert "could not load its C++ extension edgevit_kernels._C" in msg           # what failed
    assert "undefined symbol: _ZN3c104impl3fooEv" in msg                         # the original error
    assert f"installed torch {torch.__version__}" in msg                         # likely cause
    assert "pip install --no-build-isolation -e ." in msg                        # the fix
    assert lines["CHAINED"] == "False"  # one error, not a chain of tracebacks
    assert lines["WARNINGS"] == "1", out.stdout  # once per model, over three calls and 3 modules
    assert "runs the unfused reference path" in lines["WARNING"]
    assert "pip install --no-build-isolation -e ." in lines["WARNING"]  # the reason says the fix


def test_missing_extension_file_says_not_built(tmp_path):
    # A copy of the Python package without _C*.so: the state of a checkout that was never built.
    pkg = tmp_path / "edgevit_kernels"
    pkg.mkdir()
    src = os.path.dirname(edgevit_kernels.__file__)
    for name in os.listdir(src):
        if name.endswith(".py"):
            (pkg / name).write_text(open(os.path.join(src, name)).read())
    code = f"""
    import sys
    sys.path.insert(0, {str(tmp_path)!r})
    # an editable install's finder would map edgevit_kernels._C back to the source tree
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    import torch
    try:
        import edgevit_kernels
    except ImportError as e:
        print("MESSAGE:", e)
    else:
        raise SystemExit("import did not fail")
    """
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    msg = out.stdout.split("MESSAGE: ", 1)[1]
    assert "was not built" in msg and "pip install --no-build-isolation -e ." in msg, msg
    assert f"installed torch is {torch.__version__}" in msg and "ModuleNotFoundError" in msg, msg


# ---------------------------------------------------------------- bad input
# The README's "Bad input" tables list every bad input with its error and the test that checks it; the cases
# below are those tests/test_lgl_fused.py does not cover.

def _bad(mutate, match, shape=(2, 6, 6, 12, 3, 2), exc=RuntimeError):
    args = make_args(*shape)
    mutate(args)
    with pytest.raises(exc, match=match):
        lgl_fused(*args)


def _cast_all(dtype):
    def mutate(a):
        for i, t in enumerate(a):
            if isinstance(t, torch.Tensor):
                a[i] = t.to(dtype)
    return mutate


@pytest.mark.parametrize("dtype, name", [(torch.float16, "Half"), (torch.bfloat16, "BFloat16"),
                                         (torch.complex64, "ComplexFloat")], ids=str)
def test_bad_cpu_dtype(dtype, name):
    _bad(_cast_all(dtype), rf"lgl_fused: x must be float32 or float64 on CPU, got {name}")


def test_bad_num_heads_greater_than_c():
    _bad(lambda a: a.__setitem__(3, 24), r"must be a positive multiple of num_heads = 24, got C = 12")


def test_bad_negative_num_heads_and_sr_ratio():
    _bad(lambda a: a.__setitem__(3, -3), r"num_heads must be >= 1, got -3")
    _bad(lambda a: a.__setitem__(4, -2), r"sr_ratio must be >= 1, got -2")


def test_bad_zero_channels():
    def mutate(a):
        a[0], a[3] = torch.zeros(2, 36, 0), 1
        a[6], a[13] = torch.zeros(0, 0), torch.zeros(0, 0)
        a[7], a[8] = torch.zeros(0), torch.zeros(0, 1, 2, 2)
        a[9] = a[10] = a[11] = a[14] = torch.zeros(0)
    _bad(mutate, r"C = x.size\(2\) must be a positive multiple of num_heads = 1, got C = 0")


def test_bad_zero_tokens():
    # N = 0 cannot equal H*W with H, W >= 1.
    _bad(lambda a: (a.__setitem__(0, torch.zeros(2, 0, 12)), a.__setitem__(1, 0)), r"H and W must be >= 1")
    _bad(lambda a: a.__setitem__(0, torch.zeros(2, 0, 12)), r"x.size\(1\) must equal H\*W = 6\*6 = 36, got 0")


def test_bad_x_on_meta_weights_on_cpu():
    _bad(lambda a: a.__setitem__(0, a[0].to("meta")), r"qkv_weight must be on the device of x \(meta\), got cpu")


@pytest.mark.filterwarnings("ignore::UserWarning")  # quantized/nested tensors are deprecated/prototype
def test_bad_layouts_are_dispatcher_errors():
    _bad(lambda a: a.__setitem__(0, a[0].to_sparse()), r"Could not run 'edgevit::lgl_fused' with "
         r"arguments from the 'SparseCPU' backend", exc=NotImplementedError)
    _bad(lambda a: a.__setitem__(6, a[6].to_sparse()), r"'SparseCPU' backend", exc=NotImplementedError)
    _bad(lambda a: a.__setitem__(0, torch.quantize_per_tensor(a[0], 0.1, 0, torch.qint8)),
         r"'QuantizedCPU' backend", exc=NotImplementedError)
    _bad(lambda a: a.__setitem__(0, torch.nested.nested_tensor(list(a[0]))), r"'NestedTensorCPU' backend",
         exc=NotImplementedError)


def test_bad_python_argument_types():
    _bad(lambda a: a.__setitem__(1, 6.0), r"Expected a value of type 'int' for argument 'H' but instead found type 'float'")
    _bad(lambda a: a.__setitem__(6, None), r"qkv_weight is required, got None")


def test_weights_requiring_grad_and_inference_tensors():
    args = make_args(2, 6, 6, 12, 3, 2)
    for i in (6, 13):
        args[i].requires_grad_(True)
    with torch.inference_mode():  # inside inference mode: fine, no graph
        out = lgl_fused(*args)
    assert not out.requires_grad
    torch.testing.assert_close(out, lgl_reference(*args).detach(), atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        args[0] = args[0].clone()  # an inference tensor used where autograd records: torch's error
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        lgl_fused(*args)


def test_strided_and_expanded_weights_and_x_work():
    # Not bad input: any strides (transposed, expanded, offset views) are accepted and give the
    # reference's result.
    args = make_args(2, 6, 6, 12, 3, 2)
    args[6] = args[6].t().contiguous().t()                          # qkv_weight column-major
    args[13] = args[13][:, :].t().contiguous().t()
    for i in (7, 9, 10, 11, 14):
        args[i] = torch.stack([args[i], args[i]], -1)[..., 0]       # stride 2
    args[8] = args[8].permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    assert not any(args[i].is_contiguous() for i in (6, 7, 8, 9, 10, 11, 13, 14))
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), atol=1e-4, rtol=1e-4)
    args[0] = torch.randn(1, 1, 12).expand(2, 36, 12)                # stride 0 (expanded) x
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), atol=1e-4, rtol=1e-4)
    args[0] = torch.randn(3, 36, 12)[1:]                              # storage offset
    torch.testing.assert_close(lgl_fused(*args), lgl_reference(*args), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("i, value", [(5, float("nan")), (5, float("inf")), (12, -1.0), (12, float("nan"))],
                         ids=["scale-nan", "scale-inf", "eps-negative", "eps-nan"])
def test_non_finite_scale_or_eps_behave_like_reference(i, value):
    # Not rejected (the reference does not reject them either): the output is NaN like the reference's.
    args = make_args(2, 6, 6, 12, 3, 2)
    args[i] = value
    out, ref = lgl_fused(*args), lgl_reference(*args)
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().all()


def test_huge_allocation_is_an_error_not_a_crash():
    r = 2**20  # an expanded (free) prop_weight whose repacking would need ~48 TB
    _bad(lambda a: (a.__setitem__(4, r), a.__setitem__(8, torch.zeros(1).expand(12, 1, r, r))),
         r"can't allocate memory")
    _bad(lambda a: a.__setitem__(0, a[0].expand(2**40, 36, 12)), r"can't allocate memory",
         shape=(1, 6, 6, 12, 3, 2))


@pytest.mark.parametrize("r", [2, 1])
def test_bad_h_times_w_overflow_is_an_error(r):
    # In a subprocess, so a regression crashes that process, not the test run: H*W wraps around
    # int64 to N, which a plain N == H*W check accepted (then r = 2 segfaulted).
    code = f"""
    import sys, torch, edgevit_kernels
    sys.path.insert(0, {os.path.dirname(__file__)!r})
    from lgl_samples import make_args
    a = make_args(2, 6, 6, 12, 3, {r})
    a[1], a[2] = 2**62 + 9, 4   # H*W = 2**64 + 36 == 36 (mod 2**64) = N
    try:
        edgevit_kernels.lgl_fused(*a)
    except RuntimeError as e:
        print("ERROR:", e)
    """
    out = _run_python(code)
    assert out.returncode == 0, f"crashed: rc={out.returncode} {out.stderr[-2000:]}"
    assert "ERROR: lgl_fused: x.size(1) must equal H*W = 4611686018427387913*4 (overflows int64), got 36" in out.stdout, out.stdout


# ---------------------------------------------------------------- crafted prepared blobs (issue 20)
# Each in a subprocess, so a regression crashes that process, not the test run.


def _expect_error(code, message):
    out = _run_python("import sys, torch, edgevit_kernels as ek\n"
                      f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                      "from lgl_samples import make_args\n" + textwrap.dedent(code) + """
try:
    run()
except RuntimeError as e:
    print("ERROR:", e)
""")
    assert out.returncode == 0, f"crashed: rc={out.returncode} {out.stderr[-2000:]}"
    assert "ERROR: " + message in out.stdout, out.stdout


LGL_BLOB = """
a = make_args(1, 4, 4, 16, 2, 2)
blob = ek.lgl_prepare(a[6], a[7], a[8], a[9], a[10], a[11], a[13], a[14], 2).clone()
"""


def test_prepared_numel_overflow_is_an_error():
    # lgl_prepared_numel(16, 2**30) wrapped around int64 to 864.
    _expect_error("def run(): torch.ops.edgevit.lgl_prepared_numel(16, 2**30, torch.float32)",
                  "lgl_prepared_numel: sr_ratio * sr_ratio = 1073741824 * 1073741824 is too large")
    _expect_error("def run(): torch.ops.edgevit.mlp_prepared_numel(2**40, 2**40, torch.float32)",
                  "mlp_prepared_numel: the packed fc1 weight C * hidden = ")
    _expect_error("def run(): torch.ops.edgevit.patch_embed_prepared_numel(3, 8, 2**32, torch.float64)",
                  "patch_embed_prepared_numel: patch * patch * Cin = 4294967296 * 4294967296 * 3")
    _expect_error("def run(): torch.ops.edgevit.linear_prepared_numel(2**62, 2, torch.float32)",
                  "linear_prepared_numel: the packed weight in_features * out_features = ")


def test_crafted_lgl_blob_with_huge_sr_ratio_is_an_error():
    # 864 elements (the wrapped numel) with C = 16, r = 2^30: segfaulted in the workspace.
    _expect_error(LGL_BLOB + """
def run():
    b = torch.zeros(864)
    b[:16] = blob[:16]
    b[4] = 2**30
    ek.lgl_fused_prepared(torch.randn(16, 1, 16), 1, 1, 1, 2**30, 1.0, 1e-5, b)
""", "lgl_fused_prepared: prepared's header field sr_ratio must be an integer in [1, 16777216], "
     "got 1073741824")


def test_crafted_patch_embed_blob_with_zero_patch_is_an_error():
    # p = 0 divided by zero (SIGFPE).
    _expect_error("""
def run():
    blob = ek.patch_embed_prepare(torch.randn(8, 3, 4, 4), None).clone()
    blob[5] = 0
    ek.patch_embed_prepared(torch.randn(1, 3, 8, 8), blob, 8, 0)
""", "patch_embed_prepared: prepared's header field patch must be an integer in [1, 16777216], "
     "got 0")


def test_edited_flag_and_zero_hidden_are_errors():
    # A flipped pre_norm flag was accepted and changed the result; hidden = 0 was accepted.
    _expect_error(LGL_BLOB + """
def run():
    blob[5] = 1
    ek.lgl_fused_prepared(a[0], 4, 4, 2, 2, a[5], 1e-5, blob)
""", "lgl_fused_prepared: prepared's header check value is ")
    _expect_error("""
def run():
    blob = ek.mlp_prepare(torch.randn(32, 16), None, torch.randn(16, 32), None).clone()
    blob[4] = 0
    ek.mlp_fused_prepared(torch.randn(4, 16), blob)
""", "mlp_fused_prepared: prepared's header field hidden must be an integer in [1, 16777216], got 0")


@pytest.mark.parametrize("slot, value, message", [
    (1, float("nan"), "header field isa must be an integer in [0, 3], got nan"),
    (2, 1e30, "header field nr must be an integer in [1, 1024], got 1e+30"),
    (3, 16.5, "header field C must be an integer in [1, 16777216], got 16.5"),
    (5, 2.0, "header field pre_norm must be an integer in [0, 1], got 2"),
    (9, -1.0, "header field (unused) must be an integer in [0, 0], got -1"),
    (0, 1.0, "prepared was not made by edgevit::lgl_prepare (header magic 1, expected 20221023)"),
])
def test_bad_header_fields_are_named(slot, value, message):
    a = make_args(1, 4, 4, 16, 2, 2)
    blob = edgevit_kernels.lgl_prepare(a[6], a[7], a[8], a[9], a[10], a[11], a[13], a[14], 2).clone()
    blob[slot] = value
    with pytest.raises(RuntimeError, match=re.escape(message)):
        edgevit_kernels.lgl_fused_prepared(a[0], 4, 4, 2, 2, a[5], 1e-5, blob)


def test_genuine_blobs_still_equal_the_unprepared_ops():
    """The header's check value and field checks accept what *_prepare writes, for each op."""
    a = make_args(1, 4, 4, 16, 2, 2)
    w = [a[6], a[7], a[8], a[9], a[10], a[11], a[13], a[14]]
    # (lgl_fused may take the A-tile form of the fold here: equal within float32 rounding)
    torch.testing.assert_close(edgevit_kernels.lgl_fused_prepared(
        a[0], 4, 4, 2, 2, a[5], 1e-5, edgevit_kernels.lgl_prepare(*w, 2)), lgl_fused(*a),
        atol=1e-5, rtol=1e-5)
    x, w1, w2 = torch.randn(3, 16), torch.randn(24, 16), torch.randn(16, 24)
    assert torch.equal(edgevit_kernels.mlp_fused_prepared(x, edgevit_kernels.mlp_prepare(w1, None, w2, None)),
                       edgevit_kernels.mlp_fused(x, w1, None, w2, None))
