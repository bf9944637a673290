// The CPU driver of edgevit::dwconv: see dwconv.h.
#include "dwconv.h"

namespace edgevit {
namespace cpu {

template <typename T>
void dwconv_forward(const DwconvArgs<T>& a, const DwconvUKernels<T>& uk,
                    const ParallelFor& parallel_for) {
  const int64_t H = a.H, k = a.k, p = a.k / 2, row_size = a.W * a.C;
  parallel_for(a.B * H, [&](int64_t begin, int64_t end) {
    const T* rows[kDwconvMaxK];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / H, h = t % H;
      const T* xb = a.x + b * H * row_size;
      for (int64_t kh = 0; kh < k; ++kh) {
        const int64_t ih = h + kh - p;
        rows[kh] = ih >= 0 && ih < H ? xb + ih * row_size : nullptr;
      }
      uk.row(a.W, a.C, k, rows, a.wt, a.bias, a.residual ? xb + h * row_size : nullptr,
             a.out + t * row_size);
    }
  });
}

template void dwconv_forward<float>(const DwconvArgs<float>&, const DwconvUKernels<float>&,
                                    const ParallelFor&);
template void dwconv_forward<double>(const DwconvArgs<double>&, const DwconvUKernels<double>&,
                                     const ParallelFor&);

}  // namespace cpu
}  // namespace edgevit
