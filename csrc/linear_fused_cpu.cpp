// CPU kernels of edgevit::linear_fused, linear_prepare and linear_fused_prepared: argument
// checks, layouts and threading around the torch-free driver in cpu/linear_fused.cpp.
// linear_fused packs the weight on every call; linear_prepare does it once and
// linear_fused_prepared reuses it for any x (the fused EdgeViT model keeps one per LocalAgg 1x1
// convolution in eval mode).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "aten_util.h"
#include "cpu/linear_fused.h"
#include "lgl_fused_cpu.h"

namespace edgevit {
namespace {

// Prepared buffer (aten_util.h): header sizes K (in features), N (out features); then
// cpu::linear_prepare_weights' buffer.
constexpr int64_t kHeader = kPreparedHeader;
constexpr double kMagic = 20221103.0;  // exact in float32 and float64; differs from the others'

// Checks weight [N, K] (float32/64) and bias; returns (K, N).
std::pair<int64_t, int64_t> check_weight(const char* op, const at::Tensor& weight,
                                         const OptTensor& bias) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) >= 1 && weight.size(1) >= 1, op,
              ": weight must be a non-empty 2-D [out_features, in_features] tensor, got shape ",
              weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble, op,
              ": weight must be float32 or float64, got ", weight.scalar_type());
  const int64_t N = weight.size(0);
  if (bias.has_value()) {
    TORCH_CHECK(bias->sizes() == at::IntArrayRef{N}, op, ": bias must have shape [", N,
                "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == weight.scalar_type() && bias->device() == weight.device(),
                op, ": bias must have the dtype and device of weight (", weight.scalar_type(),
                ", ", weight.device(), "), got ", bias->scalar_type(), ", ", bias->device());
  }
  return {weight.size(1), N};
}

// Checks x [..., K] and residual [..., N]; returns the output shape [..., N].
std::vector<int64_t> check_x(const char* op, const at::Tensor& x, at::ScalarType dtype,
                             int64_t K, int64_t N, const OptTensor& residual) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == K, op, ": x must be [..., in_features] with "
              "in_features = ", K, ", got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == dtype, op, ": x must have the weights' dtype (", dtype,
              "), got ", x.scalar_type());
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(shape), op, ": residual must have the "
                "output's shape ", at::IntArrayRef(shape), ", got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == x.scalar_type() && residual->device() == x.device(),
                op, ": residual must have the dtype and device of x (", x.scalar_type(), ", ",
                x.device(), "), got ", residual->scalar_type(), ", ", residual->device());
  }
  return shape;
}

template <typename T>
void prepare_into(const Tables<T>& tb, const at::Tensor& weight, const OptTensor& bias,
                  at::Tensor& buffer) {
  const int64_t N = weight.size(0), K = weight.size(1);
  const at::Tensor w = weight.contiguous(), b = contig(bias);
  cpu::LinearArgs<T> a{};
  a.K = K; a.N = N;
  a.weight = w.const_data_ptr<T>();
  a.bias = ptr_or_null<T>(b);
  T* h = buffer.data_ptr<T>();
  write_prepared_header<T>(h, kMagic, tb.gemm, {K, N});
  cpu::linear_prepare_weights<T>(a, tb.gemm, h + kHeader);
}

template <typename T>
at::Tensor forward(const Tables<T>& tb, const at::Tensor& x, int64_t K, int64_t N,
                   const std::vector<int64_t>& shape, const OptTensor& residual,
                   const at::Tensor& prepared) {
  const at::Tensor xc = x.contiguous(), res = contig(residual);
  at::Tensor out = at::empty(shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  cpu::LinearArgs<T> a{};
  a.M = K > 0 ? x.numel() / K : 0; a.K = K; a.N = N;
  a.x = xc.const_data_ptr<T>();
  a.residual = ptr_or_null<T>(res);
  a.out = out.data_ptr<T>();
  cpu::linear_forward<T>(a, tb.gemm, prepared.const_data_ptr<T>() + kHeader,
                         pool_parallel_for());
  return out;
}

at::Tensor new_prepared(const at::Tensor& like, int64_t K, int64_t N, int64_t nr) {
  check_packed("linear_prepare", "the packed weight in_features * out_features", K, N, nr);
  return at::empty({kHeader + cpu::linear_weights_size(K, N, nr)},
                   like.options().memory_format(at::MemoryFormat::Contiguous));
}

at::Tensor linear_fused_cpu(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                            const OptTensor& residual) {
  const auto [K, N] = check_weight("linear_fused", weight, bias);
  const std::vector<int64_t> shape =
      check_x("linear_fused", x, weight.scalar_type(), K, N, residual);
  TORCH_CHECK(x.device() == weight.device(), "linear_fused: x must be on the device of weight (",
              weight.device(), "), got ", x.device());
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_fused", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    at::Tensor prepared = new_prepared(x, K, N, tb.gemm.nr);
    prepare_into<scalar_t>(tb, weight, bias, prepared);
    out = forward<scalar_t>(tb, x, K, N, shape, residual, prepared);
  });
  return out;
}

at::Tensor linear_prepare_cpu(const at::Tensor& weight, const OptTensor& bias) {
  const auto [K, N] = check_weight("linear_prepare", weight, bias);
  at::Tensor prepared;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "linear_prepare", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    prepared = new_prepared(weight, K, N, tb.gemm.nr);
    prepare_into<scalar_t>(tb, weight, bias, prepared);
  });
  return prepared;
}

at::Tensor linear_fused_prepared_cpu(const at::Tensor& x, const at::Tensor& prepared,
                                     int64_t out_features, const OptTensor& residual) {
  const char* op = "linear_fused_prepared";
  check_prepared_tensor(op, "linear_prepare", x, prepared);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_fused_prepared", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    const PreparedHeader h =
        prepared_header<scalar_t>(op, "linear_prepare", kMagic, prepared, tb.gemm,
                                  {size_field("in_features"), size_field("out_features")});
    const int64_t K = h[3], N = h[4];
    check_packed(op, "the packed weight in_features * out_features", K, N, tb.gemm.nr);
    check_prepared_numel(op, prepared, cpu::linear_weights_size(K, N, tb.gemm.nr));
    TORCH_CHECK(out_features == N, op, ": prepared holds a weight of ", N,
                " out_features, but out_features = ", out_features, " was given");
    const std::vector<int64_t> shape = check_x(op, x, x.scalar_type(), K, N, residual);
    out = forward<scalar_t>(tb, x, K, N, shape, residual, prepared);
  });
  return out;
}

}  // namespace

int64_t linear_prepared_numel(int64_t in_features, int64_t out_features, c10::ScalarType dtype) {
  TORCH_CHECK(in_features >= 1 && out_features >= 1, "linear_prepared_numel: in_features and "
              "out_features must be >= 1, got ", in_features, ", ", out_features);
  const int64_t nr = dtype == at::kDouble ? cpu::scalar_ukernels<double>().nr : float_ukernels().nr;
  check_packed("linear_prepared_numel", "the packed weight in_features * out_features",
               in_features, out_features, nr);
  return kHeader + cpu::linear_weights_size(in_features, out_features, nr);
}

TORCH_LIBRARY_IMPL(edgevit, CPU, m) {
  m.impl("linear_fused", &linear_fused_cpu);
  m.impl("linear_prepare", &linear_prepare_cpu);
  m.impl("linear_fused_prepared", &linear_fused_prepared_cpu);
}

}  // namespace edgevit
