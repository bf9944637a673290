// The fused CPU driver of edgevit::linear_fused: a Linear layer on rows with the residual added
// in the same pass, out = x W^T + b [+ residual]. In EdgeViT it is LocalAgg's 1x1 convolutions
// on the [B, H, W, C] view of a channels_last map (BatchNorm folded in by the model), the second
// one with the block's residual. Torch-free (tests/native builds it without ATen).
//
//   prepare (linear_prepare_weights, cached by the caller): W^T packed for the gemm, the bias.
//   forward (linear_forward): per block of <= 64 rows, one task: one gemm straight into the
//     output rows, bias and residual added in its epilogue (gemm / gemm_add).
// Every output element is written by one task in a fixed order: bitwise identical for any
// thread count. No intermediate beyond the output.
#pragma once

#include <cstdint>

#include "lgl_fused.h"  // ParallelFor
#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

template <typename T>
struct LinearArgs {
  int64_t M, K, N;     // rows, in features, out features
  const T* weight;     // [N, K] row-major contiguous (prepare)
  const T* bias;       // [N] or null (prepare)
  const T* x;          // [M, K] contiguous (forward)
  const T* residual;   // [M, N] contiguous or null (forward)
  T* out;              // [M, N] contiguous (forward)
};

int64_t linear_weights_size(int64_t K, int64_t N, int64_t nr);

template <typename T>
void linear_prepare_weights(const LinearArgs<T>& a, const LglUKernels<T>& gemm_uk, T* weights);

template <typename T>
void linear_forward(const LinearArgs<T>& a, const LglUKernels<T>& gemm_uk, const T* weights,
                    const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace edgevit
