// CPU kernels of edgevit::lgl_fused, lgl_prepare and lgl_fused_prepared: argument checks,
// layouts and threading around the torch-free fused driver in cpu/lgl_fused.cpp.
// lgl_fused runs phase 0 (weight preparation) and phases 1-3 on every call; lgl_prepare runs
// phase 0 alone and returns its buffer, which lgl_fused_prepared reuses for any x (the fused
// EdgeViT model keeps one per block in eval mode).
#include "lgl_fused_cpu.h"
#include "aten_util.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "cpu/isa.h"
#include "cpu/lgl_fused.h"
#include "lgl_weight_cache.h"

namespace edgevit {
namespace {


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

// x, the sizes and the head count (shared by lgl_fused and lgl_fused_prepared).
void check_x(const at::Tensor& x, int64_t H, int64_t W, int64_t num_heads, int64_t r) {
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
}

// The weights, against x (or, for lgl_prepare, against a tensor of the weights' dtype and
// device) and r.
void check_weights(const at::Tensor& x, int64_t C, int64_t r, const at::Tensor& qkv_weight,
                   const OptTensor& qkv_bias, const OptTensor& prop_weight,
                   const OptTensor& prop_bias, const OptTensor& norm_weight,
                   const OptTensor& norm_bias, const at::Tensor& proj_weight,
                   const OptTensor& proj_bias) {
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

// Every product cpu::lgl_weights_size forms for (C, r, nr) (WeightsLayout, cpu/lgl_fused.cpp),
// below kMaxSize; before any of it is computed.
void check_weights_size(const char* op, int64_t C, int64_t r, int64_t nr) {
  const int64_t R = checked_product(op, "sr_ratio * sr_ratio", {r, r});
  const int64_t RC = checked_product(op, "sr_ratio * sr_ratio * C", {R, C});
  check_packed(op, "the packed qkv weight C * 3C", C, checked_product(op, "3C", {3, C}), nr);
  check_packed(op, "the packed folded weight C * (sr_ratio * sr_ratio * C)", C, RC, nr);
}

// The same for cpu::lgl_workspace_size (Layout, cpu/lgl_fused.cpp); H * W and C % num_heads
// were checked by check_x.
void check_workspace_size(const char* op, int64_t B, int64_t H, int64_t W, int64_t C,
                          int64_t num_heads, int64_t r, int64_t nr) {
  const int64_t n = ((H + r - 1) / r) * ((W + r - 1) / r);
  checked_product(op, "the workspace B * n * 3C", {B, n, 3, C});
  checked_product(op, "the workspace B * n * sr_ratio * sr_ratio", {B, n, r, r});
  check_packed(op, "a packed k^T tile", C / num_heads, n, nr);
  check_packed(op, "a packed v tile", n, C / num_heads, nr);
}

// ---------------------------------------------------------------------------------------------
// Prepared weights (lgl_prepare / lgl_fused_prepared)
//
// A 1-D tensor of the weights' dtype: a header of kHeader elements, then the buffer
// cpu::lgl_prepare_weights fills (packed for one micro-kernel table: its panel width and ISA).
// Header (write_prepared_header, aten_util.h): magic, ISA index, panel width nr, C, sr_ratio,
// pre_norm (1 when the op applies an input LayerNorm, its affine folded into qkv), zeros, check.
constexpr int64_t kHeader = kPreparedHeader;
constexpr double kMagic = 20221023.0;  // exact in float32 and float64
template <typename T>
const cpu::LglUKernels<T>& ukernels() { return tables<T>().gemm; }

// Runs phase 0 into `buffer` (kHeader + lgl_weights_size elements) and writes its header.
template <typename T>
void prepare_into(const cpu::LglUKernels<T>& uk, int64_t C, int64_t r,
                  const at::Tensor& qkv_weight, const OptTensor& qkv_bias,
                  const OptTensor& prop_weight, const OptTensor& prop_bias,
                  const OptTensor& norm_weight, const OptTensor& norm_bias,
                  const at::Tensor& proj_weight, const OptTensor& proj_bias, bool pre_norm,
                  const OptTensor& pre_norm_weight, const OptTensor& pre_norm_bias,
                  bool a_tile, at::Tensor& buffer) {
  const at::Tensor qkv_w = qkv_weight.contiguous(), proj_w = proj_weight.contiguous();
  const at::Tensor qkv_b = contig(qkv_bias), proj_b = contig(proj_bias), prop_b = contig(prop_bias);
  const at::Tensor norm_w = contig(norm_weight), norm_b = contig(norm_bias);
  const at::Tensor pre_w = contig(pre_norm_weight), pre_b = contig(pre_norm_bias);
  // [C, 1, r, r] -> [r*r, C]: one contiguous row of channel weights per window offset.
  const at::Tensor prop_w = r > 1 ? prop_weight->reshape({C, r * r}).t().contiguous() : at::Tensor();
  cpu::LglArgs<T> a{};
  a.C = C; a.r = r;
  a.qkv_w = qkv_w.const_data_ptr<T>();
  a.qkv_b = ptr_or_null<T>(qkv_b);
  a.prop_w = ptr_or_null<T>(prop_w);
  a.prop_b = ptr_or_null<T>(prop_b);
  a.norm_w = ptr_or_null<T>(norm_w);
  a.norm_b = ptr_or_null<T>(norm_b);
  a.proj_w = proj_w.const_data_ptr<T>();
  a.proj_b = ptr_or_null<T>(proj_b);
  a.pre_norm = pre_norm;
  a.pre_w = ptr_or_null<T>(pre_w);
  a.pre_b = ptr_or_null<T>(pre_b);
  a.a_tile = a_tile;
  T* p = buffer.data_ptr<T>();
  write_prepared_header<T>(p, kMagic, uk, {C, r, pre_norm ? 1 : 0});
  cpu::lgl_prepare_weights<T>(a, uk, p + kHeader, pool_parallel_for());
}

// Phases 1-3 with a prepared buffer (header already validated); pre_norm as prepared says,
// residual needs x.stride(2) == 1.
template <typename T>
void forward(const Tables<T>& tb, const at::Tensor& x, int64_t H, int64_t W,
             int64_t num_heads, int64_t r, double scale, double norm_eps,
             const at::Tensor& prepared, bool pre_norm, double pre_norm_eps, bool residual,
             bool a_tile, at::Tensor& out) {
  const cpu::LglUKernels<T>& uk = tb.gemm;
  const int64_t B = x.size(0), C = x.size(2);
  cpu::LglArgs<T> a{};
  a.B = B; a.H = H; a.W = W; a.C = C; a.num_heads = num_heads; a.r = r;
  a.scale = static_cast<T>(scale);
  a.eps = static_cast<T>(norm_eps);
  a.x = x.const_data_ptr<T>();
  a.x_sb = x.stride(0); a.x_sn = x.stride(1); a.x_sc = x.stride(2);
  a.out = out.data_ptr<T>();
  a.pre_norm = pre_norm;
  a.pre_eps = static_cast<T>(pre_norm_eps);
  a.residual = residual;
  a.a_tile = a_tile;
  check_workspace_size("lgl_fused", B, H, W, C, num_heads, r, uk.nr);
  at::Tensor workspace =
      at::empty({cpu::lgl_workspace_size(B, H, W, C, num_heads, r, uk.nr)}, x.options());
  cpu::lgl_fused_forward<T>(a, uk, prepared.const_data_ptr<T>() + kHeader,
                            workspace.data_ptr<T>(), pool_parallel_for(), &tb.mlp);
}

// a_tile: the A-tile form of the fold where it applies (cpu::LglArgs::a_tile).
at::Tensor new_prepared(const at::Tensor& like, int64_t C, int64_t r, int64_t nr,
                        bool a_tile) {
  check_weights_size("lgl_prepare", C, r, nr);
  return at::empty({kHeader + cpu::lgl_weights_size(C, r, nr, a_tile)},
                   like.options().memory_format(at::MemoryFormat::Contiguous));
}

at::Tensor lgl_fused_cpu(const at::Tensor& x, int64_t H, int64_t W, int64_t num_heads,
                         int64_t sr_ratio, double scale, const at::Tensor& qkv_weight,
                         const OptTensor& qkv_bias, const OptTensor& prop_weight,
                         const OptTensor& prop_bias, const OptTensor& norm_weight,
                         const OptTensor& norm_bias, double norm_eps,
                         const at::Tensor& proj_weight, const OptTensor& proj_bias) {
  check_x(x, H, W, num_heads, sr_ratio);
  const int64_t C = x.size(2);
  check_weights(x, C, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias, norm_weight,
                norm_bias, proj_weight, proj_bias);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lgl_fused", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    check_weights_size("lgl_fused", C, sr_ratio, tb.gemm.nr);
    // Weights for this one call: the A-tile form where building Wf (R*C*C) would cost more
    // than scaling A (B*H*W*C; see cpu/lgl_fused.cpp).
    const bool a_tile = sr_ratio * sr_ratio * C >= x.size(0) * H * W;
    // Reused from the weight cache when these weights' bytes were prepared before (see
    // lgl_weight_cache.h); prepared here otherwise.
    const std::vector<at::Tensor> weights = {
        qkv_weight.contiguous(), contig(qkv_bias),  contig(prop_weight), contig(prop_bias),
        contig(norm_weight),     contig(norm_bias), proj_weight.contiguous(), contig(proj_bias)};
    const LglWeightCache::Key key = {int64_t(x.scalar_type()), isa_index(tb.gemm.name),
                                     tb.gemm.nr, C, sr_ratio, a_tile};
    LglWeightCache& cache = LglWeightCache::get();
    const size_t budget = LglWeightCache::budget(weights);
    at::Tensor prepared = budget > 0 ? cache.find(key, weights) : at::Tensor();
    if (!prepared.defined()) {
      prepared = new_prepared(x, C, sr_ratio, tb.gemm.nr, a_tile);
      const auto opt = [&](int i) { return weights[i].defined() ? OptTensor(weights[i]) : OptTensor(); };
      prepare_into<scalar_t>(tb.gemm, C, sr_ratio, weights[0], opt(1), opt(2), opt(3), opt(4),
                             opt(5), weights[6], opt(7), false, {}, {}, a_tile, prepared);
      if (budget > 0) cache.insert(key, weights, prepared, budget);
    }
    forward<scalar_t>(tb, x, H, W, num_heads, sr_ratio, scale, norm_eps, prepared, false, 0.0,
                      false, a_tile, out);
  });
  return out;
}

at::Tensor lgl_prepare_cpu(const at::Tensor& qkv_weight, const OptTensor& qkv_bias,
                           const OptTensor& prop_weight, const OptTensor& prop_bias,
                           const OptTensor& norm_weight, const OptTensor& norm_bias,
                           const at::Tensor& proj_weight, const OptTensor& proj_bias,
                           int64_t sr_ratio, bool pre_norm, const OptTensor& pre_norm_weight,
                           const OptTensor& pre_norm_bias) {
  TORCH_CHECK(qkv_weight.dim() == 2 && qkv_weight.size(0) == 3 * qkv_weight.size(1),
              "lgl_prepare: qkv_weight must be [3C, C], got shape ", qkv_weight.sizes());
  TORCH_CHECK(qkv_weight.scalar_type() == at::kFloat || qkv_weight.scalar_type() == at::kDouble,
              "lgl_prepare: the weights must be float32 or float64 on CPU, got ",
              qkv_weight.scalar_type());
  const int64_t C = qkv_weight.size(1);
  check_weights(qkv_weight, C, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias,
                norm_weight, norm_bias, proj_weight, proj_bias);
  for (const auto& [t, name] : {std::pair<const OptTensor*, const char*>{&pre_norm_weight,
                                                                         "pre_norm_weight"},
                                {&pre_norm_bias, "pre_norm_bias"}}) {
    TORCH_CHECK(pre_norm || !t->has_value(), "lgl_prepare: ", name,
                " must be None when pre_norm is False, got a tensor");
    if (t->has_value()) check_param(qkv_weight, **t, name, {C});
  }
  at::Tensor prepared;
  AT_DISPATCH_FLOATING_TYPES(qkv_weight.scalar_type(), "lgl_prepare", [&] {
    const auto& uk = ukernels<scalar_t>();
    prepared = new_prepared(qkv_weight, C, sr_ratio, uk.nr, false);
    prepare_into<scalar_t>(uk, C, sr_ratio, qkv_weight, qkv_bias, prop_weight, prop_bias,
                           norm_weight, norm_bias, proj_weight, proj_bias, pre_norm,
                           pre_norm_weight, pre_norm_bias, false, prepared);
  });
  return prepared;
}

at::Tensor lgl_fused_prepared_cpu(const at::Tensor& x, int64_t H, int64_t W, int64_t num_heads,
                                  int64_t sr_ratio, double scale, double norm_eps,
                                  const at::Tensor& prepared, double pre_norm_eps,
                                  bool residual) {
  check_x(x, H, W, num_heads, sr_ratio);
  const int64_t C = x.size(2);
  TORCH_CHECK(prepared.dim() == 1 && prepared.is_contiguous() && prepared.numel() >= kHeader,
              "lgl_fused_prepared: prepared must be a contiguous 1-D tensor made by "
              "edgevit::lgl_prepare, got shape ", prepared.sizes());
  TORCH_CHECK(prepared.scalar_type() == x.scalar_type() && prepared.device() == x.device(),
              "lgl_fused_prepared: prepared must have the dtype and device of x (",
              x.scalar_type(), ", ", x.device(), "), got ", prepared.scalar_type(), ", ",
              prepared.device());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lgl_fused_prepared", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    const auto& uk = tb.gemm;
    const PreparedHeader h = prepared_header<scalar_t>(
        "lgl_fused_prepared", "lgl_prepare", kMagic, prepared, uk,
        {size_field("C"), size_field("sr_ratio"), flag_field("pre_norm")});
    TORCH_CHECK(h[3] == C && h[4] == sr_ratio, "lgl_fused_prepared: prepared holds weights for "
                "C = ", h[3], ", sr_ratio = ", h[4], ", but x has C = ", C, " and sr_ratio = ",
                sr_ratio);
    check_weights_size("lgl_fused_prepared", C, sr_ratio, uk.nr);
    check_prepared_numel("lgl_fused_prepared", prepared,
                         cpu::lgl_weights_size(C, sr_ratio, uk.nr));
    const bool pre_norm = h[5] == 1;
    // The residual is read row by row (x_sc == 1); any other layout is copied once.
    const at::Tensor xr = residual && x.stride(2) != 1 ? x.contiguous() : x;
    if (out.numel() > 0)
      forward<scalar_t>(tb, xr, H, W, num_heads, sr_ratio, scale, norm_eps, prepared, pre_norm,
                        pre_norm_eps, residual, false, out);
  });
  return out;
}

}  // namespace

void lgl_weight_cache_clear() { LglWeightCache::get().clear(); }

std::vector<int64_t> lgl_weight_cache_info() { return LglWeightCache::get().info(); }

int64_t lgl_prepared_numel(int64_t C, int64_t sr_ratio, c10::ScalarType dtype) {
  TORCH_CHECK(C >= 1 && sr_ratio >= 1, "lgl_prepared_numel: C and sr_ratio must be >= 1, got C = ",
              C, ", sr_ratio = ", sr_ratio);
  const int64_t nr = dtype == at::kDouble ? cpu::scalar_ukernels<double>().nr : float_ukernels().nr;
  check_weights_size("lgl_prepared_numel", C, sr_ratio, nr);
  return kHeader + cpu::lgl_weights_size(C, sr_ratio, nr);
}

TORCH_LIBRARY_IMPL(edgevit, CPU, m) {
  m.impl("lgl_fused", &lgl_fused_cpu);
  m.impl("lgl_prepare", &lgl_prepare_cpu);
  m.impl("lgl_fused_prepared", &lgl_fused_prepared_cpu);
}

}  // namespace edgevit
