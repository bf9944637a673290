// CPU kernels of edgevit::patch_embed, patch_embed_prepare and patch_embed_prepared: argument
// checks, layouts and threading around the torch-free driver in cpu/patch_embed.cpp.
// patch_embed prepares (re-lays out and packs) the weight on every call; patch_embed_prepare
// does it once and patch_embed_prepared reuses it for any x (the fused EdgeViT model keeps one
// per PatchEmbed in eval mode).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "aten_util.h"
#include "cpu/patch_embed.h"
#include "lgl_fused_cpu.h"

namespace edgevit {
namespace {

// Prepared buffer (aten_util.h): header sizes Cin, Cout, patch; then
// cpu::patch_embed_prepare_weights' buffer.
constexpr int64_t kHeader = kPreparedHeader;
constexpr double kMagic = 20221102.0;  // exact in float32 and float64; differs from the others'

// Checks weight [Cout, Cin, p, p] (square, float32/64) and bias; returns (Cin, Cout, p).
std::tuple<int64_t, int64_t, int64_t> check_weight(const char* op, const at::Tensor& weight,
                                                   const OptTensor& bias) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3) && weight.size(2) >= 1 &&
                  weight.size(0) >= 1 && weight.size(1) >= 1,
              op, ": weight must be [Cout, Cin, p, p] (a square patch), got shape ",
              weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble, op,
              ": weight must be float32 or float64, got ", weight.scalar_type());
  const int64_t Cout = weight.size(0);
  if (bias.has_value()) {
    TORCH_CHECK(bias->sizes() == at::IntArrayRef{Cout}, op, ": bias must have shape [", Cout,
                "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == weight.scalar_type() && bias->device() == weight.device(),
                op, ": bias must have the dtype and device of weight (", weight.scalar_type(),
                ", ", weight.device(), "), got ", bias->scalar_type(), ", ", bias->device());
  }
  return {weight.size(1), Cout, weight.size(2)};
}

void check_norm(const char* op, const at::Tensor& x, int64_t Cout, bool layer_norm,
                const OptTensor& norm_weight, const OptTensor& norm_bias) {
  TORCH_CHECK(norm_weight.has_value() == norm_bias.has_value(), op,
              ": norm_weight and norm_bias must be both given or both None");
  TORCH_CHECK(layer_norm || !norm_weight.has_value(), op,
              ": norm_weight and norm_bias must be None when layer_norm is False");
  for (const auto& [t, name] : {std::pair<const OptTensor*, const char*>{&norm_weight,
                                                                         "norm_weight"},
                                {&norm_bias, "norm_bias"}}) {
    if (!t->has_value()) continue;
    TORCH_CHECK((*t)->sizes() == at::IntArrayRef{Cout}, op, ": ", name, " must have shape [",
                Cout, "], got ", (*t)->sizes());
    TORCH_CHECK((*t)->scalar_type() == x.scalar_type() && (*t)->device() == x.device(), op, ": ",
                name, " must have the dtype and device of x (", x.scalar_type(), ", ",
                x.device(), "), got ", (*t)->scalar_type(), ", ", (*t)->device());
  }
}

void check_x(const char* op, const at::Tensor& x, int64_t Cin, int64_t p) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == Cin, op, ": x must be [B, Cin, H, W] with Cin = ", Cin,
              " (the weight's), got shape ", x.sizes());
  TORCH_CHECK(x.size(2) >= p && x.size(3) >= p, op, ": x must be at least one patch (", p, "x",
              p, ") in H and W, got ", x.size(2), "x", x.size(3));
}

template <typename T>
void prepare_into(const Tables<T>& tb, const at::Tensor& weight, const OptTensor& bias,
                  at::Tensor& buffer) {
  const int64_t Cout = weight.size(0), Cin = weight.size(1), p = weight.size(2);
  const at::Tensor w = cpu::patch_embed_channel_major(Cin)
                           ? weight.contiguous()                        // [Cout, Cin, p, p]
                           : weight.permute({0, 2, 3, 1}).contiguous();  // [Cout, p, p, Cin]
  const at::Tensor b = contig(bias);
  cpu::PatchEmbedArgs<T> a{};
  a.Cin = Cin; a.Cout = Cout; a.p = p;
  a.weight = w.const_data_ptr<T>();
  a.bias = ptr_or_null<T>(b);
  T* h = buffer.data_ptr<T>();
  write_prepared_header<T>(h, kMagic, tb.gemm, {Cin, Cout, p});
  cpu::patch_embed_prepare_weights<T>(a, tb.gemm, h + kHeader);
}

template <typename T>
at::Tensor forward(const Tables<T>& tb, const at::Tensor& x, int64_t Cin, int64_t Cout,
                   int64_t p, bool layer_norm, const OptTensor& norm_weight,
                   const OptTensor& norm_bias, double norm_eps, const at::Tensor& prepared) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({B, Cout, H / p, W / p},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const at::Tensor nw = contig(norm_weight), nb = contig(norm_bias);
  cpu::PatchEmbedArgs<T> a{};
  a.B = B; a.Cin = Cin; a.H = H; a.W = W; a.Cout = Cout; a.p = p;
  a.x = x.const_data_ptr<T>();
  a.x_sb = x.stride(0); a.x_sc = x.stride(1); a.x_sh = x.stride(2); a.x_sw = x.stride(3);
  a.layer_norm = layer_norm;
  a.norm_w = ptr_or_null<T>(nw);
  a.norm_b = ptr_or_null<T>(nb);
  a.eps = static_cast<T>(norm_eps);
  a.out = out.data_ptr<T>();
  cpu::patch_embed_forward<T>(a, tb.gemm, tb.mlp, prepared.const_data_ptr<T>() + kHeader,
                              pool_parallel_for());
  return out;
}

