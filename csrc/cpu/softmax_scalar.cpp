// Scalar softmax micro-kernel (contract: softmax.h, lgl_fused_ukernels.h): always compiled, the
// reference the SIMD variants are tested against (tests/native), float and double.
#include <cmath>
#include <cstring>

#include "softmax.h"

namespace edgevit {
namespace cpu {
namespace {

// softmax_exp must inline into the loop for it to vectorise; see it for no-trapping-math.
#if defined(__GNUC__) && !defined(__clang__)
#define EDGEVIT_NO_TRAPPING_MATH __attribute__((optimize("no-trapping-math")))
#define EDGEVIT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define EDGEVIT_ALWAYS_INLINE
#define EDGEVIT_NO_TRAPPING_MATH
#endif

// exp for softmax, of x = s - (the row's max): x <= 0 or NaN. float: the SIMD kernels' algorithm
// (Cephes: x = n ln2 + r, degree-5 polynomial, 2^n as two exact power-of-two factors so denormal
// results and 0 are right; NaN stays NaN; ~1 ulp), branch-free so the compiler vectorises the
// softmax loop; double: std::exp. GCC if-converts the clamp (and so vectorises) only without
// -ftrapping-math, which changes no result: it only lets a comparison of a NaN that cannot trap
// here run unconditionally. x <= 0 needs no upper clamp (the SIMD kernels' exp, for any x, clamps
// at 89 too): GCC turns each clamp into selects on the result, so the upper one would be pure
// cost (the same bits without it; docs/performance-notes.md).
EDGEVIT_NO_TRAPPING_MATH EDGEVIT_ALWAYS_INLINE inline float softmax_exp(float x) {
  x = x < -104.0f ? -104.0f : x;  // exp(-104) rounds to 0 (NaN compares false: stays NaN)
  // round(x log2 e) to nearest (even): adding and removing 1.5 * 2^23 (|x log2 e| < 2^22), a
  // form the compiler keeps (no -ffast-math) and vectorises, unlike a libm call.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  // n is in [-150, 128] (NaN x: y is NaN, and n is replaced by 0 so the conversion is defined).
  const int32_t ni = int32_t(n == n ? n : 0.0f), n1 = ni >> 1, n2 = ni - n1;
  float s1, s2;
  const uint32_t b1 = uint32_t(n1 + 127) << 23, b2 = uint32_t(n2 + 127) << 23;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  return y * s1 * s2;
}
inline double softmax_exp(double x) { return std::exp(x); }

// The row's max and sum run in kLanes interleaved chains (element j in chain j % kLanes),
// combined at the end: one chain waits out an add's latency at every element
// (docs/performance-notes.md).
constexpr int64_t kLanes = 4;
static_assert(kLanes == 4, "softmax_rows_scalar combines exactly four chains");

}  // namespace

template <typename T>
EDGEVIT_NO_TRAPPING_MATH void softmax_rows_scalar(int64_t M, int64_t N, T scale, T* S, int64_t ld) {
  for (int64_t m = 0; m < M; ++m) {
    T* s = S + m * ld;
    T mx[kLanes], sum[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) mx[l] = -INFINITY, sum[l] = 0;
    for (int64_t j = 0; j < N; ++j) s[j] *= scale;
    int64_t j = 0;
    for (; j + kLanes <= N; j += kLanes)
      for (int64_t l = 0; l < kLanes; ++l)
        mx[l] = mx[l] < s[j + l] ? s[j + l] : mx[l];  // std::max, spelled out: no call under the attribute
    for (; j < N; ++j) mx[0] = mx[0] < s[j] ? s[j] : mx[0];
    const T mx01 = mx[0] < mx[1] ? mx[1] : mx[0], mx23 = mx[2] < mx[3] ? mx[3] : mx[2];
    const T row_max = mx01 < mx23 ? mx23 : mx01;
    // A row of -inf (or NaN) propagates NaN exactly as torch.softmax does.
    for (j = 0; j < N; ++j) s[j] = softmax_exp(s[j] - row_max);
    for (j = 0; j + kLanes <= N; j += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) sum[l] += s[j + l];
    for (; j < N; ++j) sum[0] += s[j];
    const T inv = T(1) / ((sum[0] + sum[1]) + (sum[2] + sum[3]));
    for (j = 0; j < N; ++j) s[j] *= inv;
  }
}

template void softmax_rows_scalar<float>(int64_t, int64_t, float, float*, int64_t);
template void softmax_rows_scalar<double>(int64_t, int64_t, double, double*, int64_t);

}  // namespace cpu
}  // namespace edgevit
