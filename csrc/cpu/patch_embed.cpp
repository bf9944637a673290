// Fused CPU driver of edgevit::patch_embed; see patch_embed.h.
#include "patch_embed.h"

#include "driver_common.h"

namespace edgevit {
namespace cpu {
namespace {

constexpr int64_t kPixels = 32;  // output pixels of one task (fixed: thread-count independent)

// Row t of `tile` = the patch of output pixel m0 + t, for t < rows: runs of p pixels
// (channel-major: k = (c * p + ki) * p + kj) or of Cin channels (pixel-major:
// k = (ki * p + kj) * Cin + c). P > 0 is p at compile time, so each run of a unit-stride image
// is a fixed-size copy (stage 1's 3-channel image: 12 runs of 4 floats per pixel); with p at
// run time each run is a loop with its own trip-count check, much slower on stage 1
// (docs/performance-notes.md). P = 0 reads p from `a`. Unit strides get their own loops,
// which the compiler vectorises.
template <int64_t P, typename T>
void gather_patches(const PatchEmbedArgs<T>& a, bool channel_major, int64_t m0, int64_t rows,
                    int64_t Ho, int64_t Wo, T* tile) {
  const int64_t p = P > 0 ? P : a.p, Cin = a.Cin, K = p * p * Cin;
  int64_t b = m0 / (Ho * Wo), i = m0 / Wo % Ho, j = m0 % Wo;  // pixel m0 + t, stepped with t
  for (int64_t t = 0; t < rows; ++t) {
    const T* src = a.x + b * a.x_sb + i * p * a.x_sh + j * p * a.x_sw;
    T* dst = tile + t * K;
    if (channel_major) {
      for (int64_t c = 0; c < Cin; ++c)
        for (int64_t ki = 0; ki < p; ++ki) {
          const T* s = src + c * a.x_sc + ki * a.x_sh;
          T* d = dst + (c * p + ki) * p;
          if (a.x_sw == 1) {
            for (int64_t kj = 0; kj < p; ++kj) d[kj] = s[kj];
          } else {
            for (int64_t kj = 0; kj < p; ++kj) d[kj] = s[kj * a.x_sw];
          }
        }
    } else {
      for (int64_t ki = 0; ki < p; ++ki)
        for (int64_t kj = 0; kj < p; ++kj) {
          const T* s = src + ki * a.x_sh + kj * a.x_sw;
          T* d = dst + (ki * p + kj) * Cin;
          if (a.x_sc == 1) {
            for (int64_t c = 0; c < Cin; ++c) d[c] = s[c];
          } else {
            for (int64_t c = 0; c < Cin; ++c) d[c] = s[c * a.x_sc];
          }
        }
    }
    if (++j == Wo) {
      j = 0;
      if (++i == Ho) i = 0, ++b;
    }
  }
}

}  // namespace

int64_t patch_embed_weights_size(int64_t Cin, int64_t Cout, int64_t p, int64_t nr) {
  return packed_b_size(p * p * Cin, Cout, nr) + Cout;
}

template <typename T>
void patch_embed_prepare_weights(const PatchEmbedArgs<T>& a, const LglUKernels<T>& gemm_uk,
                                 T* weights) {
  const int64_t K = a.p * a.p * a.Cin;
  T* bias = weights + packed_b_size(K, a.Cout, gemm_uk.nr);
  for (int64_t o = 0; o < a.Cout; ++o) bias[o] = a.bias ? a.bias[o] : T(0);
  pack_weight_t(gemm_uk, a.weight, a.Cout, K, weights);
}

template <typename T>
void patch_embed_forward(const PatchEmbedArgs<T>& a, const LglUKernels<T>& gemm_uk,
                         const MlpUKernels<T>& uk, const T* weights,
                         const ParallelFor& parallel_for) {
  const int64_t p = a.p, Cout = a.Cout, K = p * p * a.Cin;
  const int64_t Ho = a.H / p, Wo = a.W / p, M = a.B * Ho * Wo;
  if (M == 0) return;
  const T* bias = weights + packed_b_size(K, Cout, gemm_uk.nr);
  const bool channel_major = patch_embed_channel_major(a.Cin);
  // EdgeViT's patches are 4 x 4 (stage 1) and 2 x 2: those sizes get compile-time copies.
  const auto gather =
      p == 4 ? gather_patches<4, T> : p == 2 ? gather_patches<2, T> : gather_patches<0, T>;
  const Blocks blocks(M, kPixels);
  parallel_for(blocks.count, [&](int64_t begin, int64_t end) {
    Scratch<T> tile(blocks.size * K);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t m0 = blocks.begin(blk), rows = blocks.len(blk, M);
      gather(a, channel_major, m0, rows, Ho, Wo, tile.data());
      T* out = a.out + m0 * Cout;
      gemm_uk.gemm(rows, Cout, K, tile.data(), K, weights, bias, out, Cout);
      if (a.layer_norm)
        uk.layernorm_rows(rows, Cout, out, Cout, a.eps, a.norm_w, a.norm_b, out, Cout);
    }
  });
}

template void patch_embed_prepare_weights<float>(const PatchEmbedArgs<float>&,
                                                 const LglUKernels<float>&, float*);
template void patch_embed_prepare_weights<double>(const PatchEmbedArgs<double>&,
                                                  const LglUKernels<double>&, double*);
template void patch_embed_forward<float>(const PatchEmbedArgs<float>&, const LglUKernels<float>&,
                                         const MlpUKernels<float>&, const float*,
                                         const ParallelFor&);
template void patch_embed_forward<double>(const PatchEmbedArgs<double>&,
                                          const LglUKernels<double>&, const MlpUKernels<double>&,
                                          const double*, const ParallelFor&);

}  // namespace cpu
}  // namespace edgevit
