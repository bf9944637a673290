// Fused CPU driver of edgevit::lgl_fused; see lgl_fused.h for the phases and invariants.
#include "lgl_fused.h"

#include <algorithm>
#include <vector>

namespace edgevit {
namespace cpu {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// [0, n) cut into ceil(n / max_block) blocks of near-equal size (the last may be smaller), so
// that tasks of one phase cost about the same and a static split over threads stays balanced.
struct Blocks {
  int64_t count, size;
  Blocks(int64_t n, int64_t max_block)
      : count(std::max<int64_t>(1, ceil_div(n, max_block))), size(std::max<int64_t>(1, ceil_div(n, count))) {}
  int64_t begin(int64_t i) const { return i * size; }
  int64_t len(int64_t i, int64_t n) const { return std::min(size, n - i * size); }
};

// Task granularity. Fixed, never derived from the thread count: each output element's sum runs
// in the same order whatever the blocking, and the blocking is the same for any thread count.
constexpr int64_t kMaxRows = 64;     // rows of one gemm task (A rows / query rows / tokens)
constexpr int64_t kMaxPanels = 6;    // packed-B panels of one column block (the AVX-512 gemm
                                     // tiles 3 panels at a time)

// Rows [0, N) of a row-major [N, K] weight (row stride K) as W^T in packed panels at dst.
template <typename T>
void pack_weight_t(const LglUKernels<T>& uk, const T* w, int64_t N, int64_t K, T* dst) {
  const int64_t panels = ceil_div(N, uk.nr);
  if (uk.pack_weight_t) {
    uk.pack_weight_t(w, N, K, K, 0, panels, dst);
  } else {
    pack_b(w, K, N, 1, K, uk.nr, dst);
  }
}

// Where each buffer lives in the workspace.
struct Layout {
  int64_t qkv, y, total;
  int64_t kt_size, v_size;  // one (batch, head)'s packed k^T / v (per-thread tiles)
  Layout(int64_t B, int64_t n, int64_t C, int64_t heads, int64_t nr) {
    const int64_t d = C / heads;
    kt_size = packed_b_size(d, n, nr);
    v_size = packed_b_size(n, d, nr);
    qkv = 0;                                   // [B, n, 3C]
    y = qkv + B * n * 3 * C;                   // [B, n, C]
    total = y + B * n * C;
  }
};

}  // namespace

int64_t lgl_workspace_size(int64_t B, int64_t H, int64_t W, int64_t C, int64_t num_heads,
                           int64_t r, int64_t nr) {
  return Layout(B, ceil_div(H, r) * ceil_div(W, r), C, num_heads, nr).total;
}

template <typename T>
void lgl_fused_forward(const LglArgs<T>& a, const LglUKernels<T>& uk, T* workspace,
                       const ParallelFor& parallel_for) {
  const int64_t B = a.B, H = a.H, W = a.W, C = a.C, r = a.r, nr = uk.nr;
  const int64_t h = ceil_div(H, r), w = ceil_div(W, r), n = h * w, N = H * W;
  const int64_t heads = a.num_heads, d = C / heads;
  const Layout L(B, n, C, heads, nr);
  T* qkv = workspace + L.qkv;
  T* y = workspace + L.y;

  const int64_t qkv_panels = ceil_div(3 * C, nr), proj_panels = ceil_div(C, nr);

  // 1. sample + qkv projection. Tasks run column block by column block, so a thread packs the
  //    weight panels of a block once (into a tile that stays in cache while it is used) and
  //    re-gathers the few sampled rows instead.
  const Blocks qrows(n, kMaxRows), qcols(qkv_panels, kMaxPanels);
  parallel_for(qcols.count * B * qrows.count, [&](int64_t begin, int64_t end) {
    std::vector<T> tile(qrows.size * C), wp(qcols.size * C * nr);
    int64_t packed = -1;  // column block whose panels are in wp
    for (int64_t task = begin; task < end; ++task) {
      const int64_t cb = task / (B * qrows.count), br = task % (B * qrows.count);
      const int64_t b = br / qrows.count, rb = br % qrows.count;
      const int64_t s0 = qrows.begin(rb), rows = qrows.len(rb, n);
      const int64_t n0 = qcols.begin(cb) * nr;
      const int64_t cols = std::min(qcols.len(cb, qkv_panels) * nr, 3 * C - n0);
      if (packed != cb) {
        pack_weight_t(uk, a.qkv_w + n0 * C, cols, C, wp.data());
        packed = cb;
      }
      for (int64_t s = 0; s < rows; ++s) {
        const int64_t i = (s0 + s) / w, j = (s0 + s) % w;
        const T* src = a.x + b * a.x_sb + (i * r * W + j * r) * a.x_sn;
        for (int64_t c = 0; c < C; ++c) tile[s * C + c] = src[c * a.x_sc];
      }
      uk.gemm(rows, cols, C, tile.data(), C, wp.data(), a.qkv_b ? a.qkv_b + n0 : nullptr,
              qkv + (b * n + s0) * 3 * C + n0, 3 * C);
    }
  });

  // 2. attention per (batch, head, query block): S = q k^T, softmax, S v -> y. Tasks run head by
  //    head, so a thread packs a head's k^T and v once, when its head changes.
  const Blocks arows(n, kMaxRows);
  parallel_for(B * heads * arows.count, [&](int64_t begin, int64_t end) {
    std::vector<T> kt(L.kt_size), v(L.v_size), s(arows.size * n);
    int64_t packed = -1;  // (batch, head) whose k^T and v are in kt and v
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / arows.count, qb = task % arows.count;
      const int64_t b = bh / heads, head = bh % heads;
      const T* base = qkv + b * n * 3 * C + head * d;
      if (packed != bh) {
        pack_b(base + C, d, n, 1, 3 * C, nr, kt.data());     // k^T: (channel, token)
        pack_b(base + 2 * C, n, d, 3 * C, 1, nr, v.data());  // v:   (token, channel)
        packed = bh;
      }
      const int64_t q0 = arows.begin(qb), rows = arows.len(qb, n);
      uk.gemm(rows, n, d, base + q0 * 3 * C, 3 * C, kt.data(), nullptr, s.data(), n);
      uk.softmax_rows(rows, n, a.scale, s.data(), n);
      uk.gemm(rows, d, n, s.data(), n, v.data(), nullptr, y + (b * n + q0) * C + head * d, C);
    }
  });

