// Scalar micro-kernel of edgevit::dwconv: always compiled, the readable reference the SIMD
// variants are tested against (tests/native), and the float64 kernel of the op.
//
// Per output pixel the output row itself is the accumulator: it is set to the bias, then each
// tap in (kh, kw) order adds its product over all C channels, then the residual is added. That is
// the per-element order the contract fixes (dwconv_ukernels.h); the innermost loop runs over
// contiguous channels, so the compiler vectorises it for the build's baseline ISA.
#include <algorithm>

#include "dwconv_ukernels.h"

namespace edgevit {
namespace cpu {
namespace {

template <typename T>
void row_scalar(int64_t W, int64_t C, int64_t k, const T* const* rows, const T* wt,
                const T* bias, const T* res, T* out) {
  const int64_t p = k / 2;
  for (int64_t w = 0; w < W; ++w) {
    T* __restrict o = out + w * C;
    for (int64_t c = 0; c < C; ++c) o[c] = bias ? bias[c] : T(0);
    // Taps kw with w + kw - p inside [0, W); rows outside the map are null.
    const int64_t kw0 = std::max<int64_t>(0, p - w), kw1 = std::min<int64_t>(k, W + p - w);
    for (int64_t kh = 0; kh < k; ++kh) {
      if (!rows[kh]) continue;
      for (int64_t kw = kw0; kw < kw1; ++kw) {
        const T* __restrict in = rows[kh] + (w + kw - p) * C;
        const T* __restrict wk = wt + (kh * k + kw) * C;
        for (int64_t c = 0; c < C; ++c) o[c] += in[c] * wk[c];
      }
    }
    if (res)
      for (int64_t c = 0; c < C; ++c) o[c] += res[w * C + c];
  }
}

}  // namespace

template <typename T>
const DwconvUKernels<T>& scalar_dwconv_ukernels() {
  static const DwconvUKernels<T> table{"scalar", row_scalar<T>};
  return table;
}

template const DwconvUKernels<float>& scalar_dwconv_ukernels<float>();
template const DwconvUKernels<double>& scalar_dwconv_ukernels<double>();

}  // namespace cpu
}  // namespace edgevit
