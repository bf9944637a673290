// The fused CPU driver of edgevit::mlp_fused: a transformer MLP on rows of C features,
//   out = [x +] fc2(GELU(fc1([LayerNorm](x)))),
// torch-free so the native harness (tests/native) can build and test it without ATen.
//
// Two steps, like lgl_fused:
//   prepare (mlp_prepare_weights, cached by the caller): fc1's weight with the LayerNorm's affine
//     folded in, fc1(g * xhat + b) = (W1 diag g) xhat + (W1 b + b1), packed as W1'^T panels;
//     fc2's weight packed as W2^T panels; both biases (zeros where absent).
//   forward (mlp_forward): per block of rows (block_rows), one task: standardise the rows (if
//     LayerNorm) into a tile, h = GELU(tile x W1'^T + b1') (gemm_gelu: GELU on the register
//     tile), out rows = h x W2^T + b2 [+ x] (gemm_add when residual, else gemm; straight into
//     the output). The epilogues give the same bits as separate gelu / add passes.
// The hidden activations of a block ([block_rows, hidden]) live in a per-thread tile: nothing of
// size M x hidden is ever stored. Every task streams both weights, so blocks are as large as the
// threads allow (fewer passes over W1 and W2, which for C = 240..384 do not fit in L2). Rows are
// independent and every output element is written by one task in a fixed order, so the result
// is bitwise identical for any blocking and any thread count.
#pragma once

#include <cstdint>

#include "lgl_fused.h"  // ParallelFor
#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

template <typename T>
struct MlpArgs {
  int64_t M, C, hidden;  // rows, features (fc1 in / fc2 out), hidden features (fc1 out)
  bool layer_norm;       // standardise each row over C before fc1
  bool residual;         // add x to the output (forward only)
  int64_t block_rows;    // rows per task (forward); <= 0: 32. Any value gives the same bits
                         // (rows are independent); the ATen layer sizes it to the threads.
  T eps;                 // LayerNorm epsilon (forward only)
  // prepare only: [C] LayerNorm affine (null: 1 / 0), [hidden, C] fc1, [hidden] or null,
  // [C, hidden] fc2, [C] or null; row-major contiguous.
  const T* norm_w;
  const T* norm_b;
  const T* fc1_w;
  const T* fc1_b;
  const T* fc2_w;
  const T* fc2_b;
  // forward only: [M, C] rows, contiguous, and the output of the same shape.
  const T* x;
  T* out;
};

// Elements of elem_bytes each that mlp_fused's hidden tile (block rows x hidden) may hold: a
// quarter of this CPU's L2 (cache_info.h), within [16K, 256K] elements.
int64_t mlp_hidden_tile_elements(int64_t elem_bytes);

// Elements of the prepared-weights buffer for these sizes and a gemm table of panel width nr.
int64_t mlp_weights_size(int64_t C, int64_t hidden, int64_t nr);

// Fills `weights` (mlp_weights_size elements) from the weights of a (C, hidden, layer_norm,
// norm_w, norm_b, fc1_*, fc2_*). Deterministic: the same inputs give the same bits.
template <typename T>
void mlp_prepare_weights(const MlpArgs<T>& a, const LglUKernels<T>& gemm_uk, T* weights,
                         const ParallelFor& parallel_for);

// The MLP on a.x -> a.out with weights prepared by mlp_prepare_weights for the same table.
template <typename T>
void mlp_forward(const MlpArgs<T>& a, const LglUKernels<T>& gemm_uk, const MlpUKernels<T>& uk,
                 const T* weights, const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace edgevit
