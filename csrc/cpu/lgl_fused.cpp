// Fused CPU driver of edgevit::lgl_fused; see lgl_fused.h for the phases and invariants.
#include "lgl_fused.h"

#include "driver_common.h"

#include <algorithm>
#include <memory>
#include <vector>

namespace edgevit {
namespace cpu {
namespace {

// Task granularity. Fixed, never derived from the thread count: each output element's sum runs
// in the same order whatever the blocking, and the blocking is the same for any thread count.
constexpr int64_t kMaxRows = 64;     // rows of one gemm task (A rows / query rows / tokens)
constexpr int64_t kMaxPanels = 6;    // packed-B panels of one column block (the AVX-512 gemm
                                     // tiles 3 panels at a time)
constexpr int64_t kRowMajorBytes = 256 << 10;  // qkv_weight^T up to this size: qkv tasks row
                                               // block by row block (step 1)
constexpr int64_t kOutRows = 32;     // sampled tokens of one folded-output task (r > 1, with
                                     // its scratch: no gemm_scatter), and
                                     // the row blocks of maps of <= kMaxRows tokens

// Where each buffer lives in the workspace (offsets in elements).
struct Layout {
  int64_t qkv, y, rstd, total;
  int64_t kt_size, v_size;  // one (batch, head)'s packed k^T / v (per-thread tiles)
  Layout(int64_t B, int64_t n, int64_t C, int64_t heads, int64_t r, int64_t nr) {
    const int64_t d = C / heads;
    kt_size = packed_b_size(d, n, nr);
    v_size = packed_b_size(n, d, nr);
    qkv = 0;                                      // [B, n, 3C]
    y = qkv + B * n * 3 * C;                      // [B, n, C]
    rstd = y + B * n * C;                         // [B, n, r*r] (r > 1)
    total = rstd + (r > 1 ? B * n * r * r : 0);
  }
};

// Offsets of one folded-output task (r > 1): a multiple of q = nr / gcd(C, nr) offsets, so that
// each group starts on a packed panel of Wf, and at least ~3 panels of columns.
int64_t offset_group(int64_t C, int64_t R, int64_t nr) {
  int64_t g = nr, c = C;
  while (c != 0) {  // g = gcd(C, nr)
    const int64_t t = g % c;
    g = c;
    c = t;
  }
  const int64_t q = nr / g;
  int64_t dg = q;
  while (dg * C < 3 * nr && dg + q <= R) dg += q;
  return std::min(dg, R);
}

// The two forms of the fold (lgl_fused.h) for r > 1. When nr divides C, every packed panel of
// Wf lies in one offset d and is pw[d] (per row c) times a panel of G', so the forward can
// scale the A rows instead (A-tile form: y[m] * pw[d] against G'): the buffer holds G' (C*C)
// instead of Wf (R*C*C), R times less to build, for a scaling pass over B*H*W*C elements per
// call: it pays for lgl_fused, which builds the weights on every call, where R*C >= B*H*W;
// built once (lgl_prepare), Wf runs faster (docs/performance-notes.md). LglArgs::a_tile asks
// for it.
bool a_tile_form(int64_t C, int64_t r, int64_t nr, bool wanted) {
  return wanted && r > 1 && C % nr == 0;
}

// Where each prepared weight lives in the weights buffer (offsets in elements):
//   qkv_wp  qkv_weight^T packed, [C, 3C]
//   out_wp  r > 1: G' packed, [C, C] (A-tile form) or Wf packed, [C, R*C] (lgl_fused.h);
//           r = 1: proj_weight^T packed, [C, C]
//   qkv_b   [3C] qkv_bias (zeros if none)
//   out_b   [C] r > 1: prop_bias; r = 1: proj_bias (zeros if none)
//   kb      [R*C] the folded gemm's bias (r > 1)
//   e       [C] the epilogue's bias (r > 1)
//   pwt     [C, R] prop_weight^T (r > 1)
//   pw      [R, C] prop_weight, offset-major (A-tile form)
struct WeightsLayout {
  int64_t qkv_wp, out_wp, qkv_b, out_b, kb, e, pwt, pw, total;
  WeightsLayout(int64_t C, int64_t r, int64_t nr, bool want_a_tile) {
    const int64_t R = r * r, fold = r > 1 ? 1 : 0;
    const int64_t a_tile = a_tile_form(C, r, nr, want_a_tile) ? 1 : 0;
    qkv_wp = 0;
    out_wp = qkv_wp + packed_b_size(C, 3 * C, nr);
    qkv_b = out_wp + packed_b_size(C, fold && !a_tile ? R * C : C, nr);
    out_b = qkv_b + 3 * C;
    kb = out_b + C;
    e = kb + fold * R * C;
    pwt = e + fold * C;
    pw = pwt + fold * C * R;
    total = pw + a_tile * R * C;
  }
};

// The folded output's epilogue bookkeeping for sampled tokens [m0, m0 + rows) and offsets
// [d0, d0 + nd) (row k = m * nd + t of the task's acc): each token's index in the map (tok, -1
// where its window is cropped), its output row (dst, null if cropped) and its LayerNorm scale
// (sc, from rstd rows of R starting at offset d0). By value, so nothing is reloaded per token.
template <typename T>
void place_tokens(int64_t m0, int64_t rows, int64_t d0, int64_t nd, int64_t H, int64_t W,
                  int64_t r, int64_t C, const int64_t* di, const int64_t* dj, const T* rstd,
                  T* out, int64_t* tok, T** dst, T* sc) {
  const int64_t w = ceil_div(W, r), R = r * r;
  int64_t i = m0 / w, j = m0 % w;  // window of row m, advanced without a division
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t t = 0; t < nd; ++t) {
      const int64_t yy = i * r + di[d0 + t], xx = j * r + dj[d0 + t], k = m * nd + t;
      const int64_t tk = yy < H && xx < W ? yy * W + xx : -1;
      tok[k] = tk;
      dst[k] = tk >= 0 ? out + tk * C : nullptr;
      sc[k] = rstd[m * R + t];
    }
    if (++j == w) j = 0, ++i;
  }
}

}  // namespace

