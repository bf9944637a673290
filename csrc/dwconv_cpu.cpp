// CPU kernel of edgevit::dwconv: argument checks, the channels_last layout and threading around
// the torch-free driver in cpu/dwconv.cpp. float32 runs the micro-kernels of the ISA every
// edgevit CPU op uses (float_isa(): EDGEVIT_CPU_ISA at load, set_cpu_isa); float64 the scalar
// kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "cpu/dwconv.h"
#include "cpu/isa.h"
#include "cpu/thread_pool.h"
#include "lgl_fused_cpu.h"

namespace edgevit {
namespace {

// Multiply-adds a thread should get at least (a few microseconds): maps smaller than this run
// on the calling thread rather than waking others.
constexpr int64_t kMinTaskFlops = 1 << 15;

template <typename T>
const cpu::DwconvUKernels<T>& dwconv_ukernels();
template <>
const cpu::DwconvUKernels<float>& dwconv_ukernels<float>() {
  return *float_isa().dwconv;
}
template <>
const cpu::DwconvUKernels<double>& dwconv_ukernels<double>() {
  return cpu::scalar_dwconv_ukernels<double>();
}

void check_args(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, "dwconv: x must be 4-D [B, C, H, W], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "dwconv: x must be float32 or float64, got ", x.scalar_type());
  const int64_t C = x.size(1);
  const bool shape_ok = weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 &&
                        weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1 &&
                        weight.size(2) <= cpu::kDwconvMaxK;
  TORCH_CHECK(shape_ok, "dwconv: weight must have shape [C, 1, k, k] with C = x.size(1) = ", C,
              " and odd k <= ", cpu::kDwconvMaxK, ", got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "dwconv: weight must have the dtype of x (",
              x.scalar_type(), "), got ", weight.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), "dwconv: weight must be on the device of x (",
              x.device(), "), got ", weight.device());
  if (!bias.has_value()) return;
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C, "dwconv: bias must have shape [C] with C = "
              "x.size(1) = ", C, ", got ", bias->sizes());
  TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "dwconv: bias must have the dtype of x (",
              x.scalar_type(), "), got ", bias->scalar_type());
  TORCH_CHECK(bias->device() == x.device(), "dwconv: bias must be on the device of x (",
              x.device(), "), got ", bias->device());
}

at::Tensor dwconv_cpu(const at::Tensor& x, const at::Tensor& weight,
                      const c10::optional<at::Tensor>& bias, bool residual) {
  check_args(x, weight, bias);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), k = weight.size(2);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out;
  // One copy when x is not channels_last already.
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wc = weight.contiguous();
  at::Tensor wt = at::empty({k * k, C}, weight.options());
  const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t grain = std::max<int64_t>(1, kMinTaskFlops / std::max<int64_t>(1, W * C * k * k));
  const cpu::ParallelFor parallel_for = [grain](int64_t n,
                                                const std::function<void(int64_t, int64_t)>& fn) {
    cpu::pool_parallel_for(n, grain, at::get_num_threads(), fn);
  };
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dwconv", [&] {
    cpu::DwconvArgs<scalar_t> a{};
    a.B = B; a.C = C; a.H = H; a.W = W; a.k = k;
    a.x = xc.const_data_ptr<scalar_t>();
    // [C, 1, k, k] -> [k*k, C] (a tap's channels contiguous), by a plain loop: ATen's
    // transposing copy costs ~10 us per call here, more than the whole op on a 7 x 7 map. Taps
    // outer, so the writes are sequential (channels outer, C = 288, k = 5 took 4.5 us, this 2.7).
    const scalar_t* __restrict w = wc.const_data_ptr<scalar_t>();
    scalar_t* __restrict t = wt.data_ptr<scalar_t>();
    for (int64_t tap = 0; tap < k * k; ++tap)
      for (int64_t c = 0; c < C; ++c) t[tap * C + c] = w[c * k * k + tap];
    a.wt = t;
    a.bias = bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr;
    a.residual = residual;
    a.out = out.data_ptr<scalar_t>();
    cpu::dwconv_forward<scalar_t>(a, dwconv_ukernels<scalar_t>(), parallel_for);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(edgevit, CPU, m) { m.impl("dwconv", &dwconv_cpu); }

}  // namespace edgevit
