// The fused CPU driver of edgevit::patch_embed: EdgeViT's PatchEmbed, a convolution whose
// stride equals its kernel (p x p patches, no overlap, no padding) followed by a LayerNorm over
// the output channels, written channels_last. Torch-free (tests/native builds it without ATen).
//
// A p x p patch convolution is a GEMM: output pixel (b, i, j) is the row
// A[k] = x[b, ci, i*p + ki, j*p + kj] times B = W'^T with W'[o, k] = weight[o, ci, ki, kj], in
// one of two orders of k (channel_major() below): k = (ki*p + kj)*Cin + ci (the weight re-laid
// out [Cout, p, p, Cin] by the caller; for a channels_last x, p*p runs of Cin contiguous
// elements) when Cin >= 8, k = (ci*p + ki)*p + kj (the weight as it is, [Cout, Cin, p, p]; for an
// NCHW image, Cin*p runs of p contiguous elements) for the few channels of an image.
//   prepare (patch_embed_prepare_weights, cached by the caller): W'^T packed, the bias.
//   forward (patch_embed_forward): per block of <= 32 output pixels, one task: gather their
//     patches into a tile, one gemm straight into the output rows, then the LayerNorm of those
//     rows in place (layernorm_rows of mlp_fused's table, affine included).
// Every output element is written by one task in a fixed order: bitwise identical for any
// thread count. Intermediates: one [32, p*p*Cin] tile per thread.
#pragma once

#include <cstdint>

#include "lgl_fused.h"  // ParallelFor
#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

template <typename T>
struct PatchEmbedArgs {
  int64_t B, Cin, H, W, Cout, p;  // output map: floor(H / p) x floor(W / p)
  const T* x;                     // [B, Cin, H, W] with element strides below (forward)
  int64_t x_sb, x_sc, x_sh, x_sw;
  const T* weight;                // [Cout, Cin, p, p] if patch_embed_channel_major(Cin), else
                                  // [Cout, p, p, Cin]; contiguous (prepare)
  const T* bias;                  // [Cout] or null (prepare)
  bool layer_norm;                // forward: LayerNorm over Cout of each output pixel
  const T* norm_w;                // [Cout] or null (then norm_b null too): the affine
  const T* norm_b;
  T eps;
  T* out;                         // [B, H / p, W / p, Cout] contiguous (forward)
};

// Whether k runs over (ci, ki, kj) rather than (ki, kj, ci): the layout the weight must have.
inline bool patch_embed_channel_major(int64_t Cin) { return Cin < 8; }

int64_t patch_embed_weights_size(int64_t Cin, int64_t Cout, int64_t p, int64_t nr);

template <typename T>
void patch_embed_prepare_weights(const PatchEmbedArgs<T>& a, const LglUKernels<T>& gemm_uk,
                                 T* weights);

template <typename T>
void patch_embed_forward(const PatchEmbedArgs<T>& a, const LglUKernels<T>& gemm_uk,
                         const MlpUKernels<T>& uk, const T* weights,
                         const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace edgevit
