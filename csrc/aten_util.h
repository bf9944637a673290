// Helpers shared by the ATen layers of the CPU ops (lgl_fused_cpu.cpp, mlp_fused_cpu.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/lgl_fused.h"  // cpu::ParallelFor
#include "lgl_fused_cpu.h"   // float_ukernels

namespace edgevit {
namespace {

using OptTensor = c10::optional<at::Tensor>;

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

inline at::Tensor contig(const OptTensor& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

inline cpu::ParallelFor at_parallel_for() {
  return [](int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    at::parallel_for(0, n, 1, fn);
  };
}

// The ISAs in the order of the index a prepared buffer's header stores.
const char* const kIsaNames[] = {"scalar", "avx2", "avx512", "neon"};

inline int64_t isa_index(const char* name) {
  for (int64_t i = 0; i < 4; ++i)
    if (std::string(name) == kIsaNames[i]) return i;
  return -1;
}

// The gemm table of the ISA in use (float_ukernels, EDGEVIT_CPU_ISA) and the row-op table
// paired with it; float64 runs the scalar tables.
template <typename T>
struct Tables {
  const cpu::LglUKernels<T>& gemm;
  const cpu::MlpUKernels<T>& mlp;
};

template <typename T>
Tables<T> tables();
template <>
inline Tables<float> tables<float>() {
  const cpu::LglUKernels<float>& gemm = float_ukernels();
  const cpu::MlpUKernels<float>* mlp = cpu::mlp_ukernels_named(gemm.name);
  TORCH_CHECK(mlp != nullptr, "edgevit: no mlp micro-kernels for ISA '", gemm.name, "'");
  return {gemm, *mlp};
}
template <>
inline Tables<double> tables<double>() {
  return {cpu::scalar_ukernels<double>(), cpu::scalar_mlp_ukernels<double>()};
}

}  // namespace
}  // namespace edgevit
