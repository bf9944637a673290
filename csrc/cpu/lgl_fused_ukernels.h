// Micro-kernels of edgevit::lgl_fused: the per-ISA inner loops the fused driver (lgl_fused.cpp)
// is built from. Torch-free: plain pointers, sizes and strides.
//
// Every ISA fills one LglUKernels<float> table (ukernels_<isa>.cpp) with the same signatures,
// from its kernel families (gemm.h, softmax.h, layernorm.h); the scalar variants are always
// compiled, double as the readable reference, and are also instantiated for double. ISA files
// get their ISA flags from setup.py / the native harness Makefile (per file), never from a
// whole-build -march.
//
// Packed-B layout shared by every gemm: B[K, N] is stored as ceil(N / nr) panels, each a
// row-major [K, nr] block, the last one zero-padded to nr columns. Padding lives only in our
// own scratch, so a gemm may read whole panels but must never store past column N of C.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgevit {
namespace cpu {

template <typename T>
struct LglUKernels {
  const char* name;  // "scalar", "avx2", "avx512", "neon"
  int64_t nr;        // width of a packed-B panel

  // C[m, n] = bias[n] + sum_k A[m*lda + k] * B(k, n) for m < M, n < N (k ascending),
  // with B packed as above; bias may be null (zero). Stores only columns < N of C (row stride ldc).
  void (*gemm)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
               const T* bias, T* C, int64_t ldc);

  // In place for each of M rows of S (row stride ld): s[0:N] = softmax(s[0:N] * scale).
  void (*softmax_rows)(int64_t M, int64_t N, T scale, T* S, int64_t ld);

  // LayerNorm statistics of the propagated tokens, without normalising them (the driver folds
  // the normalisation into the projection; see lgl_fused.h). For m < M and offsets d < R, with
  //   z[c] = y[m*ldy + c] * pwt[c*R + d] + pb[c]   (c < C),
  //   rstd[m*R + d] = 1 / sqrt(mean_c((z[c] - mean_c(z))^2) + eps).
  // Two-pass statistics (the mean, then the mean of squared deviations), so a large common
  // offset does not cancel precision away. pwt is the propagation weight transposed, [C, R]
  // (the R offsets of one channel contiguous), so SIMD variants put offsets in vector lanes.
  // Reads only y rows m < M (columns < C), pwt[0:C*R), pb[0:C); writes only rstd[0:M*R).
  void (*prop_rstd)(int64_t M, int64_t R, int64_t C, const T* y, int64_t ldy, const T* pwt,
                    const T* pb, T eps, T* rstd);

  // Epilogue of the folded LayerNorm + projection: for t < rows with dst[t] non-null,
  //   dst[t][c] = scale[t] * src[t*C + c] + e[c]   (c < C);
  // rows with a null dst (tokens cropped off the map) are skipped. Writes only dst rows [0, C).
  void (*scale_rows)(int64_t rows, int64_t C, const T* src, const T* scale, const T* e,
                     T* const* dst);

  // Packs panels [p0, p1) of B = W^T, where W is a row-major [N, K] weight (row stride ldw),
  // into the layout above (dst points at panel 0). A transpose: the per-call cost of using a
  // Linear weight as B, so ISAs do it in registers. Null: pack_b is used.
  void (*pack_weight_t)(const T* w, int64_t N, int64_t K, int64_t ldw, int64_t p0, int64_t p1,
                        T* dst);

