// The loop skeleton the SIMD micro-kernels of edgevit::dwconv share (dwconv_avx2.cpp,
// dwconv_avx512.cpp, dwconv_neon.cpp; contract: dwconv_ukernels.h). Each ISA file includes it
// after its intrinsics and instantiates dwconv_simd::row<Full, Half, Tail> with three vector
// policies of its own (in its anonymous namespace, so every instantiation is local to that file
// and compiled with that file's ISA flags):
//   struct Policy {
//     using Vec = ...;                        // a vector of kLanes floats
//     static constexpr int64_t kLanes;
//     Vec load(const float* p) const;         // kLanes floats (Tail: the first n, 0 after)
//     void store(float* p, Vec v) const;      // kLanes floats (Tail: only the first n)
//     static Vec zero();
//     static Vec fma(Vec a, Vec b, Vec acc);  // acc + a * b
//     static Vec add(Vec a, Vec b);
//     static Vec in_register(Vec v);          // v, opaque to the optimiser (see pixels)
//   };
// Half has kLanes <= Full's (half of it, or Full itself where no narrower vector is worth it);
// Tail has Half's width and is constructed from n, the number of channels left (0 < n < kLanes).
//
// Tiling: channel blocks outer: C / Full::kLanes full-width blocks, then one Half block if
// Half::kLanes channels are left, then the rest through Tail. The narrower tail matters at
// EdgeViT widths: C = 36 on AVX-512 is 2 x 16 + 4, and a masked 16-lane tail costs a whole zmm
// pass for 4 channels where an 8-lane one costs half (C = 72: 4 x 16 + 8 runs no masked pass at
// all). Per block the k*k weight vectors are loaded once into registers (an array the fully
// unrolled tap loops index with constants, so the compiler keeps it in registers: k = 3 needs 9,
// k = 5 25; k = 7 reads its 49 from memory, see pixel_rolled) and the block sweeps the row along
// W, taps unrolled. Pixels whose taps all lie inside the row (w in [k/2, W - k/2)) run without
// bounds tests, kGroup = 4 at a time (pixels_at: 4 independent accumulator chains, each input
// vector loaded once for the pixels it feeds), then a pair,
// then one; the k/2 border pixels at each end run together too, with their in-row taps known at
// compile time (edge), or, when W < k - 1, one by one testing each tap column. Rows off
// the map (null) are tested only in the k/2 top and bottom rows of a map (kAllRows).
//
// Invariants: only channels < C of each row, tap and bias are read and only channels < C of out
// written (Tail); a tap is read only when its column is inside [0, W) and its row non-null.
// Per element: bias (or 0), then taps in (kh, kw) order, then the residual - the scalar order.
//
// Only plain C and the policies' intrinsics here: no std:: templates or inline functions (their
// ISA-compiled copies could be picked by the linker for callers on CPUs without the ISA).
#pragma once

#include <cstdint>

#include "dwconv_ukernels.h"

#if defined(__GNUC__)
#define EDGEVIT_DW_INLINE inline __attribute__((always_inline))
#else
#define EDGEVIT_DW_INLINE inline
#endif

