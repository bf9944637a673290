// Scalar micro-kernels of edgevit::lgl_fused: always compiled, the reference the SIMD variants
// are tested against (tests/native). Same loop structure as the SIMD files: an MR x NR register
// tile over a packed-B panel, k ascending, bias first.
#include <algorithm>
#include <cmath>

#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {
namespace {

constexpr int64_t kMR = 4;
constexpr int64_t kNR = 8;

template <typename T>
void gemm_scalar(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                 const T* bias, T* C, int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += kNR) {
    const T* panel = Bp + (n0 / kNR) * K * kNR;
    const int64_t nn = std::min(kNR, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += kMR) {
      const int64_t mm = std::min(kMR, M - m0);
      T acc[kMR][kNR];
      for (int64_t i = 0; i < kMR; ++i)
        for (int64_t j = 0; j < kNR; ++j) acc[i][j] = (bias && j < nn) ? bias[n0 + j] : T(0);
      for (int64_t k = 0; k < K; ++k) {
        const T* b = panel + k * kNR;
        for (int64_t i = 0; i < mm; ++i) {
          const T a = A[(m0 + i) * lda + k];
          for (int64_t j = 0; j < kNR; ++j) acc[i][j] += a * b[j];
        }
      }
      for (int64_t i = 0; i < mm; ++i)
        for (int64_t j = 0; j < nn; ++j) C[(m0 + i) * ldc + n0 + j] = acc[i][j];
    }
  }
}

template <typename T>
void softmax_rows_scalar(int64_t M, int64_t N, T scale, T* S, int64_t ld) {
  for (int64_t m = 0; m < M; ++m) {
    T* s = S + m * ld;
    T mx = -INFINITY;
    for (int64_t j = 0; j < N; ++j) {
      s[j] *= scale;
      mx = std::max(mx, s[j]);
    }
    // A row of -inf (or NaN) propagates NaN exactly as torch.softmax does.
    T sum = 0;
    for (int64_t j = 0; j < N; ++j) {
      s[j] = std::exp(s[j] - mx);
      sum += s[j];
    }
    const T inv = T(1) / sum;
    for (int64_t j = 0; j < N; ++j) s[j] *= inv;
  }
}

template <typename T>
void prop_rstd_scalar(int64_t M, int64_t R, int64_t C, const T* y, int64_t ldy, const T* pwt,
                      const T* pb, T eps, T* rstd) {
  if (C <= 0) return;
  for (int64_t m = 0; m < M; ++m) {
    const T* ym = y + m * ldy;
    for (int64_t d = 0; d < R; ++d) {
      T sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += ym[c] * pwt[c * R + d] + pb[c];
      const T mean = sum / T(C);
      T sq = 0;
      for (int64_t c = 0; c < C; ++c) {
        const T dev = ym[c] * pwt[c * R + d] + pb[c] - mean;
        sq += dev * dev;
      }
      rstd[m * R + d] = T(1) / std::sqrt(sq / T(C) + eps);
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

template <typename T>
void pack_weight_t_scalar(const T* w, int64_t N, int64_t K, int64_t ldw, int64_t p0, int64_t p1,
                          T* dst) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kNR, nn = std::min(kNR, N - n0);
    T* d = dst + p * K * kNR;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t j = 0; j < nn; ++j) d[k * kNR + j] = w[(n0 + j) * ldw + k];
      for (int64_t j = nn; j < kNR; ++j) d[k * kNR + j] = T(0);
    }
  }
}

}  // namespace

template <typename T>
void pack_b(const T* src, int64_t K, int64_t N, int64_t sk, int64_t sn, int64_t nr, T* dst) {
  for (int64_t n0 = 0; n0 < N; n0 += nr) {
    const int64_t nn = std::min(nr, N - n0);
    for (int64_t k = 0; k < K; ++k) {
      T* d = dst + (n0 / nr) * K * nr + k * nr;
      const T* s = src + k * sk + n0 * sn;
      for (int64_t j = 0; j < nn; ++j) d[j] = s[j * sn];
      for (int64_t j = nn; j < nr; ++j) d[j] = T(0);
    }
  }
}

template <typename T>
const LglUKernels<T>& scalar_ukernels() {
  static const LglUKernels<T> table{"scalar",         kNR,
                                    gemm_scalar<T>,   softmax_rows_scalar<T>,
                                    prop_rstd_scalar<T>, scale_rows_scalar<T>,
                                    pack_weight_t_scalar<T>};
  return table;
}

template void pack_b<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*);
template void pack_b<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, double*);
template const LglUKernels<float>& scalar_ukernels<float>();
template const LglUKernels<double>& scalar_ukernels<double>();

}  // namespace cpu
}  // namespace edgevit
