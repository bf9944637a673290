"""Triton forward of ``edgevit::lgl_fused`` (EdgeViT GlobalSparseAttn, eval mode).

Two launches, one intermediate:

1. ``_lgl_attn_fwd_kernel``  sample -> qkv projection -> softmax attention, writing
   ``y [B, n, C]`` (fp32, n = h*w sampled tokens). This is the only intermediate and it is
   O(B*h*w*C), i.e. 1/r^2 of the input when r > 1.
2. ``_lgl_out_fwd_kernel``   propagate (depthwise transposed conv, cropped) -> LayerNorm ->
   proj, writing every element of ``out [B, N, C]`` exactly once.

Both kernels accumulate in fp32 and round to the input dtype only at the final store.
``lgl_fused_triton`` is the host launcher; it takes exactly the op's arguments.
"""
from __future__ import annotations

import functools
import inspect
import os
from contextlib import nullcontext
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..ops import check_args

__all__ = ["lgl_fused_triton"]

_LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _sampled_token(i, W, w, r):
    # Sampled token i sits at (i // w, i % w) on the h x w grid, i.e. at map position
    # (r * (i // w), r * (i % w)); this is x[:, :, ::r, ::r] without materialising it.
    sy = i // w
    sx = i - sy * w
    return sy * r * W + sx * r


