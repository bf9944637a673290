// Scalar LayerNorm micro-kernels (contract: layernorm.h): always compiled, the reference the SIMD
// variants are tested against (tests/native), float and double.
#include <cmath>

#include "layernorm.h"

namespace edgevit {
namespace cpu {
namespace {

// Offsets go in chunks of kRstdChunk: sums over channels c run for a whole chunk of offsets at
// once (pwt row c is contiguous in d), a loop the compiler vectorises.
constexpr int64_t kRstdChunk = 16;

}  // namespace

template <typename T>
void layernorm_rows_scalar(int64_t M, int64_t C, const T* x, int64_t ldx, T eps, const T* w,
                           const T* b, T* out, int64_t ldo) {
  for (int64_t m = 0; m < M; ++m) {
    const T* xr = x + m * ldx;
    const T x0 = xr[0];  // shift (see mlp_fused_ukernels.h)
    T sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += xr[c] - x0;
    const T mean = sum / T(C);  // mean of the shifted row
    T sq = 0;
    for (int64_t c = 0; c < C; ++c) sq += ((xr[c] - x0) - mean) * ((xr[c] - x0) - mean);
    const T rstd = T(1) / std::sqrt(sq / T(C) + eps);
    T* o = out + m * ldo;
    for (int64_t c = 0; c < C; ++c) {
      const T v = ((xr[c] - x0) - mean) * rstd;
      o[c] = w ? v * w[c] + b[c] : v;
    }
  }
}

template <typename T>
void prop_rstd_scalar(int64_t M, int64_t R, int64_t C, const T* y, int64_t ldy, const T* pwt,
                      const T* pb, T eps, T* rstd) {
  if (C <= 0) return;
  for (int64_t m = 0; m < M; ++m) {
    const T* ym = y + m * ldy;
    for (int64_t d0 = 0; d0 < R; d0 += kRstdChunk) {
      const int64_t nd = std::min(kRstdChunk, R - d0);
      T sum[kRstdChunk] = {}, mean[kRstdChunk], sq[kRstdChunk] = {};
      for (int64_t c = 0; c < C; ++c)
        for (int64_t d = 0; d < nd; ++d) sum[d] += ym[c] * pwt[c * R + d0 + d] + pb[c];
      for (int64_t d = 0; d < nd; ++d) mean[d] = sum[d] / T(C);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t d = 0; d < nd; ++d) {
          const T dev = ym[c] * pwt[c * R + d0 + d] + pb[c] - mean[d];
          sq[d] += dev * dev;
        }
      for (int64_t d = 0; d < nd; ++d) rstd[m * R + d0 + d] = T(1) / std::sqrt(sq[d] / T(C) + eps);
    }
  }
}

template <typename T>
void scale_rows_scalar(int64_t rows, int64_t C, const T* src, const T* scale, const T* e,
                       T* const* dst) {
  for (int64_t t = 0; t < rows; ++t) {
    if (!dst[t]) continue;
    const T* s = src + t * C;
    for (int64_t c = 0; c < C; ++c) dst[t][c] = scale[t] * s[c] + e[c];
  }
}

#define EDGEVIT_INSTANTIATE(T)                                                                \
  template void layernorm_rows_scalar<T>(int64_t, int64_t, const T*, int64_t, T, const T*,    \
                                         const T*, T*, int64_t);                              \
  template void prop_rstd_scalar<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*,   \
                                    const T*, T, T*);                                         \
  template void scale_rows_scalar<T>(int64_t, int64_t, const T*, const T*, const T*,          \
                                     T* const*);
EDGEVIT_INSTANTIATE(float)
EDGEVIT_INSTANTIATE(double)
#undef EDGEVIT_INSTANTIATE

}  // namespace cpu
}  // namespace edgevit