  // gemm with an epilogue on the register tile, so the result is not stored and reloaded by a
  // separate element-wise pass (mlp_fused's fc1 and fc2). Same tiling, summation order and
  // stores as gemm; the epilogue acts on each element of C once its sum is complete.
  // gemm_gelu: C[m, n] = GELU(bias[n] + sum_k ...), GELU exactly as MlpUKernels<T>::gelu of the
  //   same ISA computes it (the same bits as gemm followed by gelu).
  // gemm_add: C[m, n] = (bias[n] + sum_k ...) + R[m*ldr + n] (the same bits as gemm followed by
  //   MlpUKernels<T>::add); R is read only at rows < M, columns < N, and may not alias C.
  void (*gemm_gelu)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                    const T* bias, T* C, int64_t ldc);
  void (*gemm_add)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                   const T* bias, const T* R, int64_t ldr, T* C, int64_t ldc);

  // gemm with scale_rows as its epilogue (the folded projection of lgl_fused, r > 1): for m < M
  // with dst[m] non-null and n < N,
  //   dst[m][n] = scale[m] * (bias[n] + sum_k A[m*lda + k] * B(k, n)) + e[n],
  // the same bits as gemm into a scratch followed by scale_rows, without the scratch's store and
  // reload. Null where an ISA does not provide it: the driver then does exactly that. The
  // scalar variant leaves it null: on its tiles the fused epilogue gains nothing measurable
  // (docs/performance-notes.md).
  void (*gemm_scatter)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                       const T* bias, const T* scale, const T* e, T* const* dst);
};

// Packs B(k, n) = src[k*sk + n*sn] (k < K, n < N) into the panel layout above.
template <typename T>
void pack_b(const T* src, int64_t K, int64_t N, int64_t sk, int64_t sn, int64_t nr, T* dst);

inline int64_t packed_b_size(int64_t K, int64_t N, int64_t nr) {
  return (N + nr - 1) / nr * nr * K;
}

// The operands of a SIMD gemm's epilogue (gemm_add, gemm_scatter), shared by the ISA files:
// at the gemm's first row and column, and each tile gets them offset to its own. R: gemm_add's
// addend (row stride ldr). scale, e, dst: gemm_scatter's, where a tile's row r goes to
// dst[r] + n0 (n0: the tile's first column; skipped when dst[r] is null).
struct GemmEpArgs {
  const float* R;
  int64_t ldr;
  const float* scale;
  const float* e;
  float* const* dst;
  int64_t n0;
};

// Software prefetch of the next panel group, for the SIMD gemms. A gemm runs its panels in
// groups (up to max_group panels of ps elements each), each group over all its row tiles.
// Weights larger than L2 (the MLPs of C >= 240) come from L3 when a group starts, so while one
// group runs, the next one's panels (contiguous after it) are prefetched: each of the group's
// `tiles` row tiles takes an equal share of `share` bytes from at(t). A tile prefetches once per
// `every` k steps, `stride` bytes apart: one cache line per prefetch where the share is under a
// line per k step (the usual case: share / K is 96 / tiles bytes for AVX2), else one per k step.
// Not one per k step always: on small-K gemms most of those hit the same line, and on AMD (whose
// prefetches go to L1 whatever the hint) they took load slots from a tile that needs them,
// 1.1-1.4x on AVX2 gemms with K = 96 (docs/performance-notes.md). With no next group the tile
// prefetches once. Prefetches never fault and are not loads.
struct TilePrefetch {
  const char* at;
  int64_t every, stride;
};

struct GroupPrefetch {
  static constexpr int64_t kLine = 64;
  const char* base;
  int64_t share, every, stride;
  // The group after the one that ends at panel `end` of `panels`, in a packed B at Bp.
  GroupPrefetch(const float* Bp, int64_t end, int64_t panels, int64_t max_group, int64_t ps,
                int64_t tiles, int64_t K) {
    const int64_t next = panels - end < max_group ? panels - end : max_group;
    base = reinterpret_cast<const char*>(Bp + (next ? end : end - 1) * ps);
    share = next * ps * int64_t(sizeof(float)) / tiles;
    const int64_t step = K > 0 ? share / K : 0;  // bytes of the share per k step
    every = step >= kLine ? 1 : step > 0 ? kLine / step : (K > 0 ? K : 1);
    stride = step >= kLine ? step : kLine;
  }
  TilePrefetch at(int64_t tile) const { return {base + tile * share, every, stride}; }
};

template <typename T>
const LglUKernels<T>& scalar_ukernels();

// Each returns null when that ISA's code is not compiled into this build (wrong architecture).
// Whether the running CPU supports it is decided by isa.cpp, not here.
const LglUKernels<float>* avx2_ukernels();
const LglUKernels<float>* avx512_ukernels();
const LglUKernels<float>* neon_ukernels();

}  // namespace cpu
}  // namespace edgevit
