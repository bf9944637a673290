// Fused CPU driver of edgevit::mlp_fused; see mlp_fused.h.
#include "mlp_fused.h"

#include <algorithm>
#include <vector>

#include "cache_info.h"
#include "driver_common.h"

namespace edgevit {
namespace cpu {
namespace {

// Rows of one task when the caller does not say (MlpArgs::block_rows).
constexpr int64_t kDefaultRows = 32;

// Where each part lives in the prepared buffer (offsets in elements).
struct MlpLayout {
  int64_t w1, w2, b1, b2, total;
  MlpLayout(int64_t C, int64_t hidden, int64_t nr) {
    w1 = 0;
    w2 = w1 + packed_b_size(C, hidden, nr);
    b1 = w2 + packed_b_size(hidden, C, nr);
    b2 = b1 + hidden;
    total = b2 + C;
  }
};

}  // namespace

int64_t mlp_weights_size(int64_t C, int64_t hidden, int64_t nr) {
  return MlpLayout(C, hidden, nr).total;
}

template <typename T>
void mlp_prepare_weights(const MlpArgs<T>& a, const LglUKernels<T>& gemm_uk, T* weights,
                         const ParallelFor& parallel_for) {
  const int64_t C = a.C, hidden = a.hidden;
  const MlpLayout L(C, hidden, gemm_uk.nr);
  // fc1 with the LayerNorm affine folded in (fold_norm_affine); the forward only standardises.
  const T* w1 = a.fc1_w;
  std::vector<T> w1_folded;
  if (a.layer_norm && (a.norm_w || a.norm_b)) {
    w1_folded.resize(static_cast<size_t>(hidden * C));
    fold_norm_affine(a.fc1_w, a.fc1_b, hidden, C, a.norm_w, a.norm_b, w1_folded.data(),
                     weights + L.b1, parallel_for);
    w1 = w1_folded.data();
  } else {
    for (int64_t j = 0; j < hidden; ++j) weights[L.b1 + j] = a.fc1_b ? a.fc1_b[j] : T(0);
  }
  for (int64_t o = 0; o < C; ++o) weights[L.b2 + o] = a.fc2_b ? a.fc2_b[o] : T(0);
  pack_weight_t(gemm_uk, w1, hidden, C, weights + L.w1);
  pack_weight_t(gemm_uk, a.fc2_w, C, hidden, weights + L.w2);
}

template <typename T>
void mlp_forward(const MlpArgs<T>& a, const LglUKernels<T>& gemm_uk, const MlpUKernels<T>& uk,
                 const T* weights, const ParallelFor& parallel_for) {
  const int64_t M = a.M, C = a.C, hidden = a.hidden;
  if (M == 0) return;
  const MlpLayout L(C, hidden, gemm_uk.nr);
  const Blocks blocks(M, a.block_rows > 0 ? a.block_rows : kDefaultRows);
  parallel_for(blocks.count, [&](int64_t begin, int64_t end) {
    Scratch<T> h(blocks.size * hidden);
    Scratch<T> xn(a.layer_norm ? blocks.size * C : 1);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blocks.begin(blk), rows = blocks.len(blk, M);
      const T* x = a.x + r0 * C;
      T* out = a.out + r0 * C;
      const T* A = x;
      if (a.layer_norm) {
        uk.layernorm_rows(rows, C, x, C, a.eps, nullptr, nullptr, xn.data(), C);
        A = xn.data();
      }
      // GELU and the residual are the gemms' epilogues, on the register tiles: neither the
      // hidden tile nor the output is stored and read again by an element-wise pass.
      gemm_uk.gemm_gelu(rows, hidden, C, A, C, weights + L.w1, weights + L.b1, h.data(), hidden);
      if (a.residual) {
        gemm_uk.gemm_add(rows, C, hidden, h.data(), hidden, weights + L.w2, weights + L.b2, x, C,
                         out, C);
      } else {
        gemm_uk.gemm(rows, C, hidden, h.data(), hidden, weights + L.w2, weights + L.b2, out, C);
      }
    }
  });
}

template void mlp_prepare_weights<float>(const MlpArgs<float>&, const LglUKernels<float>&, float*,
                                         const ParallelFor&);
template void mlp_prepare_weights<double>(const MlpArgs<double>&, const LglUKernels<double>&,
                                          double*, const ParallelFor&);
template void mlp_forward<float>(const MlpArgs<float>&, const LglUKernels<float>&,
                                 const MlpUKernels<float>&, const float*, const ParallelFor&);
template void mlp_forward<double>(const MlpArgs<double>&, const LglUKernels<double>&,
                                  const MlpUKernels<double>&, const double*, const ParallelFor&);

int64_t mlp_hidden_tile_elements(int64_t elem_bytes) {
  const int64_t elements = cache_info().l2 / 4 / std::max<int64_t>(1, elem_bytes);
  return std::min<int64_t>(256 << 10, std::max<int64_t>(16 << 10, elements));
}

}  // namespace cpu
}  // namespace edgevit
