// The fused CPU driver of edgevit::lgl_fused (sample -> attend -> propagate -> LayerNorm -> proj),
// torch-free so the native harness (tests/native) can build and test it without ATen.
//
// Phases, each a list of independent tasks run through a ParallelFor. Every output element is
// written by exactly one task and summed in one fixed order (the micro-kernels' per-element
// arithmetic does not depend on the blocking), and the blocking never depends on the thread
// count, so the output is bitwise identical for any thread count:
//   0. weights (lgl_prepare_weights, separate so it can be cached): per block of channels, the
//              fold's vectors; then per packed panel: qkv_weight^T, and for r > 1 the folded
//              output weight Wf (below), for r = 1 proj_weight^T.
//   1. qkv : per (block of <= 6 qkv panels, batch, block of <= 64 sampled tokens): gather the
//              sampled rows (strided x), standardise them (pre_norm), one gemm
//              -> workspace qkv [B, n, 3C].
//   2. attn: per (batch, head, block of <= 64 queries): S = q k^T, softmax, S v
//              -> workspace y [B, n, C]. A thread packs a head's k^T and v once, when its head
//              changes (tasks run head by head).
//   3. out : r > 1: (a) per (batch, block of <= 64 sampled tokens), or within step 2's tasks
//              when there is one head: the LayerNorm statistics (rstd) of every propagated
//              token -> workspace [B, n, r*r]; (b) per (group of window offsets starting on a
//              Wf panel, batch, block of <= 32 sampled tokens): the folded propagate + LayerNorm
//              + projection below, written straight into the output rows. r = 1: per (panel
//              block, batch, token block), one gemm reads y. Either way the residual (if any)
//              is added to each output row right after it is stored, while it is in cache.
//
// The fold (r > 1). Output token (window m, offset d) is proj(LayerNorm(z)) with
// z[c] = y[m,c] * pw[d,c] + pb[c]. Writing G[c,o] = g[c] * Wp[o,c] and G' = G minus its mean
// over c (so sum_c (z[c] - mean z) G[c,o] = sum_c z[c] G'[c,o]), it is
//   out[o] = rstd(m,d) * (sum_c y[m,c] Wf[c, d*C + o] + kb[o]) + e[o],
//   Wf[c, d*C + o] = pw[d,c] * G'[c,o],   kb[o] = sum_c pb[c] G'[c,o],
//   e[o] = sum_c b[c] Wp[o,c] + bp[o],   rstd(m,d) = 1 / sqrt(var_c(z) + eps).
// So propagation, normalisation and projection are one gemm per block of sampled tokens,
// y[rows, C] x Wf[C, r*r*C] (no lane of a vector idle whatever C) -- or, for weights prepared
// for one call when the panel width nr divides C, r*r gemms (y[rows] * pw[d]) x G'[C, C] (the
// A-tile form: the same sums with the per-channel factor applied to A, R times less to build)
// --,
// the two-pass statistics of each propagated token (prop_rstd, offsets in vector lanes), and
// an epilogue that scales each token's C columns, adds e and stores them at the token's place
// (scale_rows, or on the gemm's register tiles where nr divides C: gemm_scatter; tokens of a
// window cropped off the map are dropped). Neither z nor the normalised tokens are ever stored. The
// mean is removed exactly by G' (its columns sum to zero up to rounding), so a large common
// offset in z costs what it costs the reference, which rounds z itself.
// Intermediates: the workspace (qkv and y, O(h*w*C) per batch element), the prepared weights
// (O(r*r*C*C), O(C*C) in the A-tile form) and per-thread tiles (O(64 * (n + C)),
// 32 * r*r*C for the folded output, k^T and v panels); nothing of size B x N x C but the output.
#pragma once

#include <cstdint>
#include <functional>

#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

// The op's arguments. lgl_prepare_weights reads C, r and the weights and biases; after it,
// lgl_fused_forward reads only the sizes, scale, eps, x and out (the weights buffer holds the
// rest, biases included).
template <typename T>
struct LglArgs {
  int64_t B, H, W, C, num_heads, r;
  T scale, eps;
  const T* x;                       // [B, H*W, C] with element strides below
  int64_t x_sb, x_sn, x_sc;
  const T* qkv_w;                   // [3C, C], row-major contiguous
  const T* qkv_b;                   // [3C] or null
  const T* prop_w;                  // [r*r, C]: offset (di*r + dj) major; r > 1 only
  const T* prop_b;                  // [C]; r > 1 only
  const T* norm_w;                  // [C]; r > 1 only
  const T* norm_b;                  // [C]; r > 1 only
  const T* proj_w;                  // [C, C], row-major contiguous
  const T* proj_b;                  // [C] or null
  T* out;                           // [B, H*W, C], contiguous
  // Optional input LayerNorm and residual (SelfAttn's x + attn(norm1(x)) in one pass):
  //   out = [x +] op(pre_norm ? LayerNorm(x) : x).
  // lgl_prepare_weights folds the LayerNorm's affine into qkv (W'[j,c] = W[j,c] g[c],
  // b'[j] = b[j] + sum_c W[j,c] beta[c]), so lgl_fused_forward only standardises the sampled
  // rows it gathers (the op reads no other token of its input): r*r times fewer rows than a
  // LayerNorm of the whole map. The residual is added in the output tasks, as each token is
  // stored; it needs x_sc == 1.
  bool pre_norm;                    // both phases (the same value for both)
  const T* pre_w;                   // [C] or null: the LayerNorm's weight (lgl_prepare_weights)
  const T* pre_b;                   // [C] or null: its bias
  T pre_eps;                        // its eps (lgl_fused_forward)
  bool residual;                    // lgl_fused_forward
  // The A-tile form of the fold where it applies (nr divides C; see lgl_fused.cpp): cheaper to
  // build, a little slower to run, so lgl_fused asks for it when building Wf would cost more
  // than scaling A (r*r*C >= B*H*W) and lgl_prepare never does. Both phases, the same value.
  bool a_tile;
};

// Runs fn(begin, end) over [0, n) split into chunks, possibly concurrently.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t, int64_t)>& fn)>;

// Elements of the prepared-weights buffer (lgl_prepare_weights) for these C, r, a_tile and a
// table of panel width nr.
int64_t lgl_weights_size(int64_t C, int64_t r, int64_t nr, bool a_tile = false);

// Phase 0: packs qkv_weight^T and builds the folded output weights (r > 1) or packs
// proj_weight^T (r = 1) into `weights`. Reads only the weights of a (C, r, qkv_w, prop_w, prop_b,
// norm_w, norm_b, proj_w, proj_b), so the result can be reused for any x while they do not
// change (the ATen layer caches it). Deterministic: the same inputs give the same bits.
template <typename T>
void lgl_prepare_weights(const LglArgs<T>& a, const LglUKernels<T>& uk, T* weights,
                         const ParallelFor& parallel_for);

// Elements of the shared workspace lgl_fused_forward needs.
int64_t lgl_workspace_size(int64_t B, int64_t H, int64_t W, int64_t C, int64_t num_heads,
                           int64_t r, int64_t nr);

// Phases 1-3, with `weights` prepared by lgl_prepare_weights from the same weights, table and
// pre_norm. row_uk (the row-op table of uk's ISA: layernorm_rows, add) is required when
// a.pre_norm or a.residual, and unused otherwise.
template <typename T>
void lgl_fused_forward(const LglArgs<T>& a, const LglUKernels<T>& uk, const T* weights,
                       T* workspace, const ParallelFor& parallel_for,
                       const MlpUKernels<T>* row_uk = nullptr);

}  // namespace cpu
}  // namespace edgevit
