// The softmax family: LglUKernels::softmax_rows (contract in lgl_fused_ukernels.h), in place on
// rows of attention scores. One signature, one definition per ISA: softmax_scalar.cpp (template,
// also for double; the reference), softmax_avx2.cpp, softmax_avx512.cpp, softmax_neon.cpp (each
// only where compiled for this architecture).
#pragma once

#include <cstdint>

#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {

template <typename T>
void softmax_rows_scalar(int64_t M, int64_t N, T scale, T* S, int64_t ld);
void softmax_rows_avx2(int64_t M, int64_t N, float scale, float* S, int64_t ld);
void softmax_rows_avx512(int64_t M, int64_t N, float scale, float* S, int64_t ld);
void softmax_rows_neon(int64_t M, int64_t N, float scale, float* S, int64_t ld);

}  // namespace cpu
}  // namespace edgevit
