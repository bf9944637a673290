// CPU kernels of edgevit::mlp_fused, mlp_prepare and mlp_fused_prepared: argument checks,
// layouts and threading around the torch-free driver in cpu/mlp_fused.cpp.
// mlp_fused prepares the weights (packing, LayerNorm affine folded into fc1) on every call;
// mlp_prepare does it once and mlp_fused_prepared reuses the buffer for any x (the fused EdgeViT
// model keeps one per MLP in eval mode).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "aten_util.h"
#include "cpu/isa.h"
#include "cpu/mlp_fused.h"
#include "lgl_fused_cpu.h"

namespace edgevit {
namespace {

// Prepared buffer (aten_util.h): header sizes C, hidden, layer_norm; then
// cpu::mlp_prepare_weights' buffer.
constexpr int64_t kHeader = kPreparedHeader;
constexpr double kMagic = 20221101.0;  // exact in float32 and float64; differs from lgl's

void check_weight(const char* op, const at::Tensor& like, const OptTensor& t, const char* name,
                  at::IntArrayRef expected, bool required) {
  if (!t.has_value()) {
    TORCH_CHECK(!required, op, ": ", name, " is required, got None");
    return;
  }
  TORCH_CHECK(t->sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ",
              t->sizes());
  TORCH_CHECK(t->scalar_type() == like.scalar_type(), op, ": ", name,
              " must have the dtype of fc1_weight (", like.scalar_type(), "), got ",
              t->scalar_type());
  TORCH_CHECK(t->device() == like.device(), op, ": ", name, " must be on the device of "
              "fc1_weight (", like.device(), "), got ", t->device());
}

// Checks the weights; returns (C, hidden).
std::pair<int64_t, int64_t> check_weights(const char* op, const at::Tensor& fc1_weight,
                                          const OptTensor& fc1_bias, const at::Tensor& fc2_weight,
                                          const OptTensor& fc2_bias, bool layer_norm,
                                          const OptTensor& norm_weight,
                                          const OptTensor& norm_bias) {
  TORCH_CHECK(fc1_weight.dim() == 2, op, ": fc1_weight must be 2-D [hidden, C], got shape ",
              fc1_weight.sizes());
  TORCH_CHECK(fc1_weight.scalar_type() == at::kFloat || fc1_weight.scalar_type() == at::kDouble,
              op, ": the weights must be float32 or float64, got ", fc1_weight.scalar_type());
  const int64_t hidden = fc1_weight.size(0), C = fc1_weight.size(1);
  TORCH_CHECK(hidden >= 1 && C >= 1, op, ": fc1_weight must be non-empty, got shape ",
              fc1_weight.sizes());
  check_weight(op, fc1_weight, fc1_bias, "fc1_bias", {hidden}, false);
  check_weight(op, fc1_weight, fc2_weight, "fc2_weight", {C, hidden}, true);
  check_weight(op, fc1_weight, fc2_bias, "fc2_bias", {C}, false);
  TORCH_CHECK(layer_norm || (!norm_weight.has_value() && !norm_bias.has_value()), op,
              ": norm_weight and norm_bias must be None when layer_norm is False");
  check_weight(op, fc1_weight, norm_weight, "norm_weight", {C}, false);
  check_weight(op, fc1_weight, norm_bias, "norm_bias", {C}, false);
  return {C, hidden};
}

void check_x(const char* op, const at::Tensor& x, const at::Tensor& like, int64_t C) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == C, op, ": x must be [..., C] with C = ", C,
              " (the weights' features), got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == like.scalar_type(), op, ": x must have the weights' dtype (",
              like.scalar_type(), "), got ", x.scalar_type());
  TORCH_CHECK(x.device() == like.device(), op, ": x must be on the weights' device (",
              like.device(), "), got ", x.device());
}

