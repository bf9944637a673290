// Micro-kernels of edgevit::dwconv (depthwise k x k convolution, stride 1, zero padding k/2, on
// channels_last maps, optional fused residual): the per-ISA inner loop the driver (dwconv.cpp)
// runs once per output row. Torch-free: plain pointers and sizes.
//
// Every ISA variant fills one DwconvUKernels<float> table with the same signature; the scalar
// variant (dwconv_scalar.cpp) is always compiled, doubles as the readable reference, and is also
// instantiated for double. ISA files get their ISA flags from setup.py / the native harness
// Makefile (per file), never from a whole-build -march.
//
// Layouts: a map row is W pixels of C channels, [W, C] contiguous (a row of a channels_last
// [B, C, H, W] tensor); the weights are re-laid out once per call as wt[k*k, C], tap
// (kh*k + kw) major, so one tap's channels are contiguous and load as vectors.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgevit {
namespace cpu {

// The largest kernel side a table supports (odd sides 1, 3, 5, 7).
constexpr int64_t kDwconvMaxK = 7;

template <typename T>
struct DwconvUKernels {
  const char* name;  // "scalar", "avx2", "avx512", "neon"

  // One output row of all C channels: for w < W, c < C,
  //   out[w*C + c] = bias[c]                                         (0 when bias is null)
  //                + sum over kh < k, kw < k (in that order) of
  //                    rows[kh][(w + kw - k/2)*C + c] * wt[(kh*k + kw)*C + c]
  //                + res[w*C + c]                                    (when res is non-null)
  // where taps outside the map are skipped: rows[kh] null (an input row above or below the map)
  // or w + kw - k/2 outside [0, W). The per-element summation order is exactly that one (bias,
  // taps in (kh, kw) order, residual), whatever the ISA or blocking, so variants differ only by
  // FMA contraction and results do not depend on threads. k is odd, 1 <= k <= kDwconvMaxK.
  // Reads rows[kh][0, W*C) (non-null ones), wt[0, k*k*C), bias[0, C), res[0, W*C); writes only
  // out[0, W*C). out may not alias the inputs.
  void (*row)(int64_t W, int64_t C, int64_t k, const T* const* rows, const T* wt, const T* bias,
              const T* res, T* out);
};

template <typename T>
const DwconvUKernels<T>& scalar_dwconv_ukernels();

// Each returns null when that ISA's code is not compiled into this build (wrong architecture).
// Whether the running CPU supports it is decided by isa.cpp, not here.
const DwconvUKernels<float>* avx2_dwconv_ukernels();
const DwconvUKernels<float>* avx512_dwconv_ukernels();
const DwconvUKernels<float>* neon_dwconv_ukernels();

}  // namespace cpu
}  // namespace edgevit