int64_t lgl_weights_size(int64_t C, int64_t r, int64_t nr, bool a_tile) {
  return WeightsLayout(C, r, nr, a_tile).total;
}

template <typename T>
void lgl_prepare_weights(const LglArgs<T>& a, const LglUKernels<T>& uk, T* weights,
                         const ParallelFor& parallel_for) {
  const int64_t C = a.C, r = a.r, R = r * r, nr = uk.nr;
  const WeightsLayout L(C, r, nr, a.a_tile);
  T* qkv_wp = weights + L.qkv_wp;
  T* out_wp = weights + L.out_wp;
  T* kb = weights + L.kb;
  T* e = weights + L.e;
  T* pwt = weights + L.pwt;
  // The input LayerNorm's affine (pre_norm) goes into qkv; the forward only standardises.
  const T* qkv_w = a.qkv_w;
  std::vector<T> qkv_folded;
  if (a.pre_norm && (a.pre_w || a.pre_b)) {
    qkv_folded.resize(static_cast<size_t>(3 * C * C));
    fold_norm_affine(a.qkv_w, a.qkv_b, 3 * C, C, a.pre_w, a.pre_b, qkv_folded.data(),
                     weights + L.qkv_b, parallel_for);
    qkv_w = qkv_folded.data();
  } else {
    for (int64_t j = 0; j < 3 * C; ++j) weights[L.qkv_b + j] = a.qkv_b ? a.qkv_b[j] : T(0);
  }
  for (int64_t j = 0; j < C; ++j) {
    const T* b = r > 1 ? a.prop_b : a.proj_b;
    weights[L.out_b + j] = b ? b[j] : T(0);
  }

  // a. r > 1: the per-channel vectors of the fold (lgl_fused.h), per block of nr channels o:
  //    gmean[o] = mean_c G[c,o], kb[d*C + o] = sum_c pb[c] G'[c,o] for every d, e[o]; and
  //    rows c = o of pwt. The block's proj_weight rows are packed as one panel P (P[c][j] =
  //    Wp[o0+j, c]), and the three sums over c come from one small gemm of the rows
  //    [g; pb * g; b] against it. In the A-tile form, P is then turned into G' in place: the
  //    weights' out_wp, done.
  const bool a_tile = a_tile_form(C, r, nr, a.a_tile);
  std::vector<T> gp(r > 1 && !a_tile ? packed_b_size(C, C, nr) : 0), gmean(r > 1 ? C : 0);
  if (r > 1) {
    T pb_mean = 0;
    std::vector<T> rows3(3 * C);  // the gemm's A: g, pb * g, b
    for (int64_t c = 0; c < C; ++c) {
      pb_mean += a.prop_b[c];
      rows3[c] = a.norm_w[c];
      rows3[C + c] = a.prop_b[c] * a.norm_w[c];
      rows3[2 * C + c] = a.norm_b[c];
    }
    pb_mean /= T(C);
    parallel_for(ceil_div(C, nr), [&](int64_t begin, int64_t end) {
      std::vector<T> sums(3 * nr);
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t o0 = blk * nr, cols = std::min(nr, C - o0);
        T* panel = (a_tile ? out_wp : gp.data()) + blk * C * nr;
        pack_weight_t(uk, a.proj_w + o0 * C, cols, C, panel);
        uk.gemm(3, cols, C, rows3.data(), C, panel, nullptr, sums.data(), nr);
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t o = o0 + j;
          const T gs = sums[j], k = sums[nr + j] - gs * pb_mean;
          gmean[o] = gs / T(C);
          for (int64_t d = 0; d < R; ++d) kb[d * C + o] = k;
          e[o] = sums[2 * nr + j] + (a.proj_b ? a.proj_b[o] : T(0));
          for (int64_t d = 0; d < R; ++d) pwt[o * R + d] = a.prop_w[d * C + o];
        }
        if (!a_tile) continue;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t j = 0; j < cols; ++j)
            panel[c * nr + j] = a.norm_w[c] * panel[c * nr + j] - gmean[o0 + j];
      }
    });
  }

  // b. packed panels: qkv_weight^T, then Wf (r > 1 and not the A-tile form; row j = (d, o) of
  //    Wf^T is pw[d] * (g * Wp[o] - gmean[o])) or proj_weight^T (r = 1).
  if (a_tile)
    for (int64_t d = 0; d < R; ++d)
      for (int64_t c = 0; c < C; ++c) weights[L.pw + d * C + c] = a.prop_w[d * C + c];
  const int64_t qkv_panels = ceil_div(3 * C, nr);
  const int64_t out_cols = r > 1 ? R * C : C, out_panels = a_tile ? 0 : ceil_div(out_cols, nr);
  parallel_for(qkv_panels + out_panels, [&](int64_t begin, int64_t end) {
    std::vector<T> wf(r > 1 ? nr * C : 0);
    for (int64_t p = begin; p < end; ++p) {
      const bool qkv = p < qkv_panels;
      const int64_t q = qkv ? p : p - qkv_panels, j0 = q * nr;
      const int64_t cols = std::min(nr, (qkv ? 3 * C : out_cols) - j0);
      const T* src = (qkv ? qkv_w : a.proj_w) + j0 * C;  // weight rows = the panel's columns
      if (!qkv && r > 1) {
        for (int64_t t = 0; t < cols; ++t) {
          const int64_t d = (j0 + t) / C, o = (j0 + t) % C;
          const T* wp = a.proj_w + o * C;
          const T* pw = a.prop_w + d * C;
          const T gm = gmean[o];
          T* row = wf.data() + t * C;
          for (int64_t c = 0; c < C; ++c) row[c] = pw[c] * (a.norm_w[c] * wp[c] - gm);
        }
        src = wf.data();
      }
      pack_weight_t(uk, src, cols, C, (qkv ? qkv_wp : out_wp) + q * C * nr);
    }
  });
}