template <typename T>
void prepare_into(const Tables<T>& tb, int64_t C, int64_t hidden, const at::Tensor& fc1_weight,
                  const OptTensor& fc1_bias, const at::Tensor& fc2_weight,
                  const OptTensor& fc2_bias, bool layer_norm, const OptTensor& norm_weight,
                  const OptTensor& norm_bias, at::Tensor& buffer) {
  const at::Tensor w1 = fc1_weight.contiguous(), w2 = fc2_weight.contiguous();
  const at::Tensor b1 = contig(fc1_bias), b2 = contig(fc2_bias);
  const at::Tensor nw = contig(norm_weight), nb = contig(norm_bias);
  cpu::MlpArgs<T> a{};
  a.C = C; a.hidden = hidden; a.layer_norm = layer_norm;
  a.norm_w = ptr_or_null<T>(nw);
  a.norm_b = ptr_or_null<T>(nb);
  a.fc1_w = w1.const_data_ptr<T>();
  a.fc1_b = ptr_or_null<T>(b1);
  a.fc2_w = w2.const_data_ptr<T>();
  a.fc2_b = ptr_or_null<T>(b2);
  T* p = buffer.data_ptr<T>();
  write_prepared_header<T>(p, kMagic, tb.gemm, {C, hidden, layer_norm ? 1 : 0});
  cpu::mlp_prepare_weights<T>(a, tb.gemm, p + kHeader, pool_parallel_for());
}

template <typename T>
at::Tensor forward(const Tables<T>& tb, const at::Tensor& x, int64_t C, int64_t hidden,
                   bool layer_norm, double norm_eps, bool residual, const at::Tensor& prepared) {
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  cpu::MlpArgs<T> a{};
  a.M = x.numel() / C; a.C = C; a.hidden = hidden;
  a.layer_norm = layer_norm; a.residual = residual;
  // Each task streams both weights. While they are small (<= 64K elements, stages 1-2) blocks of
  // 32 rows keep the hidden tile in L1; larger weights (C >= 144) get one block per thread, capped
  // so the hidden tile takes at most a quarter of this CPU's L2 (the rest holds the weight panels
  // streaming through and the rows in and out), to stream the weights as few times as possible.
  // When the cap splits a thread's rows, every thread gets the same number of blocks (C = 240,
  // 196 rows, 2 threads: 4 blocks of 49, not 3 of 66 with one thread idle a third of the time).
  // The blocking changes only which rows share a task, never a row's arithmetic.
  if (2 * C * hidden > 65536) {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t cap = std::max<int64_t>(8, cpu::mlp_hidden_tile_elements(sizeof(T)) / hidden);
    const int64_t per_thread = (a.M + threads - 1) / threads;
    const int64_t blocks = threads * ((per_thread + cap - 1) / cap);
    a.block_rows = std::max<int64_t>(8, (a.M + blocks - 1) / blocks);
  }
  a.eps = static_cast<T>(norm_eps);
  a.x = xc.const_data_ptr<T>();
  a.out = out.data_ptr<T>();
  cpu::mlp_forward<T>(a, tb.gemm, tb.mlp, prepared.const_data_ptr<T>() + kHeader,
                      pool_parallel_for());
  return out;
}

// Every product cpu::mlp_weights_size forms (MlpLayout, cpu/mlp_fused.cpp) below kMaxSize.
void check_weights_size(const char* op, int64_t C, int64_t hidden, int64_t nr) {
  check_packed(op, "the packed fc1 weight C * hidden", C, hidden, nr);
  check_packed(op, "the packed fc2 weight hidden * C", hidden, C, nr);
}

at::Tensor new_prepared(const at::Tensor& like, int64_t C, int64_t hidden, int64_t nr) {
  check_weights_size("mlp_prepare", C, hidden, nr);
  return at::empty({kHeader + cpu::mlp_weights_size(C, hidden, nr)},
                   like.options().memory_format(at::MemoryFormat::Contiguous));
}

