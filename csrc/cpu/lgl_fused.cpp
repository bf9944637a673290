// Fused CPU driver of edgevit::lgl_fused; see lgl_fused.h for the phases and invariants.
#include "lgl_fused.h"

#include <algorithm>
#include <vector>

namespace edgevit {
namespace cpu {
namespace {

// Task granularity. Fixed (not derived from the thread count) so results never depend on it.
constexpr int64_t kQkvRows = 32;
constexpr int64_t kAttnRows = 64;
constexpr int64_t kOutRows = 64;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t lgl_workspace_size(int64_t B, int64_t H, int64_t W, int64_t C, int64_t r, int64_t nr) {
  const int64_t n = ceil_div(H, r) * ceil_div(W, r);
  // packed qkv_weight^T, packed proj_weight^T, qkv [B, n, 3C], y [B, n, C]
  return packed_b_size(C, 3 * C, nr) + packed_b_size(C, C, nr) + B * n * 4 * C;
}

template <typename T>
void lgl_fused_forward(const LglArgs<T>& a, const LglUKernels<T>& uk, T* workspace,
                       const ParallelFor& parallel_for) {
  const int64_t B = a.B, H = a.H, W = a.W, C = a.C, r = a.r, nr = uk.nr;
  const int64_t h = ceil_div(H, r), w = ceil_div(W, r), n = h * w, N = H * W;
  const int64_t heads = a.num_heads, d = C / heads;
  T* qkv_wp = workspace;
  T* proj_wp = qkv_wp + packed_b_size(C, 3 * C, nr);
  T* qkv = proj_wp + packed_b_size(C, C, nr);  // [B, n, 3C]
  T* y = qkv + B * n * 3 * C;                   // [B, n, C]

  // 0. weights^T into packed panels.
  const int64_t qkv_panels = ceil_div(3 * C, nr), proj_panels = ceil_div(C, nr);
  parallel_for(qkv_panels + proj_panels, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const bool is_qkv = p < qkv_panels;
      const T* w = is_qkv ? a.qkv_w : a.proj_w;
      T* dst = is_qkv ? qkv_wp : proj_wp;
      const int64_t N = is_qkv ? 3 * C : C, panel = is_qkv ? p : p - qkv_panels;
      if (uk.pack_weight_t) {
        uk.pack_weight_t(w, N, C, C, panel, panel + 1, dst);
      } else {
        const int64_t n0 = panel * nr;
        pack_b(w + n0 * C, C, std::min(nr, N - n0), 1, C, nr, dst + panel * C * nr);
      }
    }
  });

  // 1. sample + qkv projection.
  const int64_t qkv_blocks = ceil_div(n, kQkvRows);
  parallel_for(B * qkv_blocks, [&](int64_t begin, int64_t end) {
    std::vector<T> tile(kQkvRows * C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / qkv_blocks, s0 = task % qkv_blocks * kQkvRows;
      const int64_t rows = std::min(kQkvRows, n - s0);
      for (int64_t s = 0; s < rows; ++s) {
        const int64_t i = (s0 + s) / w, j = (s0 + s) % w;
        const T* src = a.x + b * a.x_sb + (i * r * W + j * r) * a.x_sn;
        for (int64_t c = 0; c < C; ++c) tile[s * C + c] = src[c * a.x_sc];
      }
      uk.gemm(rows, 3 * C, C, tile.data(), C, qkv_wp, a.qkv_b, qkv + (b * n + s0) * 3 * C,
              3 * C);
    }
  });

  // 2. attention per head among the n sampled tokens.
  const int64_t attn_blocks = ceil_div(n, kAttnRows);
  parallel_for(B * heads * attn_blocks, [&](int64_t begin, int64_t end) {
    std::vector<T> kt(packed_b_size(d, n, nr)), v(packed_b_size(n, d, nr)), s(kAttnRows * n);
    int64_t packed_for = -1;  // (b, head) whose k^T and v are in kt / v
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / attn_blocks, q0 = task % attn_blocks * kAttnRows;
      const int64_t b = bh / heads, head = bh % heads;
      const int64_t rows = std::min(kAttnRows, n - q0);
      const T* base = qkv + b * n * 3 * C + head * d;
      if (packed_for != bh) {
        pack_b(base + C, d, n, 1, 3 * C, nr, kt.data());         // k^T: (channel, token)
        pack_b(base + 2 * C, n, d, 3 * C, 1, nr, v.data());      // v  : (token, channel)
        packed_for = bh;
      }
      uk.gemm(rows, n, d, base + q0 * 3 * C, 3 * C, kt.data(), nullptr, s.data(), n);
      uk.softmax_rows(rows, n, a.scale, s.data(), n);
      uk.gemm(rows, d, n, s.data(), n, v.data(), nullptr, y + (b * n + q0) * C + head * d, C);
    }
  });

  // 3. propagate + LayerNorm + projection, straight into the output.
  const int64_t out_blocks = ceil_div(N, kOutRows);
  parallel_for(B * out_blocks, [&](int64_t begin, int64_t end) {
    std::vector<T> tile(r > 1 ? kOutRows * C : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / out_blocks, t0 = task % out_blocks * kOutRows;
      const int64_t rows = std::min(kOutRows, N - t0);
      const T* A = y + (b * n + t0) * C;  // r == 1: the sampled map is the map
      if (r > 1) {
        for (int64_t t = 0; t < rows; ++t) {
          const int64_t yy = (t0 + t) / W, xx = (t0 + t) % W;
          const T* src = y + (b * n + yy / r * w + xx / r) * C;
          const T* pw = a.prop_w + (yy % r * r + xx % r) * C;
          uk.prop_layernorm(C, src, pw, a.prop_b, a.norm_w, a.norm_b, a.eps, tile.data() + t * C);
        }
        A = tile.data();
      }
      uk.gemm(rows, C, C, A, C, proj_wp, a.proj_b, a.out + (b * N + t0) * C, C);
    }
  });
}

template void lgl_fused_forward<float>(const LglArgs<float>&, const LglUKernels<float>&, float*,
                                       const ParallelFor&);
template void lgl_fused_forward<double>(const LglArgs<double>&, const LglUKernels<double>&,
                                        double*, const ParallelFor&);

}  // namespace cpu
}  // namespace edgevit