int64_t lgl_workspace_size(int64_t B, int64_t H, int64_t W, int64_t C, int64_t num_heads,
                           int64_t r, int64_t nr) {
  return Layout(B, ceil_div(H, r) * ceil_div(W, r), C, num_heads, r, nr).total;
}

namespace {

// What the phases of one lgl_fused_forward call share: its sizes, workspace buffers and
// prepared weights (WeightsLayout), computed once.
template <typename T>
struct Forward {
  const LglArgs<T>& a;
  const LglUKernels<T>& uk;
  const MlpUKernels<T>* row_uk;
  const ParallelFor& parallel_for;
  const T* weights;
  int64_t B, H, W, C, r, nr, h, w, n, N, heads, d, R;
  WeightsLayout WL;
  T *qkv, *y, *rstd;
  const T *qkv_wp, *out_wp, *kb, *e, *pwt, *qkv_b, *out_b;  // out_b: prop_bias or proj_bias
  // One head: step 2 takes the LayerNorm statistics of its y rows, which are then final.
  bool rstd_in_attention;

  Forward(const LglArgs<T>& a_, const LglUKernels<T>& uk_, const T* weights_, T* workspace,
          const ParallelFor& pf, const MlpUKernels<T>* row_uk_)
      : a(a_), uk(uk_), row_uk(row_uk_), parallel_for(pf), weights(weights_), B(a.B), H(a.H),
        W(a.W), C(a.C), r(a.r), nr(uk.nr), h(ceil_div(H, r)), w(ceil_div(W, r)), n(h * w),
        N(H * W), heads(a.num_heads), d(C / heads), R(r * r), WL(C, r, nr, a.a_tile) {
    const Layout L(B, n, C, heads, r, nr);
    qkv = workspace + L.qkv;
    y = workspace + L.y;
    rstd = workspace + L.rstd;
    qkv_wp = weights + WL.qkv_wp;
    out_wp = weights + WL.out_wp;
    kb = weights + WL.kb;
    e = weights + WL.e;
    pwt = weights + WL.pwt;
    qkv_b = weights + WL.qkv_b;
    out_b = weights + WL.out_b;
    rstd_in_attention = r > 1 && heads == 1;
  }
};

// Step 1: sample + qkv projection, tasks over (column block, batch, row block of sampled
// tokens). A large qkv_weight^T (> kRowMajorBytes) is walked column block by column block, so
// a block's weight panels stay in cache while the few sampled rows are re-gathered. A small one
// stays in cache anyway, and tasks go row block by row block: each thread then gets whole row
// blocks, so an odd number of panels (XXS stage 1: 4 + 3) does not leave one thread the larger
// half, and a row block is gathered once for all its columns. A map of at most 64 sampled
// tokens (the 7x7 and 14x14 stages) is still cut in two row blocks, so that the task count is
// even and two threads share the phase evenly.
template <typename T>
void sample_qkv(const Forward<T>& f) {
  const LglArgs<T>& a = f.a;
  const int64_t B = f.B, C = f.C, n = f.n, w = f.w, r = f.r, W = f.W, nr = f.nr;
  const int64_t qkv_panels = ceil_div(3 * C, nr);
  const Blocks qrows(n, n <= kMaxRows ? kOutRows : kMaxRows), qcols(qkv_panels, kMaxPanels);
  const bool row_major = int64_t(sizeof(T)) * 3 * C * C <= kRowMajorBytes;
  f.parallel_for(qcols.count * B * qrows.count, [&](int64_t begin, int64_t end) {
    Scratch<T> tile(qrows.size * C);
    int64_t gathered = -1;  // (batch, row block) whose sampled rows are in tile
    for (int64_t task = begin; task < end; ++task) {
      const int64_t cb = row_major ? task % qcols.count : task / (B * qrows.count);
      const int64_t br = row_major ? task / qcols.count : task % (B * qrows.count);
      const int64_t b = br / qrows.count, rb = br % qrows.count;
      const int64_t s0 = qrows.begin(rb), rows = qrows.len(rb, n);
      const int64_t n0 = qcols.begin(cb) * nr;
      const int64_t cols = std::min(qcols.len(cb, qkv_panels) * nr, 3 * C - n0);
      if (gathered != br) {
        for (int64_t s = 0; s < rows; ++s) {
          const int64_t i = (s0 + s) / w, j = (s0 + s) % w;
          const T* src = a.x + b * a.x_sb + (i * r * W + j * r) * a.x_sn;
          if (a.x_sc == 1) {
            std::copy(src, src + C, tile.data() + s * C);
          } else {
            for (int64_t c = 0; c < C; ++c) tile[s * C + c] = src[c * a.x_sc];
          }
        }
        if (a.pre_norm) f.row_uk->layernorm_rows(rows, C, tile.data(), C, a.pre_eps, nullptr,
                                                 nullptr, tile.data(), C);
        gathered = br;
      }
      f.uk.gemm(rows, cols, C, tile.data(), C, f.qkv_wp + qcols.begin(cb) * C * nr,
                f.qkv_b + n0, f.qkv + (b * n + s0) * 3 * C + n0, 3 * C);
    }
  });
}

// Step 2: attention per (batch, head, query block): S = q k^T, softmax, S v -> y. Tasks run
// head by head, so a thread packs a head's k^T and v once, when its head changes. With one head
// (EdgeViT's stage 1) a task's y rows are then final, and it also takes their LayerNorm
// statistics (step 3a), which saves a parallel region.
template <typename T>
void attention(const Forward<T>& f) {
  const LglUKernels<T>& uk = f.uk;
  const int64_t B = f.B, C = f.C, n = f.n, d = f.d, heads = f.heads, nr = f.nr, R = f.R;
  const Layout L(B, n, C, heads, f.r, nr);
  const Blocks arows(n, kMaxRows);
  f.parallel_for(B * heads * arows.count, [&](int64_t begin, int64_t end) {
    Scratch<T> kt(L.kt_size), v(L.v_size), s(arows.size * n);
    int64_t packed = -1;  // (batch, head) whose k^T and v are in kt and v
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / arows.count, qb = task % arows.count;
      const int64_t b = bh / heads, head = bh % heads;
      const T* base = f.qkv + b * n * 3 * C + head * d;
      if (packed != bh) {
        // k^T (channel, token) is the transpose of k's rows: the ISA's in-register transpose.
        if (uk.pack_weight_t) {
          uk.pack_weight_t(base + C, n, d, 3 * C, 0, ceil_div(n, nr), kt.data());
        } else {
          pack_b(base + C, d, n, 1, 3 * C, nr, kt.data());
        }
        pack_b(base + 2 * C, n, d, 3 * C, 1, nr, v.data());  // v: (token, channel)
        packed = bh;
      }
      const int64_t q0 = arows.begin(qb), rows = arows.len(qb, n);
      T* yq = f.y + (b * n + q0) * C;
      uk.gemm(rows, n, d, base + q0 * 3 * C, 3 * C, kt.data(), nullptr, s.data(), n);
      uk.softmax_rows(rows, n, f.a.scale, s.data(), n);
      uk.gemm(rows, d, n, s.data(), n, v.data(), nullptr, yq + head * d, C);
      if (f.rstd_in_attention)
        uk.prop_rstd(rows, R, C, yq, C, f.pwt, f.out_b, f.a.eps, f.rstd + (b * n + q0) * R);
    }
  });
}

