// The LayerNorm family: MlpUKernels::layernorm_rows (rows normalised in place or into out;
// contract in mlp_fused_ukernels.h) and the two halves of lgl_fused's folded LayerNorm,
// LglUKernels::prop_rstd (statistics of the propagated tokens) and scale_rows (its epilogue;
// contracts in lgl_fused_ukernels.h). One signature each, one definition per ISA:
// layernorm_scalar.cpp (templates, also for double; the reference), layernorm_avx2.cpp,
// layernorm_avx512.cpp, layernorm_neon.cpp (each only where compiled for this architecture).
#pragma once

#include <cstdint>

#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

template <typename T>
void layernorm_rows_scalar(int64_t M, int64_t C, const T* x, int64_t ldx, T eps, const T* w,
                           const T* b, T* out, int64_t ldo);
template <typename T>
void prop_rstd_scalar(int64_t M, int64_t R, int64_t C, const T* y, int64_t ldy, const T* pwt,
                      const T* pb, T eps, T* rstd);
template <typename T>
void scale_rows_scalar(int64_t rows, int64_t C, const T* src, const T* scale, const T* e,
                       T* const* dst);

#define EDGEVIT_LAYERNORM_DECLS(isa)                                                          \
  void layernorm_rows_##isa(int64_t M, int64_t C, const float* x, int64_t ldx, float eps,    \
                            const float* w, const float* b, float* out, int64_t ldo);        \
  void prop_rstd_##isa(int64_t M, int64_t R, int64_t C, const float* y, int64_t ldy,         \
                       const float* pwt, const float* pb, float eps, float* rstd);           \
  void scale_rows_##isa(int64_t rows, int64_t C, const float* src, const float* scale,       \
                        const float* e, float* const* dst);
EDGEVIT_LAYERNORM_DECLS(avx2)
EDGEVIT_LAYERNORM_DECLS(avx512)
EDGEVIT_LAYERNORM_DECLS(neon)
#undef EDGEVIT_LAYERNORM_DECLS

}  // namespace cpu
}  // namespace edgevit
