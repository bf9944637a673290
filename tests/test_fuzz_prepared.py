"""Fuzz test of the prepared-weight blob parsers of lgl_fused_prepared, mlp_fused_prepared,
patch_embed_prepared and linear_fused_prepared (csrc/aten_util.h: prepared_header).

A blob is a plain float tensor a user can save, edit and pass back, so its header is untrusted
input. Each worker subprocess takes one op and one dtype, builds genuine blobs, and runs a few
hundred mutated calls: bit flips and boundary, huge, negative, fractional and non-finite values
in header slots, whole random headers, the same with the header's check value recomputed (so the
field and size checks behind it are reached too), truncated and extended blobs, other dtypes and
layouts, and boundary values for the op's own integer arguments. Every case must either raise
RuntimeError / ValueError / TypeError, or return a finite tensor of the right shape, equal to the
unmutated result when the blob and arguments are unchanged. A crash (SIGSEGV, SIGFPE, abort)
kills only the worker; the parent then fails with the case it was running.
"""
from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the slowest files: `pytest -m "not slow"` skips them

CASES_PER_WORKER = 400
CRAFTED_SHARE = 0.5  # the share of cases that build a blob from scratch (_crafted)
HEADER = 16
CHECK = HEADER - 1
MAGIC = {"lgl": 20221023, "mlp": 20221101, "patch_embed": 20221102, "linear": 20221103}
BOUNDARY = [0.0, -0.0, 1.0, -1.0, 2.0, 3.0, 7.0, 8.0, 15.0, 16.0, 17.0, 0.5, 1.5, -2.5,
            2.0 ** 24, 2.0 ** 24 + 2, 2.0 ** 30, 2.0 ** 31, 2.0 ** 32, 2.0 ** 53, 2.0 ** 62,
            2.0 ** 63, -2.0 ** 63, 2.0 ** 64, 1e30, -1e30, 3.0e38, float("inf"), float("-inf"),
            float("nan"), 1e-45]
INT_BOUNDARY = [0, -1, 1, 2, 3, 4, 7, 8, 16, 17, 2 ** 24, 2 ** 30, 2 ** 31, 2 ** 32 + 1, 2 ** 62,
                2 ** 63 - 1, -2 ** 63]


def header_check(values):
    """csrc/aten_util.h's header_check: FNV-1a over slots [0, CHECK) as int64, folded to 24 bits."""
    h = 1469598103934665603
    for v in values[:CHECK]:
        h ^= v & 0xFFFFFFFFFFFFFFFF
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 24) ^ (h >> 48)) & 0xFFFFFF


# ------------------------------------------------------------------------- worker side


def _setups(op, dtype):
    """(call, blobs, int_args): call(x_args, blob, int_args) runs the op; int_args are the op's
    integer arguments, mutated in some cases."""
    import torch

    import edgevit_kernels as ek
    from lgl_samples import make_args

    g = torch.Generator().manual_seed(0)

    def randn(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)

    if op == "lgl":
        a = make_args(2, 6, 5, 16, 2, 2, dtype=dtype)
        w = [a[6], a[7], a[8], a[9], a[10], a[11], a[13], a[14]]
        blobs = [ek.lgl_prepare(*w, 2), ek.lgl_prepare(*w, 2, True, randn(16), randn(16))]
        x = a[0]

        def call(blob, ia):
            H, W, heads, r = ia
            return ek.lgl_fused_prepared(x, H, W, heads, r, a[5], 1e-5, blob, 1e-5, True)
        return call, blobs, [6, 5, 2, 2], x.shape
    if op == "mlp":
        w1, w2 = randn(24, 16) * 0.3, randn(16, 24) * 0.3
        blobs = [ek.mlp_prepare(w1, randn(24), w2, randn(16)),
                 ek.mlp_prepare(w1, None, w2, None, True, randn(16), randn(16))]
        x = randn(5, 16)

        def call(blob, ia):
            return ek.mlp_fused_prepared(x, blob, 1e-5, True)
        return call, blobs, [], x.shape
    if op == "patch_embed":
        blobs = [ek.patch_embed_prepare(randn(8, 3, 4, 4), randn(8)),
                 ek.patch_embed_prepare(randn(8, 3, 4, 4), None)]
        x = randn(2, 3, 13, 16)
        nw, nb = randn(8), randn(8)

        def call(blob, ia):
            Cout, p = ia
            return ek.patch_embed_prepared(x, blob, Cout, p, True, nw, nb, 1e-5)
        return call, blobs, [8, 4], (2, 8, 3, 4)
    if op == "linear":
        blobs = [ek.linear_prepare(randn(24, 16), randn(24)), ek.linear_prepare(randn(24, 16))]
        x, res = randn(7, 16), randn(7, 24)

        def call(blob, ia):
            (N,) = ia
            return ek.linear_fused_prepared(x, blob, N, res)
        return call, blobs, [24], (7, 24)
    raise ValueError(op)


