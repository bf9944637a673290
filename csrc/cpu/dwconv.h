// The CPU driver of edgevit::dwconv (depthwise k x k convolution, stride 1, zero padding k/2,
// optional fused residual) on channels_last maps, torch-free so the native harness
// (tests/native) can build and test it without ATen.
//
// Tasks are output rows (b, h), B*H of them, run through a ParallelFor; each computes all W*C
// elements of its row with one micro-kernel call (dwconv_ukernels.h) from the up-to-k input
// rows around h (null above or below the map). Every output element is written by exactly one
// task, in one fixed summation order, and the blocking does not depend on the thread count, so
// the output is bitwise identical for any thread count. No scratch: the only intermediate is
// the weights re-laid out [k*k, C], which the caller provides.
#pragma once

#include <cstdint>

#include "dwconv_ukernels.h"
#include "lgl_fused.h"  // ParallelFor

namespace edgevit {
namespace cpu {

template <typename T>
struct DwconvArgs {
  int64_t B, C, H, W, k;  // k odd, 1 <= k <= kDwconvMaxK
  const T* x;             // [B, H, W, C] contiguous (a channels_last [B, C, H, W] map)
  const T* wt;            // [k*k, C]: the [C, 1, k, k] weight with tap (kh*k + kw) major
  const T* bias;          // [C] or null
  bool residual;          // add x to the output
  T* out;                 // [B, H, W, C] contiguous; may not alias x
};

// out = depthwise_conv(x, weight) + bias (+ x): B*H tasks (one per output row) through
// parallel_for.
template <typename T>
void dwconv_forward(const DwconvArgs<T>& a, const DwconvUKernels<T>& uk,
                    const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace edgevit
