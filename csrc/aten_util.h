// Helpers shared by the ATen layers of the CPU ops (lgl_fused_cpu.cpp, mlp_fused_cpu.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <c10/util/safe_numerics.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <functional>
#include <initializer_list>
#include <iomanip>
#include <utility>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "cpu/thread_pool.h"
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

// The kernels' phases run on cpu/thread_pool (not at::parallel_for: see thread_pool.h), with as
// many threads as torch is set to use (torch.set_num_threads).
inline cpu::ParallelFor pool_parallel_for(int64_t grain = 1) {
  return [grain](int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    cpu::pool_parallel_for(n, grain, at::get_num_threads(), fn);
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

// ---------------------------------------------------------------------------------------------
// Sizes from untrusted integers (op arguments, prepared headers). The drivers in cpu/ compute
// their buffer sizes and offsets in plain int64, as sums of a few products; a size is accepted
// only when every product it is made of stays below kMaxSize, so no sum of them can wrap.
constexpr int64_t kMaxSize = std::numeric_limits<int64_t>::max() / 64;

// a * b * ..., or a TORCH_CHECK error naming `what` when it reaches kMaxSize (or overflows).
inline int64_t checked_product(const char* op, const char* what,
                               std::initializer_list<int64_t> factors) {
  int64_t p = 1;
  bool ok = true;
  for (int64_t f : factors) ok = ok && f >= 0 && !c10::mul_overflows(p, f, &p) && p < kMaxSize;
  if (!ok) {
    std::string values;
    for (int64_t f : factors) values += (values.empty() ? "" : " * ") + std::to_string(f);
    TORCH_CHECK(false, op, ": ", what, " = ", values, " is too large (must be < 2^57)");
  }
  return p;
}

// Bounds on packed_b_size(K, N, nr) = ceil(N / nr) * nr * K <= (N + nr) * K.
inline void check_packed(const char* op, const char* what, int64_t K, int64_t N, int64_t nr) {
  checked_product(op, what, {K, checked_product(op, what, {N}) + nr});
}

// ---------------------------------------------------------------------------------------------
// Prepared buffers (lgl_prepare, mlp_prepare, patch_embed_prepare, linear_prepare): a 1-D
// tensor of the weights' dtype, kPreparedHeader elements of header, then the op's packed
// weights. Header: magic (one per op), ISA index (kIsaNames), gemm panel width nr, then up to
// 5 op sizes and flags, zeros, and last a check value over the header's integers, so a header
// edited after the fact (a flipped flag, a changed size) is refused rather than read. 16
// elements (64 bytes for float), so the packed panels after it start on a cache line like the
// tensor does: with 8, every 64-byte row of a 16-wide panel straddled two lines, and lone
// AVX-512 gemms ran 5-10% slower (interleaved on the 2-core Ice Lake VM; in a whole model
// forward the difference was within the noise).
constexpr int64_t kPreparedHeader = 16;
constexpr int64_t kHeaderCheck = kPreparedHeader - 1;
// The largest size a header may hold: integers up to 2^24 are exact in float32.
constexpr int64_t kMaxHeaderInt = int64_t(1) << 24;

// A 24-bit hash (FNV-1a) of header[0, kHeaderCheck) as integers: exact in float32 and float64.
inline int64_t header_check(const int64_t* v) {
  uint64_t hash = 1469598103934665603ull;
  for (int64_t i = 0; i < kHeaderCheck; ++i) {
    hash ^= static_cast<uint64_t>(v[i]);
    hash *= 1099511628211ull;
  }
  return static_cast<int64_t>((hash ^ (hash >> 24) ^ (hash >> 48)) & 0xFFFFFF);
}

template <typename T>
void write_prepared_header(T* p, double magic, const char* isa, int64_t nr,
                           std::initializer_list<int64_t> sizes) {
  int64_t v[kPreparedHeader] = {int64_t(magic), isa_index(isa), nr};  // rest: 0
  int64_t i = 3;
  for (int64_t s : sizes) v[i++] = s;
  v[kHeaderCheck] = header_check(v);
  for (int64_t k = 0; k < kPreparedHeader; ++k) p[k] = T(v[k]);
}

template <typename T>
void write_prepared_header(T* p, double magic, const cpu::LglUKernels<T>& gemm,
                           std::initializer_list<int64_t> sizes) {
  write_prepared_header<T>(p, magic, gemm.name, gemm.nr, sizes);
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

// One op field of a header (slot 3 + its position) and the range it must lie in.
struct HeaderField {
  const char* name;
  int64_t lo, hi;
};
inline HeaderField size_field(const char* name) { return {name, 1, kMaxHeaderInt}; }
inline HeaderField flag_field(const char* name) { return {name, 0, 1}; }

// A prepared buffer's header, read and validated field by field. Each field is an integer in
// the range its meaning allows (never cast from a NaN or an out-of-range float: that is
// undefined behaviour); the magic, ISA and panel width must be the running ones, the unused
// slots zero and the check value right.
struct PreparedHeader {
  int64_t v[kPreparedHeader];
  const char* op;

  // Size slot i (3 + the position in write_prepared_header's sizes).
  int64_t operator[](int64_t i) const { return v[i]; }
};

template <typename T>
PreparedHeader prepared_header(const char* op, const char* maker, double magic,
                               const at::Tensor& prepared, const char* isa_name, int64_t isa_nr,
                               std::initializer_list<HeaderField> fields) {
  const T* h = prepared.const_data_ptr<T>();
  TORCH_CHECK(h[0] == T(magic), op, ": prepared was not made by edgevit::", maker,
              " (header magic ", c10::str(std::setprecision(17), double(h[0])), ", expected ",
              int64_t(magic), ")");
  PreparedHeader out{};
  out.op = op;
  out.v[0] = int64_t(magic);
  // Reads slot i as an integer in [lo, hi], or fails naming the field.
  const auto field = [&](int64_t i, const char* name, int64_t lo, int64_t hi) {
    const double d = double(h[i]);
    const bool integral = std::isfinite(d) && d == std::floor(d);
    TORCH_CHECK(integral && d >= double(lo) && d <= double(hi), op, ": prepared's header field ",
                name, " must be an integer in [", lo, ", ", hi, "], got ",
                integral && std::abs(d) < 9e18 ? std::to_string(int64_t(d)) : c10::str(d),
                ": prepared is corrupt or was not made by edgevit::", maker);
    out.v[i] = int64_t(d);
  };
  field(1, "isa", 0, 3);
  field(2, "nr", 1, 1024);
  TORCH_CHECK(out.v[1] == isa_index(isa_name) && out.v[2] == isa_nr, op,
              ": prepared was packed for ISA '", kIsaNames[out.v[1]], "', but the op now runs '",
              isa_name, "' (set_cpu_isa called since?): call ", maker, " again (header nr = ",
              out.v[2], ", running nr = ", isa_nr, ")");
  int64_t i = 3;
  for (const HeaderField& f : fields) field(i++, f.name, f.lo, f.hi);
  for (; i < kHeaderCheck; ++i) field(i, "(unused)", 0, 0);
  field(kHeaderCheck, "check", 0, 0xFFFFFF);
  TORCH_CHECK(out.v[kHeaderCheck] == header_check(out.v), op, ": prepared's header check value is ",
              out.v[kHeaderCheck], ", expected ", header_check(out.v),
              " for its fields: the header was edited or is corrupt; call ", maker, " again");
  return out;
}

template <typename T>
PreparedHeader prepared_header(const char* op, const char* maker, double magic,
                               const at::Tensor& prepared, const cpu::LglUKernels<T>& gemm,
                               std::initializer_list<HeaderField> fields) {
  return prepared_header<T>(op, maker, magic, prepared, gemm.name, gemm.nr, fields);
}

// prepared holds exactly kPreparedHeader + expected elements.
inline void check_prepared_numel(const char* op, const at::Tensor& prepared, int64_t expected) {
  TORCH_CHECK(prepared.numel() == kPreparedHeader + expected, op, ": prepared has ",
              prepared.numel(), " elements, expected ", kPreparedHeader + expected);
}

}  // namespace
}  // namespace edgevit