SIZE_VALUES = [0, 0, 1, 1, 2, 3, 4, 8, 16, 16, 24, -1, 2 ** 24, 2 ** 30, 2 ** 31, 2 ** 40]


def _crafted(op, dtype, rng):
    """A blob built from scratch, as an attacker would: header sizes from SIZE_VALUES (flags 0 or
    1), a right magic, ISA, nr and check value, a payload of the length the op's
    *_prepared_numel gives for those sizes (or, where that raises, a guess such as 16 + a size,
    the length a wrapping size computation would expect), an x shaped to match and integer
    arguments equal to the header's. Returns (description, blob, call)."""
    import torch

    import edgevit_kernels as ek

    nsizes, flags = {"lgl": (2, 1), "mlp": (2, 1), "patch_embed": (3, 0), "linear": (2, 0)}[op]
    sizes = [rng.choice(SIZE_VALUES) for _ in range(nsizes)] + [rng.choice([0, 1, 2, -1])
                                                                 for _ in range(flags)]
    numel_fn = {"lgl": lambda: torch.ops.edgevit.lgl_prepared_numel(*sizes[:2], dtype),
                "mlp": lambda: torch.ops.edgevit.mlp_prepared_numel(*sizes[:2], dtype),
                "patch_embed": lambda: torch.ops.edgevit.patch_embed_prepared_numel(*sizes, dtype),
                "linear": lambda: torch.ops.edgevit.linear_prepared_numel(*sizes, dtype)}[op]
    try:
        numel = numel_fn()
    except RuntimeError:
        numel = HEADER + rng.choice([0, 864, abs(sizes[0] * sizes[1])] + [abs(v) for v in sizes])
    if not HEADER <= numel <= 1 << 20:
        numel = HEADER + rng.choice([0, 16, 864])
    genuine = {"lgl": lambda: ek.lgl_prepare(*_lgl_weights(dtype)),
               "mlp": lambda: ek.mlp_prepare(torch.ones(2, 2, dtype=dtype), None,
                                             torch.ones(2, 2, dtype=dtype), None),
               "patch_embed": lambda: ek.patch_embed_prepare(torch.ones(2, 2, 1, 1, dtype=dtype),
                                                             None),
               "linear": lambda: ek.linear_prepare(torch.ones(2, 2, dtype=dtype))}[op]()
    blob = torch.randn(numel, dtype=torch.float64).to(dtype)
    blob[:3] = genuine[:3]  # magic, ISA, nr of the running ISA
    blob[3:HEADER] = 0
    for i, v in enumerate(sizes):
        blob[3 + i] = float(v)
    _forge(blob, op)

    def fits(c, hi=64):
        return 1 <= c <= hi

    if op == "lgl":
        C, r = sizes[0], sizes[1]
        B, (H, W) = rng.choice([1, 2, 16]), rng.choice([(1, 1), (2, 3), (5, 4)])
        x = torch.randn(B, H * W, C if fits(C) else 16, dtype=dtype)

        def call():
            return ek.lgl_fused_prepared(x, H, W, 1, r, 1.0, 1e-5, blob, 1e-5, rng.random() < .5)
    elif op == "mlp":
        x = torch.randn(3, sizes[0] if fits(sizes[0]) else 16, dtype=dtype)

        def call():
            return ek.mlp_fused_prepared(x, blob, 1e-5, False)
    elif op == "patch_embed":
        Cin, Cout, p = sizes
        side = p if fits(p, 8) else 8
        x = torch.randn(1, Cin if fits(Cin, 8) else 3, side, side + 1, dtype=dtype)

        def call():
            return ek.patch_embed_prepared(x, blob, Cout, p, True, None, None, 1e-5)
    else:
        x = torch.randn(3, sizes[0] if fits(sizes[0]) else 16, dtype=dtype)

        def call():
            return ek.linear_fused_prepared(x, blob, sizes[1], None)
    return f"crafted sizes={sizes} numel={numel} x={list(x.shape)}", blob, call


