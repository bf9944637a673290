// The fused CPU driver of edgevit::lgl_fused (sample -> attend -> propagate -> LayerNorm -> proj),
// torch-free so the native harness (tests/native) can build and test it without ATen.
//
// Four phases, each a list of independent tasks whose results do not depend on how tasks are
// spread over threads (every output element is written by exactly one task, with a fixed
// summation order), so the output is bitwise identical for any thread count:
//   0. pack : per panel of nr output channels: qkv_weight^T and proj_weight^T into the
//             micro-kernels' packed-B layout (workspace), so both gemms stream their weights
//   1. qkv  : per (batch, block of kQkvRows sampled tokens): gather the sampled rows, one gemm
//             against packed qkv_weight^T            -> workspace qkv [B, n, 3C]
//   2. attn : per (batch, head, block of kAttnRows queries): S = q k^T, softmax, S v
//                                                     -> workspace y   [B, n, C]
//   3. out  : per (batch, block of kOutRows output tokens): propagate + LayerNorm each token into
//             a [kOutRows, C] tile, one gemm against packed proj_weight^T, written straight
//             into the output rows (r = 1: the gemm reads y directly).
// Intermediates: the workspace, O(h*w*C) per batch element, and per-thread tiles of O(n + C)
// rows; nothing of size B x N x C besides the output.
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
int64_t lgl_workspace_size(int64_t B, int64_t H, int64_t W, int64_t C, int64_t r, int64_t nr);

template <typename T>
void lgl_fused_forward(const LglArgs<T>& a, const LglUKernels<T>& uk, T* workspace,
                       const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace edgevit
