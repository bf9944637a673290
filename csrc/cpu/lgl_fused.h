// The fused CPU driver of edgevit::lgl_fused (sample -> attend -> propagate -> LayerNorm -> proj),
// torch-free so the native harness (tests/native) can build and test it without ATen.
//
// Phases, each a list of independent tasks run through a ParallelFor. Every output element is
// written by exactly one task and summed in one fixed order (the micro-kernels' per-element
// arithmetic does not depend on the blocking), and the blocking never depends on the thread
// count, so the output is bitwise identical for any thread count:
//   1. qkv : per (block of <= 6 panels of qkv_weight^T, batch, block of <= 64 sampled tokens):
//              gather the sampled rows (strided x), one gemm  -> workspace qkv [B, n, 3C].
//              Weight panels are packed per thread when its column block changes, so they are
//              used while still in cache.
//   2. attn: per (batch, head, block of <= 64 queries): S = q k^T, softmax, S v
//              -> workspace y [B, n, C]. A thread packs a head's k^T and v once, when its head
//              changes (tasks run head by head).
//   3. out : r > 1: per (batch, block of <= 64 output tokens): propagate + LayerNorm the tokens
//              into a tile, one gemm against proj_weight^T (packed once per thread), written
//              straight into the output rows; r = 1: per (panel block, batch, token block), the
//              gemm reads y.
// Blocks are near-equal in size so that a static split over threads stays balanced.
// Intermediates: the workspace (qkv and y, O(h*w*C) per batch element) and per-thread tiles
// (O(64 * (n + C)) plus packed weight, k^T and v panels); nothing of size B x N x C but the output.
#pragma once

#include <cstdint>
#include <functional>

#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {

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
};

// Runs fn(begin, end) over [0, n) split into chunks, possibly concurrently.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t, int64_t)>& fn)>;

// Elements of the shared workspace lgl_fused_forward needs.
int64_t lgl_workspace_size(int64_t B, int64_t H, int64_t W, int64_t C, int64_t num_heads,
                           int64_t r, int64_t nr);

template <typename T>
void lgl_fused_forward(const LglArgs<T>& a, const LglUKernels<T>& uk, T* workspace,
                       const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace edgevit
