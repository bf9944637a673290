// Fused CPU driver of edgevit::linear_fused; see linear_fused.h.
#include "linear_fused.h"

#include "driver_common.h"

namespace edgevit {
namespace cpu {
namespace {

constexpr int64_t kRows = 64;  // rows of one task (fixed: thread-count independent)

}  // namespace

int64_t linear_weights_size(int64_t K, int64_t N, int64_t nr) {
  return packed_b_size(K, N, nr) + N;
}

template <typename T>
void linear_prepare_weights(const LinearArgs<T>& a, const LglUKernels<T>& gemm_uk, T* weights) {
  T* bias = weights + packed_b_size(a.K, a.N, gemm_uk.nr);
  for (int64_t n = 0; n < a.N; ++n) bias[n] = a.bias ? a.bias[n] : T(0);
  pack_weight_t(gemm_uk, a.weight, a.N, a.K, weights);
}

template <typename T>
void linear_forward(const LinearArgs<T>& a, const LglUKernels<T>& gemm_uk, const T* weights,
                    const ParallelFor& parallel_for) {
  if (a.M == 0) return;
  const T* bias = weights + packed_b_size(a.K, a.N, gemm_uk.nr);
  const Blocks blocks(a.M, kRows);
  parallel_for(blocks.count, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blocks.begin(blk), rows = blocks.len(blk, a.M);
      T* out = a.out + r0 * a.N;
      if (a.residual) {  // the residual added in the gemm's epilogue
        gemm_uk.gemm_add(rows, a.N, a.K, a.x + r0 * a.K, a.K, weights, bias,
                         a.residual + r0 * a.N, a.N, out, a.N);
      } else {
        gemm_uk.gemm(rows, a.N, a.K, a.x + r0 * a.K, a.K, weights, bias, out, a.N);
      }
    }
  });
}

template void linear_prepare_weights<float>(const LinearArgs<float>&, const LglUKernels<float>&,
                                            float*);
template void linear_prepare_weights<double>(const LinearArgs<double>&,
                                             const LglUKernels<double>&, double*);
template void linear_forward<float>(const LinearArgs<float>&, const LglUKernels<float>&,
                                    const float*, const ParallelFor&);
template void linear_forward<double>(const LinearArgs<double>&, const LglUKernels<double>&,
                                     const double*, const ParallelFor&);

}  // namespace cpu
}  // namespace edgevit