@triton.jit
def _lgl_attn_fwd_kernel(
    x_ptr,      # [B, N, C]  input dtype, arbitrary strides (stride_xb, stride_xn, stride_xc)
    wqkv_ptr,   # [3C, C]    input dtype, strides (stride_wo, stride_wi); rows = (3, heads, hd)
    bqkv_ptr,   # [3C]       contiguous; never read unless HAS_QKV_BIAS
    y_ptr,      # [B, n, C]  fp32 contiguous; head `hh` owns columns [hh*hd, (hh+1)*hd)
    stride_xb, stride_xn, stride_xc,
    stride_wo, stride_wi,
    num_heads, C, HEAD_DIM, n_tok, W, w, r,
    qk_scale,       # softmax scale * log2(e): the softmax runs in base 2
    size_bucket,    # autotune key only (coarse batch size); unused by the body
    HAS_QKV_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,   # query tokens per program
    BLOCK_N: tl.constexpr,   # key/value tokens per inner step
    BLOCK_K: tl.constexpr,   # input channels per projection step
    BLOCK_D: tl.constexpr,   # head_dim padded to a power of two >= 16
    DOT_PREC: tl.constexpr,  # "ieee" or "tf32"; only affects fp32 inputs
):
    """Grid: (B * num_heads, cdiv(n, BLOCK_M)); one program = one (batch, head, query block).

    Tiling: q [BLOCK_M, BLOCK_D] is projected once from the gathered sampled rows of x; then the
    sampled tokens are swept in BLOCK_N blocks, each block's k and v projected on the fly
    (looping over C in BLOCK_K steps) and folded into a flash-attention style online softmax.
    K/V are thus recomputed per query block -- cheap, since n <= 196 for EdgeViT at 224^2 and
    it avoids a [B, n, 3C] round trip through memory.

    Invariants: every key block holds at least one valid token (blocks start below n), so the
    running max is finite after the first block and padded keys (score -inf) get weight 0.
    Padded head-dim columns have zero weights, so they stay 0 in q, k, v and are never stored.
    """
    pid_bh = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1).to(tl.int64)
    b = pid_bh // num_heads
    hh = pid_bh - b * num_heads
    dt = x_ptr.dtype.element_ty

    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    col_q = hh * HEAD_DIM + offs_d          # row of W_qkv for q; + C for k, + 2C for v
    x_base = x_ptr + b * stride_xb

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < n_tok
    row_m = _sampled_token(offs_m, W, w, r)

    q = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < C
        xq = tl.load(x_base + row_m[:, None] * stride_xn + offs_k[None, :] * stride_xc,
                     mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        wq = tl.load(wqkv_ptr + col_q[None, :] * stride_wo + offs_k[:, None] * stride_wi,
                     mask=mask_k[:, None] & mask_d[None, :], other=0.0)
        q = tl.dot(xq, wq, q, input_precision=DOT_PREC)
    if HAS_QKV_BIAS:
        q += tl.load(bqkv_ptr + col_q, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    # Folding the scale into q costs BLOCK_M*BLOCK_D multiplies instead of one per score.
    q = (q * qk_scale).to(dt)

    if HAS_QKV_BIAS:
        bk = tl.load(bqkv_ptr + C + col_q, mask=mask_d, other=0.0).to(tl.float32)
        bv = tl.load(bqkv_ptr + 2 * C + col_q, mask=mask_d, other=0.0).to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n0 in range(0, n_tok, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n_tok
        row_n = _sampled_token(offs_n, W, w, r)
        k = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        v = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            xkv = tl.load(x_base + row_n[:, None] * stride_xn + offs_k[None, :] * stride_xc,
                          mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            wmask = mask_k[:, None] & mask_d[None, :]
            wk = tl.load(wqkv_ptr + (C + col_q)[None, :] * stride_wo + offs_k[:, None] * stride_wi,
                         mask=wmask, other=0.0)
            wv = tl.load(wqkv_ptr + (2 * C + col_q)[None, :] * stride_wo + offs_k[:, None] * stride_wi,
                         mask=wmask, other=0.0)
            k = tl.dot(xkv, wk, k, input_precision=DOT_PREC)
            v = tl.dot(xkv, wv, v, input_precision=DOT_PREC)
        if HAS_QKV_BIAS:
            k += bk[None, :]
            v += bv[None, :]

        s = tl.dot(q, tl.trans(k.to(dt)), input_precision=DOT_PREC)       # [BLOCK_M, BLOCK_N]
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(dt), v.to(dt), acc, input_precision=DOT_PREC)
        m_i = m_new

    acc = acc / l_i[:, None]
    y_offs = (b * n_tok + offs_m)[:, None] * C + col_q[None, :]
    tl.store(y_ptr + y_offs, acc, mask=mask_m[:, None] & mask_d[None, :])


@triton.jit
def _propagated(y_ptr, pw_ptr, pb_ptr, y_base, kidx, mask_t, offs_k, mask_k, RR):
    # z[t, c] = y[row(t), c] * prop_w[c, kidx(t)] + prop_b[c]: the stride-r transposed conv's
    # r x r windows never overlap, so each output token sees exactly one tap. Masked -> 0.
    m2 = mask_t[:, None] & mask_k[None, :]
    yv = tl.load(y_ptr + y_base[:, None] + offs_k[None, :], mask=m2, other=0.0)
    pw = tl.load(pw_ptr + offs_k[None, :] * RR + kidx[:, None], mask=m2, other=0.0).to(tl.float32)
    pb = tl.load(pb_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
    return tl.where(m2, yv * pw + pb[None, :], 0.0)


@triton.jit
def _lgl_out_fwd_kernel(
    y_ptr,      # [B, n, C]  fp32 contiguous (written by _lgl_attn_fwd_kernel)
    pw_ptr,     # [C, r*r]   contiguous prop weight; read only if PROPAGATE
    pb_ptr,     # [C]        prop bias;              read only if PROPAGATE
    lnw_ptr,    # [C]        LayerNorm weight;       read only if PROPAGATE
    lnb_ptr,    # [C]        LayerNorm bias;         read only if PROPAGATE
    wp_ptr,     # [C, C]     proj weight (out, in), input dtype, strides (stride_po, stride_pi)
    bp_ptr,     # [C]        proj bias; read only if HAS_PROJ_BIAS
    out_ptr,    # [B, N, C]  input dtype, contiguous
    total_tok, N, n_tok, C, W, w, r, eps,
    stride_po, stride_pi,
    size_bucket,    # autotune key only (coarse batch size); unused by the body
    PROPAGATE: tl.constexpr,
    HAS_PROJ_BIAS: tl.constexpr,
    BLOCK_T: tl.constexpr,   # output tokens per program (flattened over batch)
    BLOCK_O: tl.constexpr,   # output channels per projection step
    BLOCK_K: tl.constexpr,   # input channels per projection / statistics step
    DOT_PREC: tl.constexpr,
):
    """Grid: (cdiv(B*N, BLOCK_T),); one program = BLOCK_T output tokens x all C channels.

    Layout: tokens are flattened over (batch, H, W), so a block may straddle images. Output token
    (b, yy, xx) reads y row b*n + (yy//r)*w + xx//r with conv tap (yy%r, xx%r); the crop to H x W
    is implicit because only in-map tokens are enumerated.

    Tiling: LayerNorm statistics take two sweeps over C in BLOCK_K steps (mean, then variance
    of the centred values, both fp32); the projection then loops output channels in BLOCK_O
    blocks and input channels in BLOCK_K steps, rebuilding each normalised [BLOCK_T, BLOCK_K]
    tile from y (L1/L2 resident, r^2 tokens share a row) instead of holding all C in registers.
    Each output element is stored exactly once. With r == 1 (PROPAGATE False) this is the plain
    projection y @ W_proj^T + b.
    """
    pid = tl.program_id(0).to(tl.int64)
    offs_t = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_t = offs_t < total_tok

    if PROPAGATE:
        b = offs_t // N
        p = offs_t - b * N
        yy = p // W
        xx = p - yy * W
        sy = yy // r
        sx = xx // r
        y_base = (b * n_tok + sy * w + sx) * C
        kidx = (yy - sy * r) * r + (xx - sx * r)
        RR = r * r

        s1 = tl.zeros([BLOCK_T], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            z = _propagated(y_ptr, pw_ptr, pb_ptr, y_base, kidx, mask_t, offs_k, mask_k, RR)
            s1 += tl.sum(z, 1)
        mean = s1 / C
        s2 = tl.zeros([BLOCK_T], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            z = _propagated(y_ptr, pw_ptr, pb_ptr, y_base, kidx, mask_t, offs_k, mask_k, RR)
            zc = tl.where(mask_k[None, :], z - mean[:, None], 0.0)
            s2 += tl.sum(zc * zc, 1)
        rstd = 1.0 / tl.sqrt(s2 / C + eps)
    else:
        y_base = offs_t * C

    for o0 in range(0, C, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        mask_o = offs_o < C
        acc = tl.zeros([BLOCK_T, BLOCK_O], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            if PROPAGATE:
                z = _propagated(y_ptr, pw_ptr, pb_ptr, y_base, kidx, mask_t, offs_k, mask_k, RR)
                g = tl.load(lnw_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
                beta = tl.load(lnb_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
                a = (z - mean[:, None]) * rstd[:, None] * g[None, :] + beta[None, :]
            else:
                a = tl.load(y_ptr + y_base[:, None] + offs_k[None, :],
                            mask=mask_t[:, None] & mask_k[None, :], other=0.0)
            wt = tl.load(wp_ptr + offs_o[None, :] * stride_po + offs_k[:, None] * stride_pi,
                         mask=mask_k[:, None] & mask_o[None, :], other=0.0)
            # padded k columns have zero weight rows, so whatever `a` holds there is harmless
            acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=DOT_PREC)
        if HAS_PROJ_BIAS:
            acc += tl.load(bp_ptr + offs_o, mask=mask_o, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_t[:, None] * C + offs_o[None, :],
                 acc.to(out_ptr.dtype.element_ty),
                 mask=mask_t[:, None] & mask_o[None, :])


# ----------------------------------------------------------------------------------------------
# launch configuration
# ----------------------------------------------------------------------------------------------
# Used under TRITON_INTERPRET and pytest: small tiles so that modest test shapes still cross
# every block boundary (several query/key blocks, C split over BLOCK_K and BLOCK_O).
_FIXED_ATTN = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=2)
_FIXED_OUT = dict(BLOCK_T=32, BLOCK_O=16, BLOCK_K=16, num_warps=4, num_stages=2)

# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). Small BLOCK_M keeps the grid full at small batch;
# larger ones amortise the per-block K/V recomputation at large batch.
_ATTN_CANDIDATES = [
    (16, 64, 32, 4, 2),
    (32, 64, 32, 4, 2),
    (64, 64, 32, 4, 2),
    (64, 32, 64, 4, 3),
    (128, 64, 32, 8, 2),
    (32, 64, 16, 4, 2),
]
# (BLOCK_T, BLOCK_O, BLOCK_K, warps, stages). BLOCK_O >= C avoids rebuilding the normalised
# tile per output block.
_OUT_CANDIDATES = [
    (32, 64, 32, 4, 2),
    (64, 64, 32, 4, 3),
    (64, 128, 32, 8, 3),
    (128, 64, 32, 8, 3),
    (64, 256, 32, 8, 3),
    (128, 128, 64, 8, 3),
    (64, 64, 16, 4, 3),
]


def _p2(v: int) -> int:
    return max(16, triton.next_power_of_2(int(v)))


def _k_fits(block_k: int, C: int) -> bool:
    # 16-wide channel steps only pay off when 32 leaves a mostly empty tail (C = 36, 72, ...).
    return block_k <= _p2(C) and (block_k > 16 or C % 32 != 0)


def _prune_attn(configs, named_args, **kwargs):
    # Tiles larger than the (padded) problem only add masked work.
    C, n = named_args["C"], named_args["n_tok"]
    kept = [c for c in configs
            if c.kwargs["BLOCK_M"] <= _p2(n) and c.kwargs["BLOCK_N"] <= _p2(n)
            and _k_fits(c.kwargs["BLOCK_K"], C)]
    return kept or configs[:1]


def _prune_out(configs, named_args, **kwargs):
    C = named_args["C"]
    kept = [c for c in configs if c.kwargs["BLOCK_O"] <= _p2(C) and _k_fits(c.kwargs["BLOCK_K"], C)]
    return kept or configs[:1]


def _autotune_kwargs() -> dict:
    # Short timing per config (tuning happens once per key). Older Triton takes warmup/rep
    # instead of a do_bench hook.
    params = inspect.signature(triton.autotune).parameters
    if "do_bench" in params:
        from triton.testing import do_bench

        return {"do_bench": lambda fn, quantiles: do_bench(fn, warmup=5, rep=25, quantiles=quantiles)}
    return {"warmup": 5, "rep": 25}


@functools.lru_cache(maxsize=None)
def _tuned_kernels():
    # Built on first GPU launch, never at import: constructing an Autotuner may touch the driver.
    attn = triton.autotune(
        configs=[triton.Config(dict(BLOCK_M=m, BLOCK_N=nb, BLOCK_K=k), num_warps=nw, num_stages=ns)
                 for m, nb, k, nw, ns in _ATTN_CANDIDATES],
        key=["C", "HEAD_DIM", "n_tok", "size_bucket"],
        prune_configs_by={"early_config_prune": _prune_attn},
        **_autotune_kwargs(),
    )(_lgl_attn_fwd_kernel)
    out = triton.autotune(
        configs=[triton.Config(dict(BLOCK_T=t, BLOCK_O=o, BLOCK_K=k), num_warps=nw, num_stages=ns)
                 for t, o, k, nw, ns in _OUT_CANDIDATES],
        key=["C", "n_tok", "N", "size_bucket"],
        prune_configs_by={"early_config_prune": _prune_out},
        **_autotune_kwargs(),
    )(_lgl_out_fwd_kernel)
    return attn, out


def _use_autotune(x: Tensor) -> bool:
    # Decided per launch (not at import) so a caller can flip the environment.
    # EDGEVIT_TRITON_AUTOTUNE=0 launches one fixed config (the test suite sets it: autotuning
    # every small test shape would take minutes and make timings part of the result).
    if os.environ.get("TRITON_INTERPRET") == "1" or not x.is_cuda:
        return False
    return os.environ.get("EDGEVIT_TRITON_AUTOTUNE", "1") != "0"


def _dot_precision(x: Tensor) -> str:
    # fp32 follows torch's TF32 switch so the op matches F.linear's numerics; for 16-bit inputs
    # the value is ignored by tl.dot ("tf32" is just its default).
    if x.dtype != torch.float32:
        return "tf32"
    if x.is_cuda and torch.version.hip is None and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


# ----------------------------------------------------------------------------------------------
# host launcher
# ----------------------------------------------------------------------------------------------
def lgl_fused_triton(
    x: Tensor,
    H: int,
    W: int,
    num_heads: int,
    sr_ratio: int,
    scale: float,
    qkv_weight: Tensor,
    qkv_bias: Optional[Tensor],
    prop_weight: Optional[Tensor],
    prop_bias: Optional[Tensor],
    norm_weight: Optional[Tensor],
    norm_bias: Optional[Tensor],
    norm_eps: float,
    proj_weight: Tensor,
    proj_bias: Optional[Tensor],
) -> Tensor:
    """Forward of ``edgevit::lgl_fused``; same semantics as ``reference.lgl_reference``."""
    # SymInt / SymFloat from the dispatcher become plain numbers here.
    H, W, num_heads, r = int(H), int(W), int(num_heads), int(sr_ratio)
    scale, norm_eps = float(scale), float(norm_eps)

    torch._check(x.dtype in (torch.float32, torch.float16, torch.bfloat16),
                 lambda: f"lgl_fused: x must be float32, float16 or bfloat16 on CUDA, got {x.dtype}")
    check_args(x, H, W, num_heads, r, qkv_weight, qkv_bias, prop_weight, prop_bias,
               norm_weight, norm_bias, proj_weight, proj_bias)
    B, N, C = x.shape

    head_dim = C // num_heads
    h, w = -(-H // r), -(-W // r)
    n = h * w
    out = torch.empty((B, N, C), device=x.device, dtype=x.dtype)
    if out.numel() == 0:
        return out
    y = torch.empty((B, n, C), device=x.device, dtype=torch.float32)

    propagate = r > 1
    if propagate:
        pw = prop_weight.reshape(C, r * r).contiguous()
        pb, lnw, lnb = prop_bias.contiguous(), norm_weight.contiguous(), norm_bias.contiguous()
    else:
        pw = pb = lnw = lnb = y  # placeholders, never dereferenced
    bqkv = qkv_bias.contiguous() if qkv_bias is not None else qkv_weight
    bp = proj_bias.contiguous() if proj_bias is not None else proj_weight

    prec = _dot_precision(x)
    # Coarse batch bucket for the autotune key (small batches want small tiles to fill the
    # GPU). Both values are multiples of 16 so Triton's integer specialisation -- and hence the
    # compiled binary -- is shared between buckets.
    size_bucket = 16 if B < 16 else 32
    attn_args = (x, qkv_weight, bqkv, y,
                 x.stride(0), x.stride(1), x.stride(2),
                 qkv_weight.stride(0), qkv_weight.stride(1),
                 num_heads, C, head_dim, n, W, w, r,
                 scale * _LOG2E, size_bucket)
    attn_meta = dict(HAS_QKV_BIAS=qkv_bias is not None,
                     BLOCK_D=_p2(head_dim), DOT_PREC=prec)
    out_args = (y, pw, pb, lnw, lnb, proj_weight, bp, out,
                B * N, N, n, C, W, w, r, norm_eps,
                proj_weight.stride(0), proj_weight.stride(1), size_bucket)
    out_meta = dict(PROPAGATE=propagate, HAS_PROJ_BIAS=proj_bias is not None, DOT_PREC=prec)

    guard = torch.cuda.device(x.device) if x.is_cuda else nullcontext()
    with guard:
        if _use_autotune(x):
            attn_k, out_k = _tuned_kernels()
            attn_k[lambda m: (B * num_heads, triton.cdiv(n, m["BLOCK_M"]))](*attn_args, **attn_meta)
            out_k[lambda m: (triton.cdiv(B * N, m["BLOCK_T"]),)](*out_args, **out_meta)
        else:
            _lgl_attn_fwd_kernel[(B * num_heads, triton.cdiv(n, _FIXED_ATTN["BLOCK_M"]))](
                *attn_args, **attn_meta, **_FIXED_ATTN)
            _lgl_out_fwd_kernel[(triton.cdiv(B * N, _FIXED_OUT["BLOCK_T"]),)](
                *out_args, **out_meta, **_FIXED_OUT)
    return out