at::Tensor mlp_fused_cpu(const at::Tensor& x, const at::Tensor& fc1_weight,
                         const OptTensor& fc1_bias, const at::Tensor& fc2_weight,
                         const OptTensor& fc2_bias, bool layer_norm,
                         const OptTensor& norm_weight, const OptTensor& norm_bias,
                         double norm_eps, bool residual) {
  const auto [C, hidden] = check_weights("mlp_fused", fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                                         layer_norm, norm_weight, norm_bias);
  check_x("mlp_fused", x, fc1_weight, C);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlp_fused", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    at::Tensor prepared = new_prepared(x, C, hidden, tb.gemm.nr);
    prepare_into<scalar_t>(tb, C, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                           layer_norm, norm_weight, norm_bias, prepared);
    out = forward<scalar_t>(tb, x, C, hidden, layer_norm, norm_eps, residual, prepared);
  });
  return out;
}

at::Tensor mlp_prepare_cpu(const at::Tensor& fc1_weight, const OptTensor& fc1_bias,
                           const at::Tensor& fc2_weight, const OptTensor& fc2_bias,
                           bool layer_norm, const OptTensor& norm_weight,
                           const OptTensor& norm_bias) {
  const auto [C, hidden] = check_weights("mlp_prepare", fc1_weight, fc1_bias, fc2_weight,
                                         fc2_bias, layer_norm, norm_weight, norm_bias);
  at::Tensor prepared;
  AT_DISPATCH_FLOATING_TYPES(fc1_weight.scalar_type(), "mlp_prepare", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    prepared = new_prepared(fc1_weight, C, hidden, tb.gemm.nr);
    prepare_into<scalar_t>(tb, C, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                           layer_norm, norm_weight, norm_bias, prepared);
  });
  return prepared;
}

at::Tensor mlp_fused_prepared_cpu(const at::Tensor& x, const at::Tensor& prepared,
                                  double norm_eps, bool residual) {
  check_prepared_tensor("mlp_fused_prepared", "mlp_prepare", x, prepared);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mlp_fused_prepared", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    const PreparedHeader h =
        prepared_header<scalar_t>("mlp_fused_prepared", "mlp_prepare", kMagic, prepared, tb.gemm,
                                  {size_field("C"), size_field("hidden"), flag_field("layer_norm")});
    const int64_t C = h[3], hidden = h[4];
    const bool layer_norm = h[5] == 1;
    check_weights_size("mlp_fused_prepared", C, hidden, tb.gemm.nr);
    check_prepared_numel("mlp_fused_prepared", prepared,
                         cpu::mlp_weights_size(C, hidden, tb.gemm.nr));
    TORCH_CHECK(x.dim() >= 1 && x.size(-1) == C, "mlp_fused_prepared: x must be [..., C] with "
                "C = ", C, " (the prepared weights' features), got shape ", x.sizes());
    out = forward<scalar_t>(tb, x, C, hidden, layer_norm, norm_eps, residual, prepared);
  });
  return out;
}

}  // namespace

int64_t mlp_prepared_numel(int64_t C, int64_t hidden, c10::ScalarType dtype) {
  TORCH_CHECK(C >= 1 && hidden >= 1, "mlp_prepared_numel: C and hidden must be >= 1, got C = ",
              C, ", hidden = ", hidden);
  const int64_t nr = dtype == at::kDouble ? cpu::scalar_ukernels<double>().nr : float_ukernels().nr;
  check_weights_size("mlp_prepared_numel", C, hidden, nr);
  return kHeader + cpu::mlp_weights_size(C, hidden, nr);
}

TORCH_LIBRARY_IMPL(edgevit, CPU, m) {
  m.impl("mlp_fused", &mlp_fused_cpu);
  m.impl("mlp_prepare", &mlp_prepare_cpu);
  m.impl("mlp_fused_prepared", &mlp_fused_prepared_cpu);
}

}  // namespace edgevit
