// CPU kernel of edgevit::lgl_fused: argument checks, layouts and threading around the
// torch-free fused driver in cpu/lgl_fused.cpp.
#include "lgl_fused_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>

#include "cpu/isa.h"
#include "cpu/lgl_fused.h"

namespace edgevit {
namespace {

using OptTensor = c10::optional<at::Tensor>;

// The float micro-kernels for the current EDGEVIT_CPU_ISA (re-read every call, so it can be
// changed between calls; the choice itself is cached per value).
const cpu::LglUKernels<float>& float_ukernels() {
  static std::mutex mu;
  static std::string cached_env = "\x01";  // never a real value: forces the first selection
  static const cpu::LglUKernels<float>* cached = nullptr;
  const char* env = std::getenv("EDGEVIT_CPU_ISA");
  const std::string key = env ? env : "";
  std::lock_guard<std::mutex> lock(mu);
  if (key != cached_env) {
    std::string error;
    const cpu::LglUKernels<float>* uk = cpu::select_ukernels(key.c_str(), &error);
    TORCH_CHECK(uk != nullptr, error);
    cached = uk;
    cached_env = key;
  }
  return *cached;
}

void check_param(const at::Tensor& x, const at::Tensor& t, const char* name,
                 at::IntArrayRef expected) {
  TORCH_CHECK(t.defined(), "lgl_fused: ", name, " is required, got None");
  TORCH_CHECK(t.sizes() == expected, "lgl_fused: ", name, " must have shape ", expected,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "lgl_fused: ", name, " must have the dtype of x (",
              x.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "lgl_fused: ", name, " must be on the device of x (",
              x.device(), "), got ", t.device());
}

void check_optional(const at::Tensor& x, const OptTensor& t, const char* name,
                    at::IntArrayRef expected) {
  if (t.has_value()) check_param(x, *t, name, expected);
}

void check_args(const at::Tensor& x, int64_t H, int64_t W, int64_t num_heads, int64_t r,
                const at::Tensor& qkv_weight, const OptTensor& qkv_bias,
                const OptTensor& prop_weight, const OptTensor& prop_bias,
                const OptTensor& norm_weight, const OptTensor& norm_bias,
                const at::Tensor& proj_weight, const OptTensor& proj_bias) {
  TORCH_CHECK(x.dim() == 3, "lgl_fused: x must be 3-D [B, N, C], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "lgl_fused: x must be float32 or float64 on CPU, got ", x.scalar_type());
  TORCH_CHECK(H >= 1 && W >= 1, "lgl_fused: H and W must be >= 1, got H=", H, ", W=", W);
  const int64_t N = x.size(1), C = x.size(2);
  int64_t HW = 0;
  TORCH_CHECK(!c10::mul_overflows(H, W, &HW) && N == HW, "lgl_fused: x.size(1) must equal H*W = ",
              H, "*", W, c10::mul_overflows(H, W, &HW) ? " (overflows int64)" : "",
              c10::mul_overflows(H, W, &HW) ? "" : " = " + std::to_string(HW), ", got ", N);
  TORCH_CHECK(num_heads >= 1, "lgl_fused: num_heads must be >= 1, got ", num_heads);
  TORCH_CHECK(C >= 1 && C % num_heads == 0, "lgl_fused: C = x.size(2) must be a positive multiple "
              "of num_heads = ", num_heads, ", got C = ", C);
  TORCH_CHECK(r >= 1, "lgl_fused: sr_ratio must be >= 1, got ", r);
  check_param(x, qkv_weight, "qkv_weight", {3 * C, C});
  check_optional(x, qkv_bias, "qkv_bias", {3 * C});
  check_param(x, proj_weight, "proj_weight", {C, C});
  check_optional(x, proj_bias, "proj_bias", {C});
  const std::pair<const OptTensor*, const char*> prop_norm[] = {
      {&prop_weight, "prop_weight"}, {&prop_bias, "prop_bias"},
      {&norm_weight, "norm_weight"}, {&norm_bias, "norm_bias"}};
  for (const auto& [t, name] : prop_norm) {
    TORCH_CHECK(t->has_value() == (r > 1), "lgl_fused: ", name,
                r > 1 ? " is required when sr_ratio > 1 (got None, sr_ratio = "
                      : " must be None when sr_ratio = 1 (got a tensor, sr_ratio = ",
                r, ")");
  }
  if (r > 1) {
    check_param(x, *prop_weight, "prop_weight", {C, 1, r, r});
    check_param(x, *prop_bias, "prop_bias", {C});
    check_param(x, *norm_weight, "norm_weight", {C});
    check_param(x, *norm_bias, "norm_bias", {C});
  }
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename T>
void run(const cpu::LglUKernels<T>& uk, const at::Tensor& x, int64_t H, int64_t W,
         int64_t num_heads, int64_t r, double scale, const at::Tensor& qkv_weight,
         const OptTensor& qkv_bias, const OptTensor& prop_weight, const OptTensor& prop_bias,
         const OptTensor& norm_weight, const OptTensor& norm_bias, double norm_eps,
         const at::Tensor& proj_weight, const OptTensor& proj_bias, at::Tensor& out) {
  const int64_t B = x.size(0), C = x.size(2);
  const at::Tensor qkv_w = qkv_weight.contiguous(), proj_w = proj_weight.contiguous();
  auto contig = [](const OptTensor& t) { return t.has_value() ? t->contiguous() : at::Tensor(); };
  const at::Tensor qkv_b = contig(qkv_bias), proj_b = contig(proj_bias);
  const at::Tensor prop_b = contig(prop_bias), norm_w = contig(norm_weight), norm_b = contig(norm_bias);
  // [C, 1, r, r] -> [r*r, C]: one contiguous row of channel weights per window offset.
  const at::Tensor prop_w = r > 1 ? prop_weight->reshape({C, r * r}).t().contiguous() : at::Tensor();
  at::Tensor workspace = at::empty({cpu::lgl_workspace_size(B, H, W, C, num_heads, r, uk.nr)}, x.options());

  cpu::LglArgs<T> a{};
  a.B = B; a.H = H; a.W = W; a.C = C; a.num_heads = num_heads; a.r = r;
  a.scale = static_cast<T>(scale);
  a.eps = static_cast<T>(norm_eps);
  a.x = x.const_data_ptr<T>();
  a.x_sb = x.stride(0); a.x_sn = x.stride(1); a.x_sc = x.stride(2);
  a.qkv_w = qkv_w.const_data_ptr<T>();
  a.qkv_b = ptr_or_null<T>(qkv_b);
  a.prop_w = ptr_or_null<T>(prop_w);
  a.prop_b = ptr_or_null<T>(prop_b);
  a.norm_w = ptr_or_null<T>(norm_w);
  a.norm_b = ptr_or_null<T>(norm_b);
  a.proj_w = proj_w.const_data_ptr<T>();
  a.proj_b = ptr_or_null<T>(proj_b);
  a.out = out.data_ptr<T>();

  cpu::lgl_fused_forward<T>(a, uk, workspace.data_ptr<T>(),
                            [](int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
                              at::parallel_for(0, n, 1, fn);
                            });
}

at::Tensor lgl_fused_cpu(const at::Tensor& x, int64_t H, int64_t W, int64_t num_heads,
                         int64_t sr_ratio, double scale, const at::Tensor& qkv_weight,
                         const OptTensor& qkv_bias, const OptTensor& prop_weight,
                         const OptTensor& prop_bias, const OptTensor& norm_weight,
                         const OptTensor& norm_bias, double norm_eps,
                         const at::Tensor& proj_weight, const OptTensor& proj_bias) {
  check_args(x, H, W, num_heads, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias,
             norm_weight, norm_bias, proj_weight, proj_bias);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  if (x.scalar_type() == at::kFloat) {
    run<float>(float_ukernels(), x, H, W, num_heads, sr_ratio, scale, qkv_weight, qkv_bias,
               prop_weight, prop_bias, norm_weight, norm_bias, norm_eps, proj_weight, proj_bias,
               out);
  } else {
    run<double>(cpu::scalar_ukernels<double>(), x, H, W, num_heads, sr_ratio, scale, qkv_weight,
                qkv_bias, prop_weight, prop_bias, norm_weight, norm_bias, norm_eps, proj_weight,
                proj_bias, out);
  }
  return out;
}

}  // namespace

std::string cpu_isa() { return float_ukernels().name; }

std::string supported_cpu_isas() { return cpu::supported_isas(); }

TORCH_LIBRARY_IMPL(edgevit, CPU, m) { m.impl("lgl_fused", &lgl_fused_cpu); }

}  // namespace edgevit
