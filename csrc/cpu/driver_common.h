// Pieces shared by the torch-free CPU drivers (lgl_fused.cpp, mlp_fused.cpp). Baseline code:
// no ISA flags here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

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
// is read), so it costs no memset per call, unlike std::vector.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n) : p_(new T[static_cast<size_t>(n)]) {}
  T* data() { return p_.get(); }
  T& operator[](int64_t i) { return p_[static_cast<size_t>(i)]; }

 private:
  std::unique_ptr<T[]> p_;
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

}  // namespace
}  // namespace cpu
}  // namespace edgevit