  // 3. propagate + LayerNorm + projection, straight into the output.
  if (r > 1) {
    // Tasks over (batch, token block): the LayerNorm'd tile feeds one gemm over all C columns;
    // each thread packs proj_weight^T once.
    const Blocks orows(N, kMaxRows);
    parallel_for(B * orows.count, [&](int64_t begin, int64_t end) {
      std::vector<T> tile(orows.size * C), wp(proj_panels * C * nr);
      std::vector<const T*> src(orows.size), pw(orows.size);
      pack_weight_t(uk, a.proj_w, C, C, wp.data());
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / orows.count, ob = task % orows.count;
        const int64_t t0 = orows.begin(ob), rows = orows.len(ob, N);
        // Token (yy, xx) reads window (i, j) = (yy / r, xx / r) at offset (di, dj) = (yy % r, xx % r);
        // walked incrementally, as integer divisions per token would cost more than its LayerNorm.
        int64_t yy = t0 / W, xx = t0 % W, i = yy / r, di = yy % r, j = xx / r, dj = xx % r;
        for (int64_t t = 0; t < rows; ++t) {
          src[t] = y + (b * n + i * w + j) * C;
          pw[t] = a.prop_w + (di * r + dj) * C;
          if (++dj == r) dj = 0, ++j;
          if (++xx == W) {
            xx = j = dj = 0;
            if (++di == r) di = 0, ++i;
          }
        }
        uk.prop_layernorm_rows(rows, C, src.data(), pw.data(), a.prop_b, a.norm_w, a.norm_b, a.eps,
                               tile.data());
        uk.gemm(rows, C, C, tile.data(), C, wp.data(), a.proj_b, a.out + (b * N + t0) * C, C);
      }
    });
  } else {
    // r = 1: the sampled map is the map; tasks over (column block, batch, token block) read y.
    const Blocks orows(N, kMaxRows), ocols(proj_panels, kMaxPanels);
    parallel_for(ocols.count * B * orows.count, [&](int64_t begin, int64_t end) {
      std::vector<T> wp(ocols.size * C * nr);
      int64_t packed = -1;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t cb = task / (B * orows.count), br = task % (B * orows.count);
        const int64_t b = br / orows.count, ob = br % orows.count;
        const int64_t t0 = orows.begin(ob), rows = orows.len(ob, N);
        const int64_t n0 = ocols.begin(cb) * nr;
        const int64_t cols = std::min(ocols.len(cb, proj_panels) * nr, C - n0);
        if (packed != cb) {
          pack_weight_t(uk, a.proj_w + n0 * C, cols, C, wp.data());
          packed = cb;
        }
        uk.gemm(rows, cols, C, y + (b * n + t0) * C, C, wp.data(),
                a.proj_b ? a.proj_b + n0 : nullptr, a.out + (b * N + t0) * C + n0, C);
      }
    });
  }
}

template void lgl_fused_forward<float>(const LglArgs<float>&, const LglUKernels<float>&, float*,
                                       const ParallelFor&);
template void lgl_fused_forward<double>(const LglArgs<double>&, const LglUKernels<double>&,
                                        double*, const ParallelFor&);

}  // namespace cpu
}  // namespace edgevit