namespace edgevit {
namespace cpu {
namespace dwconv_simd {
namespace {

constexpr int kGroup = 4;  // interior pixels per step (see pixels)

// Output pixel w, channels [c, c + kLanes) (or the tail's n): bias b, the taps, the residual.
// kAllCols: every tap column is inside the row, else only columns kw in [kw0, kw1).
template <typename V, int K, bool kAllRows, bool kAllCols>
EDGEVIT_DW_INLINE void pixel(const V& v, const float* const* rows, const typename V::Vec* wv,
                             typename V::Vec b, const float* res, float* out, int64_t w,
                             int64_t C, int64_t c, int64_t kw0, int64_t kw1) {
  typename V::Vec acc = b;
#pragma GCC unroll 5
  for (int kh = 0; kh < K; ++kh) {
    if (!kAllRows && rows[kh] == nullptr) continue;
#pragma GCC unroll 5
    for (int kw = 0; kw < K; ++kw) {
      if (!kAllCols && (kw < kw0 || kw >= kw1)) continue;
      acc = V::fma(v.load(rows[kh] + (w + kw - K / 2) * C + c), wv[kh * K + kw], acc);
    }
  }
  if (res) acc = V::add(acc, v.load(res + w * C + c));
  v.store(out + w * C + c, acc);
}

// kNP output pixels [w0, w0 + kNP) at once, reading the kCols input columns [col0, col0 + kCols)
// of each tap row; pixel w0 + i reads column col0 + j through tap kw = j - i + kOff, and only
// taps with 0 <= kw < k exist, so which taps fall inside the row is fixed at compile time:
//   interior (pixels_at):    col0 = w0 - k/2, kOff = 0,   kCols = kNP + k - 1;
//   left border (edge):      w0 = col0 = 0,   kOff = k/2, kCols = k - 1, kNP = k/2;
//   right border (edge):     w0 = W - k/2, col0 = W - (k - 1), kOff = 0, kCols = k - 1, kNP = k/2
// (the borders need W >= k - 1). kNP independent accumulator chains (one pixel's k*k + 2
// dependent FMAs/adds are far longer than their issue time; one by one, a k = 5 border pixel is
// a chain of up to 20, and at 7 x 7 maps 4 of 7 pixels are border ones), and each input vector
// loaded once for the up-to-k pixels it feeds (kNP + k - 1 loads per tap row instead of
// kNP * k). in_register keeps it loaded once: without it GCC folds the load into each of the
// k FMAs as a memory operand, and on x86 those reloads are cache-line-split loads whenever the
// row stride C is not a multiple of the vector (C = 36, 72 with zmm).
// Per pixel the taps still go in (kh, kw) order.
template <typename V, int K, bool kAllRows, int kNP, int kOff, int kCols>
EDGEVIT_DW_INLINE void pixels(const V& v, const float* const* rows, const typename V::Vec* wv,
                              typename V::Vec b, const float* res, float* out, int64_t w0,
                              int64_t col0, int64_t C, int64_t c) {
  typename V::Vec acc[kNP];
#pragma GCC unroll 8
  for (int i = 0; i < kNP; ++i) acc[i] = b;
#pragma GCC unroll 5
  for (int kh = 0; kh < K; ++kh) {
    if (!kAllRows && rows[kh] == nullptr) continue;
    const float* r = rows[kh] + col0 * C + c;
#pragma GCC unroll 12
    for (int j = 0; j < kCols; ++j) {
      typename V::Vec x = v.load(r + j * C);
      x = V::in_register(x);
#pragma GCC unroll 8
      for (int i = 0; i < kNP; ++i) {
        const int kw = j - i + kOff;
        if (kw >= 0 && kw < K) acc[i] = V::fma(x, wv[kh * K + kw], acc[i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kNP; ++i) {
    if (res) acc[i] = V::add(acc[i], v.load(res + (w0 + i) * C + c));
    v.store(out + (w0 + i) * C + c, acc[i]);
  }
}

// kNP interior pixels [w, w + kNP) (every tap column inside the row).
template <typename V, int K, bool kAllRows, int kNP>
EDGEVIT_DW_INLINE void pixels_at(const V& v, const float* const* rows, const typename V::Vec* wv,
                                 typename V::Vec b, const float* res, float* out, int64_t w,
                                 int64_t C, int64_t c) {
  pixels<V, K, kAllRows, kNP, 0, kNP + K - 1>(v, rows, wv, b, res, out, w, w - K / 2, C, c);
}

// The k/2 border pixels at the left end of a row (kRight false) or the right one, W >= k - 1.
template <typename V, int K, bool kAllRows, bool kRight>
EDGEVIT_DW_INLINE void edge(const V& v, const float* const* rows, const typename V::Vec* wv,
                            typename V::Vec b, const float* res, float* out, int64_t W,
                            int64_t C, int64_t c) {
  constexpr int P = K / 2;
  if constexpr (P == 0)
    return;  // k = 1: no border
  else if constexpr (kRight)
    pixels<V, K, kAllRows, P, 0, K - 1>(v, rows, wv, b, res, out, W - P, W - (K - 1), C, c);
  else
    pixels<V, K, kAllRows, P, P, K - 1>(v, rows, wv, b, res, out, 0, 0, C, c);
}

// pixel for k = 7 (not an EdgeViT size): its 49 weight vectors do not fit in registers, so they
// are loaded from wt with the input (two loads per FMA), in rolled loops (fully unrolled, 49
// taps x 8 instantiations take GCC minutes to compile under -fwrapv, as torch extensions build).
template <typename V, int K, bool kAllRows>
inline void pixel_rolled(const V& v, const float* const* rows, const float* wt,
                         typename V::Vec b, const float* res, float* out, int64_t w, int64_t C,
                         int64_t c, int64_t kw0, int64_t kw1) {
  typename V::Vec acc = b;
#pragma GCC unroll 1
  for (int kh = 0; kh < K; ++kh) {
    if (!kAllRows && rows[kh] == nullptr) continue;
#pragma GCC unroll 1
    for (int64_t kw = kw0; kw < kw1; ++kw)
      acc = V::fma(v.load(rows[kh] + (w + kw - K / 2) * C + c), v.load(wt + (kh * K + kw) * C + c),
                   acc);
  }
  if (res) acc = V::add(acc, v.load(res + w * C + c));
  v.store(out + w * C + c, acc);
}

// Channels [c, c + kLanes) (or the tail's n) of the whole output row.
template <typename V, int K, bool kAllRows>
void block(const V& v, int64_t W, int64_t C, int64_t c, const float* const* rows,
           const float* wt, const float* bias, const float* res, float* out) {
  using Vec = typename V::Vec;
  constexpr int64_t P = K / 2;
  const Vec b = bias ? v.load(bias + c) : V::zero();
  if constexpr (K > 5) {
    for (int64_t w = 0; w < W; ++w)
      pixel_rolled<V, K, kAllRows>(v, rows, wt, b, res, out, w, C, c, P - w > 0 ? P - w : 0,
                                   W + P - w < K ? W + P - w : K);
    return;
  } else {
    Vec wv[K * K];
#pragma GCC unroll 25
    for (int t = 0; t < K * K; ++t) wv[t] = v.load(wt + t * C + c);
    // Border pixels [0, lo) and [hi, W) (edge, or when W < k - 1 one by one, testing
    // their tap columns); interior ones [lo, hi) test nothing.
    const int64_t lo = P < W ? P : W;
    const int64_t hi = W - P > lo ? W - P : lo;
    const bool edges = P > 0 && W >= K - 1;
    if (edges) {
      edge<V, K, kAllRows, false>(v, rows, wv, b, res, out, W, C, c);
    } else {
      for (int64_t w = 0; w < lo; ++w)
        pixel<V, K, kAllRows, false>(v, rows, wv, b, res, out, w, C, c, P - w,
                                     W + P - w < K ? W + P - w : K);
    }
    int64_t w = lo;
    for (; w + kGroup <= hi; w += kGroup)
      pixels_at<V, K, kAllRows, kGroup>(v, rows, wv, b, res, out, w, C, c);
    if (w + 2 <= hi) {  // a pair rather than two single pixels
      pixels_at<V, K, kAllRows, 2>(v, rows, wv, b, res, out, w, C, c);
      w += 2;
    }
    for (; w < hi; ++w)
      pixel<V, K, kAllRows, true>(v, rows, wv, b, res, out, w, C, c, 0, K);
    if (edges) {
      edge<V, K, kAllRows, true>(v, rows, wv, b, res, out, W, C, c);
    } else {
      for (int64_t w = hi; w < W; ++w)
        pixel<V, K, kAllRows, false>(v, rows, wv, b, res, out, w, C, c, P - w > 0 ? P - w : 0,
                                     W + P - w);
    }
  }
}

template <typename Full, typename Half, typename Tail, int K>
void row_k(int64_t W, int64_t C, const float* const* rows, const float* wt, const float* bias,
           const float* res, float* out) {
  bool all_rows = true;
  for (int kh = 0; kh < K; ++kh) all_rows = all_rows && rows[kh] != nullptr;
  const int64_t cfull = C / Full::kLanes * Full::kLanes;
  const Full full{};
  for (int64_t c = 0; c < cfull; c += Full::kLanes) {
    if (all_rows)
      block<Full, K, true>(full, W, C, c, rows, wt, bias, res, out);
    else
      block<Full, K, false>(full, W, C, c, rows, wt, bias, res, out);
  }
  int64_t c = cfull;
  if (C - c >= Half::kLanes) {  // never when Half is as wide as Full
    const Half half{};
    if (all_rows)
      block<Half, K, true>(half, W, C, c, rows, wt, bias, res, out);
    else
      block<Half, K, false>(half, W, C, c, rows, wt, bias, res, out);
    c += Half::kLanes;
  }
  if (c < C) {
    const Tail tail(C - c);
    if (all_rows)
      block<Tail, K, true>(tail, W, C, c, rows, wt, bias, res, out);
    else
      block<Tail, K, false>(tail, W, C, c, rows, wt, bias, res, out);
  }
}

// The DwconvUKernels::row of an ISA.
template <typename Full, typename Half, typename Tail>
void row(int64_t W, int64_t C, int64_t k, const float* const* rows, const float* wt,
         const float* bias, const float* res, float* out) {
  switch (k) {
    case 1: row_k<Full, Half, Tail, 1>(W, C, rows, wt, bias, res, out); break;
    case 3: row_k<Full, Half, Tail, 3>(W, C, rows, wt, bias, res, out); break;
    case 5: row_k<Full, Half, Tail, 5>(W, C, rows, wt, bias, res, out); break;
    case 7: row_k<Full, Half, Tail, 7>(W, C, rows, wt, bias, res, out); break;
    default: break;  // the driver passes only odd k <= kDwconvMaxK
  }
}

}  // namespace
}  // namespace dwconv_simd
}  // namespace cpu
}  // namespace edgevit
