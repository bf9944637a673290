// Helpers shared by the ATen layers of the CPU ops (lgl_fused_cpu.cpp, mlp_fused_cpu.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
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

// The gemm table of the ISA in use (float_isa) and the row-op table paired with it; float64
// runs the scalar tables.
template <typename T>
struct Tables {
  const cpu::LglUKernels<T>& gemm;
  const cpu::MlpUKernels<T>& mlp;
};

template <typename T>
Tables<T> tables();
template <>
inline Tables<float> tables<float>() {
  const cpu::IsaConfig& isa = float_isa();  // once: one ISA for the whole call
  return {*isa.lgl, *isa.mlp};
}
template <>
inline Tables<double> tables<double>() {
  return {cpu::scalar_ukernels<double>(), cpu::scalar_mlp_ukernels<double>()};
}

// Prepared buffers (mlp_prepare, patch_embed_prepare, linear_prepare): a 1-D tensor of the
// weights' dtype, kPreparedHeader elements of header, then the op's packed weights. Header:
// magic (one per op), ISA index (kIsaNames), gemm panel width nr, then up to 5 op sizes; the
// rest is zero. 16 elements (64 bytes for float), so the packed panels after it start on a cache
// line like the tensor does: with 8, every 64-byte row of a 16-wide panel straddled two lines,
// and lone AVX-512 gemms ran 5-10% slower (interleaved on the 2-core Ice Lake VM; in a whole
// model forward the difference was within the noise).
constexpr int64_t kPreparedHeader = 16;

template <typename T>
void write_prepared_header(T* p, double magic, const cpu::LglUKernels<T>& gemm,
                           std::initializer_list<int64_t> sizes) {
  T header[kPreparedHeader] = {T(magic), T(isa_index(gemm.name)), T(gemm.nr)};  // rest: 0
  int64_t i = 3;
  for (int64_t v : sizes) header[i++] = T(v);
  std::copy(header, header + kPreparedHeader, p);
}

// The checks every *_prepared op makes before dispatching on the dtype: prepared's shape, and
// x's dtype and device against it.
inline void check_prepared_tensor(const char* op, const char* maker, const at::Tensor& x,
                                  const at::Tensor& prepared) {
  TORCH_CHECK(prepared.dim() == 1 && prepared.is_contiguous() &&
                  prepared.numel() >= kPreparedHeader,
              op, ": prepared must be a contiguous 1-D tensor made by edgevit::", maker,
              ", got shape ", prepared.sizes());
  TORCH_CHECK(x.scalar_type() == prepared.scalar_type() && x.device() == prepared.device(), op,
              ": x must have the dtype and device of prepared (", prepared.scalar_type(), ", ",
              prepared.device(), "), got ", x.scalar_type(), ", ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
}

// prepared's header, after checking its magic and that it was packed for the gemm table in use.
template <typename T>
const T* prepared_header(const char* op, const char* maker, double magic,
                         const at::Tensor& prepared, const cpu::LglUKernels<T>& gemm) {
  const T* h = prepared.const_data_ptr<T>();
  TORCH_CHECK(h[0] == T(magic), op, ": prepared was not made by edgevit::", maker);
  const int64_t isa = int64_t(h[1]), nr = int64_t(h[2]);
  TORCH_CHECK(isa == isa_index(gemm.name) && nr == gemm.nr, op, ": prepared was packed for ISA '",
              isa >= 0 && isa < 4 ? kIsaNames[isa] : "?", "', but the op now runs '", gemm.name,
              "' (EDGEVIT_CPU_ISA changed?): call ", maker, " again");
  return h;
}

// prepared holds exactly kPreparedHeader + expected elements.
inline void check_prepared_numel(const char* op, const at::Tensor& prepared, int64_t expected) {
  TORCH_CHECK(prepared.numel() == kPreparedHeader + expected, op, ": prepared has ",
              prepared.numel(), " elements, expected ", kPreparedHeader + expected);
}

}  // namespace
}  // namespace edgevit