def _lgl_weights(dtype):
    import torch

    C = 2
    return [torch.ones(3 * C, C, dtype=dtype), None, None, None, None, None,
            torch.ones(C, C, dtype=dtype), None, 1]


def _header_ints(blob):
    """The header as int64s, or None if a slot is not a finite integer in int64 range."""
    out = []
    for v in blob[:HEADER].double().tolist():
        if v != v or abs(v) >= 2.0 ** 63 or v != int(v):
            return None
        out.append(int(v))
    return out


def _forge(blob, op):
    """Recomputes the check slot of an edited header (when its slots are integers)."""
    ints = _header_ints(blob)
    if ints is None:
        return blob
    ints[0] = MAGIC[op] if blob[0].item() == float(blob.new_tensor(MAGIC[op]).item()) else ints[0]
    blob[CHECK] = float(header_check(ints))
    return blob


def _flip_bits(blob, rng, n):
    import torch

    itemsize = blob.element_size()
    fmt = {4: "<f", 8: "<d"}[itemsize]
    for _ in range(n):
        slot, bit = rng.randrange(HEADER), rng.randrange(8 * itemsize)
        raw = bytearray(struct.pack(fmt, blob[slot].item()))
        raw[bit // 8] ^= 1 << (bit % 8)
        blob[slot] = torch.tensor(struct.unpack(fmt, bytes(raw))[0], dtype=blob.dtype)
    return blob


def _mutate(rng, op, blob, int_args):
    """(kind, blob, int_args) for one case; blob may be replaced by another tensor."""
    import torch

    b = blob.clone()
    ia = list(int_args)
    kind = rng.choice(["bitflip", "boundary", "boundary-forged", "random-header",
                       "random-header-forged", "offset-forged", "truncate", "extend", "dtype",
                       "layout", "int-arg", "unchanged"])
    if kind == "bitflip":
        _flip_bits(b, rng, rng.choice([1, 1, 2, 3]))
    elif kind.startswith("boundary"):
        for _ in range(rng.choice([1, 1, 2])):
            b[rng.randrange(HEADER)] = rng.choice(BOUNDARY)
        if kind.endswith("forged"):
            _forge(b, op)
    elif kind.startswith("random-header"):
        for s in range(HEADER):
            if s > 0 or rng.random() < 0.5:  # keep the magic half of the time
                b[s] = rng.choice(BOUNDARY + [float(rng.randrange(-40, 40))])
        if kind.endswith("forged"):
            _forge(b, op)
    elif kind == "offset-forged":
        # A plausible edit: one op field (slots 1-7) off by a little, check value recomputed.
        s = rng.randrange(1, 8)
        b[s] = b[s] + rng.choice([-2, -1, 1, 2, 16])
        _forge(b, op)
    elif kind == "truncate":
        b = b[:rng.choice([0, 1, HEADER - 1, HEADER, HEADER + 1, b.numel() // 2, b.numel() - 1])]
        b = b.clone()
    elif kind == "extend":
        b = torch.cat([b, b.new_zeros(rng.choice([1, 7, 64]))])
    elif kind == "dtype":
        b = b.to(rng.choice([torch.float16, torch.bfloat16, torch.int32, torch.int64,
                             torch.float64 if b.dtype == torch.float32 else torch.float32]))
    elif kind == "layout":
        b = rng.choice([b.view(1, -1), torch.stack([b, b], 1)[:, 0], b.unsqueeze(0).expand(2, -1)])
    elif kind == "int-arg":
        if ia:
            ia[rng.randrange(len(ia))] = rng.choice(INT_BOUNDARY)
        else:
            kind = "unchanged"
    return kind, b, ia


def worker(op, dtype_name, seed, n):
    """Runs n cases; prints one JSON line of counts. Progress goes to stderr before each case,
    so the parent can name the case that crashed the process."""
    import torch

    dtype = getattr(torch, dtype_name)
    call, blobs, int_args, out_shape = _setups(op, dtype)
    base = [call(b, int_args) for b in blobs]
    rng = random.Random(seed)
    counts = {"raised": 0, "accepted_equal": 0, "accepted_changed": 0}
    bad = []
    for i in range(n):
        if rng.random() < CRAFTED_SHARE:
            desc, blob, crafted_call = _crafted(op, dtype, rng)
            print(f"case {i}: {desc} header={blob[:HEADER].tolist()}", file=sys.stderr, flush=True)
            try:
                out = crafted_call()
            except (RuntimeError, ValueError, TypeError):
                counts["raised"] += 1
                continue
            counts["accepted_changed"] += 1
            if not bool(torch.isfinite(out).all()):
                bad.append(f"case {i} ({desc}): accepted with a non-finite result")
            continue
        k = rng.randrange(len(blobs))
        kind, blob, ia = _mutate(rng, op, blobs[k], int_args)
        print(f"case {i}: {kind} header={blob[:HEADER].tolist() if blob.dim() == 1 else '2-D'} "
              f"int_args={ia} numel={blob.numel()}", file=sys.stderr, flush=True)
        try:
            out = call(blob, ia)
        except (RuntimeError, ValueError, TypeError):
            counts["raised"] += 1
            continue
        same_input = (blob.dtype == blobs[k].dtype and blob.shape == blobs[k].shape
                      and torch.equal(blob, blobs[k]) and ia == int_args)
        ok = tuple(out.shape) == tuple(out_shape) and bool(torch.isfinite(out).all())
        if same_input:
            ok = ok and torch.equal(out, base[k])
            counts["accepted_equal"] += 1
        else:
            counts["accepted_changed"] += 1
        if not ok:
            bad.append(f"case {i} ({kind}): accepted with a wrong result")
    print(json.dumps({"counts": counts, "bad": bad[:5]}), flush=True)


# ------------------------------------------------------------------------- parent side

WORKERS = [(op, dt) for op in ("lgl", "mlp", "patch_embed", "linear")
           for dt in ("float32", "float64")]
TOTALS = {}


@pytest.mark.parametrize("op,dtype", WORKERS, ids=[f"{o}-{d}" for o, d in WORKERS])
def test_fuzz_prepared_blobs(op, dtype):
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import test_fuzz_prepared as t; "
            f"t.worker({op!r}, {dtype!r}, {WORKERS.index((op, dtype))}, {CASES_PER_WORKER})")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    last_case = [l for l in p.stderr.splitlines() if l.startswith("case ")][-1:]
    assert p.returncode == 0, (f"worker {op}/{dtype} died with rc {p.returncode} in "
                               f"{last_case}:\n{p.stderr[-3000:]}")
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert not result["bad"], result["bad"]
    counts = result["counts"]
    assert sum(counts.values()) == CASES_PER_WORKER
    # Both outcomes are exercised: the worker is not rejecting everything (e.g. a broken setup).
    assert counts["raised"] > 0 and counts["accepted_equal"] > 0
    TOTALS[(op, dtype)] = counts
    print(f"\nfuzz {op}/{dtype}: {counts}")


def test_zz_fuzz_totals():
    if len(TOTALS) != len(WORKERS):
        pytest.skip("the fuzz workers did not all run in this session")
    total = {k: sum(c[k] for c in TOTALS.values()) for k in next(iter(TOTALS.values()))}
    print(f"\nfuzz totals over {len(WORKERS)} workers: {sum(total.values())} cases, {total}")
    assert sum(total.values()) == CASES_PER_WORKER * len(WORKERS)
