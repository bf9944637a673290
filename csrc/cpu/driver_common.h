// Pieces shared by the torch-free CPU drivers (lgl_fused.cpp, mlp_fused.cpp). Baseline code:
// no ISA flags here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>

#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// [0, n) cut into ceil(n / max_block) blocks of near-equal size (the last may be smaller), so
// that tasks of one phase cost about the same and a static split over threads stays balanced.
struct Blocks {
  int64_t count, size;
  Blocks(int64_t n, int64_t max_block)
      : count(std::max<int64_t>(1, ceil_div(n, max_block))),
        size(std::max<int64_t>(1, ceil_div(n, count))) {}
  int64_t begin(int64_t i) const { return i * size; }
  int64_t len(int64_t i, int64_t n) const { return std::min(size, n - i * size); }
};

// A thread's tile for one parallel_for chunk: uninitialised (every element is written before it
// is read), so it costs no memset per call, unlike std::vector. 64-byte aligned, so the gemms'
// full-vector stores into it (rows of a multiple of 16 floats) never straddle a cache line.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : p_(static_cast<T*>(::operator new[](static_cast<size_t>(n) * sizeof(T), kAlign))) {}
  T* data() { return p_.get(); }
  T& operator[](int64_t i) { return p_.get()[i]; }

 private:
  static constexpr std::align_val_t kAlign{64};
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, kAlign); }
  };
  std::unique_ptr<T, Free> p_;
};

// Rows [0, N) of a row-major [N, K] weight (row stride K) as W^T in packed panels at dst.
template <typename T>
void pack_weight_t(const LglUKernels<T>& uk, const T* w, int64_t N, int64_t K, T* dst) {
  const int64_t panels = ceil_div(N, uk.nr);
  if (uk.pack_weight_t) {
    uk.pack_weight_t(w, N, K, K, 0, panels, dst);
  } else {
    pack_b(w, K, N, 1, K, uk.nr, dst);
  }
}

// Folds a LayerNorm's affine (g, beta; either may be null) into the Linear [rows, C] that reads
// its output: w_out[j, c] = w[j, c] g[c], b_out[j] = b[j] + sum_c w[j, c] beta[c] (c ascending;
// b may be null). Then the Linear of the standardised rows equals the Linear of the LayerNorm.
template <typename T, typename ParallelFor>
void fold_norm_affine(const T* w, const T* b, int64_t rows, int64_t C, const T* g, const T* beta,
                      T* w_out, T* b_out, const ParallelFor& parallel_for) {
  parallel_for(rows, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const T* row = w + j * C;
      T acc = b ? b[j] : T(0);
      for (int64_t c = 0; c < C; ++c) {
        w_out[j * C + c] = g ? row[c] * g[c] : row[c];
        if (beta) acc += row[c] * beta[c];
      }
      b_out[j] = acc;
    }
  });
}

}  // namespace
}  // namespace cpu
}  // namespace edgevit