// Step 3a (r > 1, more than one head): the LayerNorm statistics of every propagated token,
// offsets in vector lanes. Each sampled token's statistics are its own, so the B*n rows (y and
// rstd are row-contiguous across batches) are split evenly over the threads, one call each:
// in blocks of 64 rows, a 7x7 map would be a single task, run by one thread.
template <typename T>
void propagated_rstd(const Forward<T>& f) {
  f.parallel_for(f.B * f.n, [&](int64_t begin, int64_t end) {
    f.uk.prop_rstd(end - begin, f.R, f.C, f.y + begin * f.C, f.C, f.pwt, f.out_b, f.a.eps,
                   f.rstd + begin * f.R);
  });
}

// Step 3b (r > 1): per (group of offsets, batch, block of sampled tokens m): one gemm
// y[m] * Wf[:, offsets] -> [rows, dg*C] (row m holds window m's tokens at those offsets, C
// columns each), or in the A-tile form one gemm (y[m] * pw[d]) * G' per offset d into the same
// columns; then the epilogue: each token's C columns times its rstd, plus e, stored at the
// token's place (dropped where the window is cropped). When nr divides C, each offset's C
// columns are whole panels, so where the ISA has gemm_scatter the epilogue runs on the gemm's
// register tiles, one gemm per offset, and the [rows, dg*C] scratch is never stored or
// reloaded (the same bits); without the scratch, blocks of 64 sampled tokens instead of 32
// (half the tasks, fuller row tiles).
template <typename T>
void folded_output(const Forward<T>& f) {
  const LglArgs<T>& a = f.a;
  const LglUKernels<T>& uk = f.uk;
  const int64_t B = f.B, H = f.H, W = f.W, C = f.C, r = f.r, n = f.n, N = f.N, R = f.R;
  const bool a_tile = a_tile_form(C, r, f.nr, a.a_tile);
  const T* pw = f.weights + f.WL.pw;
  const int64_t dg = offset_group(C, R, f.nr), groups = ceil_div(R, dg);
  const bool scatter = uk.gemm_scatter && C % f.nr == 0;
  const Blocks orows(n, scatter ? kMaxRows : kOutRows);
  f.parallel_for(groups * B * orows.count, [&](int64_t begin, int64_t end) {
    Scratch<T> acc(scatter ? 1 : orows.size * dg * C), at(a_tile ? orows.size * C : 1);
    // Per task, the place and LayerNorm scale of each of its rows * nd tokens (in acc's row
    // order; with gemm_scatter, offset by offset), so its epilogue is one call: per-token
    // bookkeeping between calls cost more than the scaling itself at C = 48.
    std::vector<T*> dst(orows.size * dg);
    Scratch<T> sc(orows.size * dg);
    std::vector<int64_t> tok(orows.size * dg);  // the token's index in the map, or -1 (cropped)
    std::vector<int64_t> di(R), dj(R);  // offset d = (di, dj) in its window: no division per token
    for (int64_t t = 0; t < R; ++t) di[t] = t / r, dj[t] = t % r;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t gi = task / (B * orows.count), br = task % (B * orows.count);
      const int64_t b = br / orows.count, ob = br % orows.count;
      const int64_t m0 = orows.begin(ob), rows = orows.len(ob, n);
      const int64_t d0 = gi * dg, nd = std::min(dg, R - d0);
      const T* ym = f.y + (b * n + m0) * C;
      T* out = a.out + b * N * C;
      const T* rs = f.rstd + (b * n + m0) * R + d0;  // the block's LayerNorm scales at offset d0
      // A-tile form: the block's y rows times pw[d], channel by channel, into at.
      auto scaled_rows = [&](int64_t d) {
        const T* p = pw + d * C;
        for (int64_t m = 0; m < rows; ++m)
          for (int64_t c = 0; c < C; ++c) at[m * C + c] = ym[m * C + c] * p[c];
        return at.data();
      };
      if (scatter) {
        for (int64_t t = 0; t < nd; ++t) {
          const int64_t k0 = t * rows;  // offset d0 + t: entries [k0, k0 + rows)
          place_tokens(m0, rows, d0 + t, 1, H, W, r, C, di.data(), dj.data(), rs + t, out,
                       tok.data() + k0, dst.data() + k0, sc.data() + k0);
          uk.gemm_scatter(rows, C, C, a_tile ? scaled_rows(d0 + t) : ym, C,
                          f.out_wp + (a_tile ? 0 : (d0 + t) * C * C), f.kb + (d0 + t) * C,
                          sc.data() + k0, f.e, dst.data() + k0);
        }
      } else {
        if (a_tile) {
          for (int64_t t = 0; t < nd; ++t)
            uk.gemm(rows, C, C, scaled_rows(d0 + t), C, f.out_wp, f.kb + (d0 + t) * C,
                    acc.data() + t * C, nd * C);
        } else {
          uk.gemm(rows, nd * C, C, ym, C, f.out_wp + d0 * C * C, f.kb + d0 * C, acc.data(),
                  nd * C);
        }
        place_tokens(m0, rows, d0, nd, H, W, r, C, di.data(), dj.data(), rs, out, tok.data(),
                     dst.data(), sc.data());
        uk.scale_rows(rows * nd, C, acc.data(), sc.data(), f.e, dst.data());
      }
      if (a.residual)
        for (int64_t k = 0; k < rows * nd; ++k)
          if (tok[k] >= 0) f.row_uk->add(C, a.x + b * a.x_sb + tok[k] * a.x_sn, dst[k]);
    }
  });
}

