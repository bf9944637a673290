// Micro-kernels of edgevit::mlp_fused (the transformer MLP: optional LayerNorm, fc1, GELU, fc2,
// optional residual; driver in mlp_fused.cpp). Torch-free: plain pointers, sizes and strides.
//
// The two products run on the lgl_fused gemm table (LglUKernels<T>, packed-B layout of
// lgl_fused_ukernels.h) of the same ISA: gemm_gelu and gemm_add apply gelu and add below in the
// gemm's epilogue (the same bits). This table holds the element-wise steps around them; gelu and
// add stay as the reference of those epilogues and for callers without a gemm (linear_fused).
// The scalar variants (activation_scalar.cpp, layernorm_scalar.cpp) are always compiled, are the
// readable reference and are also instantiated for double; the ISA files get their flags per
// file, like the lgl ones. Each ISA's table is assembled in ukernels_<isa>.cpp.
#pragma once

#include <cstdint>

namespace edgevit {
namespace cpu {

template <typename T>
struct MlpUKernels {
  const char* name;  // "scalar", "avx2", "avx512", "neon": the LglUKernels table it pairs with

  // In place for i < n: h[i] = h[i] / 2 * (1 + erf(h[i] / sqrt(2)))  (exact GELU, nn.GELU()).
  // Float SIMD variants use erf(x) = x P(x^2) / Q(x^2) on x clamped to [-4, 4] (|error| <=
  // 4.5e-7, so |GELU error| <= 2.1e-7 (1 + |x|)); scalar uses std::erf.
  void (*gelu)(int64_t n, T* h);

  // LayerNorm of rows. For m < M, c < C:
  //   out[m*ldo + c] = (x[m*ldx + c] - mean) / sqrt(var + eps) [* w[c] + b[c]],
  // with the two-pass statistics of row m (mean, then the mean of squared deviations), computed
  // on the row shifted by its first element: u[c] = x[c] - x[0] (exact while the row's values
  // are within a factor of two of each other), mean_u, d[c] = u[c] - mean_u. So a large common
  // offset costs nothing: the mean is never rounded at the offset's magnitude. w and b are the
  // affine weight and bias, both null or both given (mlp_fused folds its LayerNorm's affine into
  // fc1 and passes null; patch_embed applies its own). out may equal x (ldo == ldx): in place.
  void (*layernorm_rows)(int64_t M, int64_t C, const T* x, int64_t ldx, T eps, const T* w,
                         const T* b, T* out, int64_t ldo);

  // For i < n: dst[i] += src[i]  (the residual).
  void (*add)(int64_t n, const T* src, T* dst);
};

template <typename T>
const MlpUKernels<T>& scalar_mlp_ukernels();

// Null when that ISA's code is not compiled into this build (see lgl_fused_ukernels.h).
const MlpUKernels<float>* avx2_mlp_ukernels();
const MlpUKernels<float>* avx512_mlp_ukernels();
const MlpUKernels<float>* neon_mlp_ukernels();

}  // namespace cpu
}  // namespace edgevit
