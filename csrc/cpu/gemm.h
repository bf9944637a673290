// The gemm + packing family: C = bias + A * B over packed-B panels (layout, contract and the
// epilogue variants in lgl_fused_ukernels.h: LglUKernels::gemm, gemm_gelu, gemm_add,
// gemm_scatter, pack_weight_t), the product every op runs on. One signature per entry point,
// one definition per ISA: gemm_scalar.cpp (templates, also for double; the reference),
// gemm_avx2.cpp, gemm_avx512.cpp, gemm_neon.cpp (each only where compiled for this
// architecture), the SIMD ones through the shared driver of gemm_simd.h.
#pragma once

#include <cstdint>

#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {

// Packed-B panel width of each ISA's gemm (LglUKernels::nr).
constexpr int kNR_scalar = 8;
constexpr int kNR_avx2 = 8;
constexpr int kNR_avx512 = 16;
constexpr int kNR_neon = 8;

template <typename T>
void gemm_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                 const T* bias, T* C, int64_t ldc);
template <typename T>
void gemm_gelu_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                      const T* bias, T* C, int64_t ldc);
template <typename T>
void gemm_add_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                     const T* bias, const T* R, int64_t ldr, T* C, int64_t ldc);
template <typename T>
void pack_weight_t_scalar(const T* w, int64_t N, int64_t K, int64_t ldw, int64_t p0, int64_t p1,
                          T* dst);

#define EDGEVIT_GEMM_DECLS(isa)                                                                 \
  void gemm_##isa(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,                \
                  const float* Bp, const float* bias, float* C, int64_t ldc);                  \
  void gemm_gelu_##isa(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,           \
                       const float* Bp, const float* bias, float* C, int64_t ldc);             \
  void gemm_add_##isa(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,            \
                      const float* Bp, const float* bias, const float* R, int64_t ldr,         \
                      float* C, int64_t ldc);                                                  \
  void gemm_scatter_##isa(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,        \
                          const float* Bp, const float* bias, const float* scale,              \
                          const float* e, float* const* dst);                                  \
  void pack_weight_t_##isa(const float* w, int64_t N, int64_t K, int64_t ldw, int64_t p0,      \
                           int64_t p1, float* dst);
EDGEVIT_GEMM_DECLS(avx2)
EDGEVIT_GEMM_DECLS(avx512)
EDGEVIT_GEMM_DECLS(neon)
#undef EDGEVIT_GEMM_DECLS

}  // namespace cpu
}  // namespace edgevit
