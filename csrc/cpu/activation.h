// The element-wise family: MlpUKernels::gelu (exact GELU, in place) and add (the residual);
// contracts in mlp_fused_ukernels.h. One signature each, one definition per ISA:
// activation_scalar.cpp (templates, also for double; the reference), activation_avx2.cpp,
// activation_avx512.cpp, activation_neon.cpp (each only where compiled for this architecture).
// The SIMD gemms apply the same GELU in their gemm_gelu epilogue (vmath_<isa>.h).
#pragma once

#include <cstdint>

#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

template <typename T>
void gelu_scalar(int64_t n, T* h);
template <typename T>
void add_scalar(int64_t n, const T* src, T* dst);

#define EDGEVIT_ACTIVATION_DECLS(isa)         \
  void gelu_##isa(int64_t n, float* h);       \
  void add_##isa(int64_t n, const float* src, float* dst);
EDGEVIT_ACTIVATION_DECLS(avx2)
EDGEVIT_ACTIVATION_DECLS(avx512)
EDGEVIT_ACTIVATION_DECLS(neon)
#undef EDGEVIT_ACTIVATION_DECLS

}  // namespace cpu
}  // namespace edgevit
