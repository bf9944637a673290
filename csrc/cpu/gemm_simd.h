// The gemm driver and its epilogues (LglUKernels: gemm, gemm_gelu, gemm_add, gemm_scatter),
// written once over an ISA's register-tile micro-kernel U; each SIMD ISA file (gemm_avx2,
// _avx512, _neon.cpp) instantiates it with its own U, in that file and with that file's flags.
//
// Tiling: the packed-B panels (lgl_fused_ukernels.h) go in groups of up to U::kMaxNV; a rest of
// kMaxNV + 1 panels goes as two halves, so no tile is left with one thin panel when two equal
// ones fit. The M rows of a group are split into ceil(M / U::kMRMax[nv]) blocks of nearly equal
// height, each run by the tile instantiated for that exact height, so there is no partial row
// tile. Every output element's sum runs over k ascending whatever the blocking, so the four
// entry points give the bits of gemm followed by the separate epilogue.
//
// U provides:
//   kNR, kMaxNV, kMRMax[kMaxNV + 1]      panel width, panels per tile, rows per tile of nv panels
//   Group                                what a panel group's tiles share (bias rows, tail)
//   static Group group(bias, n0, nv, nlast)  bias (or 0) of columns [n0, n0 + nv*kNR), of which
//                                        the last vector has nlast valid columns
//   template <int EP> static const TileFn<Group>* tiles(int nv)   tiles(nv)[mr]: mr rows x nv
//                                        panels with epilogue EP
// A tile may ignore the prefetch arguments (GroupPrefetch: the next panel group into L2).
//
// Only plain C and the micro-kernel's intrinsics here, in an anonymous namespace: every
// instantiation stays in the ISA file that makes it (no ISA-compiled copy shared by linkage).
#pragma once

#include <cstdint>

#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {
namespace gemm_simd {
namespace {

// What a tile does to its accumulators before storing them.
enum Epilogue { kStore, kGelu, kAddR, kScatter };

// C[0:mr, 0:nv*kNR) = g's bias + A[0:mr, 0:K) * B, B = nv panels of [K, kNR], ps floats apart,
// then epilogue EP; stores only the valid columns of the last vector. kScatter writes row r to
// ep.dst[r] + ep.n0 (skipped when null) and ignores C.
template <typename Group>
using TileFn = void (*)(int64_t K, const float* A, int64_t lda, const float* B, int64_t ps,
                        const Group& g, float* C, int64_t ldc, const GemmEpArgs& ep,
                        const TilePrefetch& pf);

// The gemm with epilogue EP and its operands (at the gemm's first row and column).
template <typename U, int EP>
void gemm_ep(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
             const float* bias, const GemmEpArgs& ep, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  constexpr int kNR = U::kNR, kMaxNV = U::kMaxNV;
  const int64_t panels = (N + kNR - 1) / kNR, ps = K * kNR;
  for (int64_t p = 0; p < panels;) {
    const int64_t left = panels - p;
    const int nv = left <= kMaxNV ? int(left) : (left == kMaxNV + 1 ? (kMaxNV + 1) / 2 : kMaxNV);
    const int64_t n0 = p * kNR;
    const typename U::Group g = U::group(bias, n0, nv, N - n0 - (nv - 1) * kNR);
    const TileFn<typename U::Group>* tiles = U::template tiles<EP>(nv);
    const int64_t blocks = (M + U::kMRMax[nv] - 1) / U::kMRMax[nv];
    const int64_t base = M / blocks, extra = M % blocks;
    // Panels of the next group, into L2 while this one runs.
    const GroupPrefetch pf(Bp, p + nv, panels, kMaxNV, ps, blocks, K);
    for (int64_t blk = 0, m0 = 0; blk < blocks; ++blk) {
      const int64_t mr = base + (blk < extra ? 1 : 0);
      GemmEpArgs t{};
      if constexpr (EP == kAddR) t.R = ep.R + m0 * ep.ldr + n0, t.ldr = ep.ldr;
      if constexpr (EP == kScatter)
        t.scale = ep.scale + m0, t.e = ep.e + n0, t.dst = ep.dst + m0, t.n0 = n0;
      tiles[mr](K, A + m0 * lda, lda, Bp + p * ps, ps, g,
                EP == kScatter ? nullptr : C + m0 * ldc + n0, ldc, t, pf.at(blk));
      m0 += mr;
    }
    p += nv;
  }
}

// The four LglUKernels entry points.
template <typename U>
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
          const float* bias, float* C, int64_t ldc) {
  gemm_ep<U, kStore>(M, N, K, A, lda, Bp, bias, GemmEpArgs{}, C, ldc);
}

template <typename U>
void gemm_gelu(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
               const float* bias, float* C, int64_t ldc) {
  gemm_ep<U, kGelu>(M, N, K, A, lda, Bp, bias, GemmEpArgs{}, C, ldc);
}

template <typename U>
void gemm_add(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* Bp,
              const float* bias, const float* R, int64_t ldr, float* C, int64_t ldc) {
  const GemmEpArgs ep{R, ldr, nullptr, nullptr, nullptr, 0};
  gemm_ep<U, kAddR>(M, N, K, A, lda, Bp, bias, ep, C, ldc);
}

template <typename U>
void gemm_scatter(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* Bp, const float* bias, const float* scale, const float* e,
                  float* const* dst) {
  const GemmEpArgs ep{nullptr, 0, scale, e, dst, 0};
  gemm_ep<U, kScatter>(M, N, K, A, lda, Bp, bias, ep, nullptr, 0);
}

}  // namespace
}  // namespace gemm_simd
}  // namespace cpu
}  // namespace edgevit