// Step 3 (r = 1): the sampled map is the map; projection tasks over (column block, batch,
// token block) read y, the residual added in the gemm's epilogue.
template <typename T>
void projection(const Forward<T>& f) {
  const LglArgs<T>& a = f.a;
  const int64_t B = f.B, C = f.C, N = f.N, n = f.n, nr = f.nr;
  const int64_t proj_panels = ceil_div(C, nr);  // r = 1: out_wp is proj_weight^T
  const Blocks orows(N, N <= kMaxRows ? kOutRows : kMaxRows), ocols(proj_panels, kMaxPanels);
  f.parallel_for(ocols.count * B * orows.count, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t cb = task / (B * orows.count), br = task % (B * orows.count);
      const int64_t b = br / orows.count, ob = br % orows.count;
      const int64_t t0 = orows.begin(ob), rows = orows.len(ob, N);
      const int64_t n0 = ocols.begin(cb) * nr;
      const int64_t cols = std::min(ocols.len(cb, proj_panels) * nr, C - n0);
      T* out = a.out + (b * N + t0) * C + n0;
      const T* A = f.y + (b * n + t0) * C;
      const T* Bp = f.out_wp + ocols.begin(cb) * C * nr;
      if (a.residual) {
        f.uk.gemm_add(rows, cols, C, A, C, Bp, f.out_b + n0,
                      a.x + b * a.x_sb + t0 * a.x_sn + n0, a.x_sn, out, C);
      } else {
        f.uk.gemm(rows, cols, C, A, C, Bp, f.out_b + n0, out, C);
      }
    }
  });
}

}  // namespace

template <typename T>
void lgl_fused_forward(const LglArgs<T>& a, const LglUKernels<T>& uk, const T* weights,
                       T* workspace, const ParallelFor& parallel_for,
                       const MlpUKernels<T>* row_uk) {
  const Forward<T> f(a, uk, weights, workspace, parallel_for, row_uk);
  sample_qkv(f);
  attention(f);
  if (f.r > 1) {
    if (!f.rstd_in_attention) propagated_rstd(f);
    folded_output(f);
  } else {
    projection(f);
  }
}

template void lgl_prepare_weights<float>(const LglArgs<float>&, const LglUKernels<float>&,
                                         float*, const ParallelFor&);
template void lgl_prepare_weights<double>(const LglArgs<double>&, const LglUKernels<double>&,
                                          double*, const ParallelFor&);
template void lgl_fused_forward<float>(const LglArgs<float>&, const LglUKernels<float>&,
                                       const float*, float*, const ParallelFor&,
                                       const MlpUKernels<float>*);
template void lgl_fused_forward<double>(const LglArgs<double>&, const LglUKernels<double>&,
                                        const double*, double*, const ParallelFor&,
                                        const MlpUKernels<double>*);

}  // namespace cpu
}  // namespace edgevit