// Every product cpu::patch_embed_weights_size and the forward's patch tiles form, below
// kMaxSize.
void check_weights_size(const char* op, int64_t Cin, int64_t Cout, int64_t p, int64_t nr) {
  const int64_t K = checked_product(op, "patch * patch * Cin", {p, p, Cin});
  check_packed(op, "the packed weight (patch * patch * Cin) * Cout", K, Cout, nr);
}

at::Tensor new_prepared(const at::Tensor& like, int64_t Cin, int64_t Cout, int64_t p,
                        int64_t nr) {
  check_weights_size("patch_embed_prepare", Cin, Cout, p, nr);
  return at::empty({kHeader + cpu::patch_embed_weights_size(Cin, Cout, p, nr)},
                   like.options().memory_format(at::MemoryFormat::Contiguous));
}

at::Tensor patch_embed_cpu(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                           bool layer_norm, const OptTensor& norm_weight,
                           const OptTensor& norm_bias, double norm_eps) {
  const auto [Cin, Cout, p] = check_weight("patch_embed", weight, bias);
  check_x("patch_embed", x, Cin, p);
  TORCH_CHECK(x.scalar_type() == weight.scalar_type() && x.device() == weight.device(),
              "patch_embed: x must have the dtype and device of weight (", weight.scalar_type(),
              ", ", weight.device(), "), got ", x.scalar_type(), ", ", x.device());
  check_norm("patch_embed", x, Cout, layer_norm, norm_weight, norm_bias);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_embed", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    at::Tensor prepared = new_prepared(x, Cin, Cout, p, tb.gemm.nr);
    prepare_into<scalar_t>(tb, weight, bias, prepared);
    out = forward<scalar_t>(tb, x, Cin, Cout, p, layer_norm, norm_weight, norm_bias, norm_eps,
                            prepared);
  });
  return out;
}

at::Tensor patch_embed_prepare_cpu(const at::Tensor& weight, const OptTensor& bias) {
  const auto [Cin, Cout, p] = check_weight("patch_embed_prepare", weight, bias);
  at::Tensor prepared;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "patch_embed_prepare", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    prepared = new_prepared(weight, Cin, Cout, p, tb.gemm.nr);
    prepare_into<scalar_t>(tb, weight, bias, prepared);
  });
  return prepared;
}

at::Tensor patch_embed_prepared_cpu(const at::Tensor& x, const at::Tensor& prepared,
                                    int64_t out_channels, int64_t patch, bool layer_norm,
                                    const OptTensor& norm_weight,
                                    const OptTensor& norm_bias, double norm_eps) {
  const char* op = "patch_embed_prepared";
  check_prepared_tensor(op, "patch_embed_prepare", x, prepared);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_embed_prepared", [&] {
    const Tables<scalar_t> tb = tables<scalar_t>();
    const PreparedHeader h =
        prepared_header<scalar_t>(op, "patch_embed_prepare", kMagic, prepared, tb.gemm,
                                  {size_field("Cin"), size_field("Cout"), size_field("patch")});
    const int64_t Cin = h[3], Cout = h[4], p = h[5];
    check_weights_size(op, Cin, Cout, p, tb.gemm.nr);
    check_prepared_numel(op, prepared, cpu::patch_embed_weights_size(Cin, Cout, p, tb.gemm.nr));
    TORCH_CHECK(out_channels == Cout && patch == p, op, ": prepared holds a ", Cout, "-channel, ",
                p, "x", p, " patch weight, but out_channels = ", out_channels, " and patch = ",
                patch, " were given");
    check_x(op, x, Cin, p);
    check_norm(op, x, Cout, layer_norm, norm_weight, norm_bias);
    out = forward<scalar_t>(tb, x, Cin, Cout, p, layer_norm, norm_weight, norm_bias, norm_eps,
                            prepared);
  });
  return out;
}

}  // namespace

int64_t patch_embed_prepared_numel(int64_t Cin, int64_t Cout, int64_t patch,
                                   c10::ScalarType dtype) {
  TORCH_CHECK(Cin >= 1 && Cout >= 1 && patch >= 1, "patch_embed_prepared_numel: Cin, Cout and "
              "patch must be >= 1, got ", Cin, ", ", Cout, ", ", patch);
  const int64_t nr = dtype == at::kDouble ? cpu::scalar_ukernels<double>().nr : float_ukernels().nr;
  check_weights_size("patch_embed_prepared_numel", Cin, Cout, patch, nr);
  return kHeader + cpu::patch_embed_weights_size(Cin, Cout, patch, nr);
}

TORCH_LIBRARY_IMPL(edgevit, CPU, m) {
  m.impl("patch_embed", &patch_embed_cpu);
  m.impl("patch_embed_prepare", &patch_embed_prepare_cpu);
  m.impl("patch_embed_prepared", &patch_embed_prepared_cpu);
}

}  // namespace edgevit
