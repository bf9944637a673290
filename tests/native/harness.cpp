// Torch-free native test harness of the edgevit::lgl_fused micro-kernels and fused driver.
//
// Built by tests/native/Makefile from csrc/cpu/*.cpp (each ISA file with its own flags, exactly
// as setup.py does) plus this file. For every ISA variant this machine can run (isa.h) it checks
// the variant against the scalar reference table:
//
//   gemm            every M tail {1..13, 31, 64}, every N tail {1..40, 48, .., 1152},
//                   K {1, 3, 16, 36, 49, 144, 384}, with and without bias, lda > K and ldc > N.
//                   Tolerance: |c - c_ref| <= 1e-5 * (sum_k |A[m,k]| |B[k,n]| + |bias[n]|)
//                   (the two differ only in FMA vs mul+add and in nothing else: same k order).
//   softmax_rows    N = 1..200, ld > N, random rows plus rows with a huge value, -inf entries,
//                   a NaN, all -inf, +inf. NaN exactly where the reference has NaN, otherwise
//                   |s - s_ref| <= 1e-6 + 1e-5 |s_ref|.
//   pack_weight_t   bit-exact vs pack_b of W^T, N 1..40 and 48..864 x K 1..20 and 36..288, all
//                   panels and an inner range of panels (the others must stay untouched).
//   prop_rstd       C = 1..40, every 9th C up to 400 and the EdgeViT channels, x R {1, 2, 3, 4, 5,
//                   9, 16, 17, 64} (offsets in lanes: full vectors and tails) x M {1, 2, 3, 4, 5,
//                   7, 8, 9, 17} (full and partial token groups), ldy = C, C + 1 or C + 13;
//                   ordinary inputs and large-mean inputs (z of mean 1e4, std ~1), eps 1e-5 or
//                   1e-6. Relative: |r - r_ref| <= (1e-4 + cond) |r_ref|, where
//                   cond = 8 eps_f32 (2 + sqrt C) max|z| / sqrt(var(z) + eps) (float64
//                   statistics, per token and offset) is the float rounding of z = y*pw + pb and
//                   of its mean relative to the spread of z (scalar and SIMD round and sum in
//                   different orders); negligible unless |mean(z)| >> std(z). The error vs a
//                   float64 evaluation is reported (informational), for the scalar table too;
//                   the large-mean figures only for C >= 16 (below, var(z) can be ~0, and the
//                   rounding of z alone is then comparable to sqrt(eps)).
//   scale_rows      rows 1..20 (about a third of the destination rows null) x C 1..70, 96, 144,
//                   240, 384: |o - o_ref| <= 1e-6 (1 + |o_ref|) + eps_f32 |scale * src| (FMA vs
//                   mul + add); null rows untouched.
//   lgl_prepare_weights + lgl_fused_forward  the whole driver (phase 0, then phases 1-3) with
//                   each table (its own packing and fold) vs the scalar table on several op
//                   shapes (r = 1..4 and 8, sides r does not divide, C not a multiple of 16,
//                   several heads, strided x), serial or one-task-at-a-time ParallelFor, a
//                   third of them with the input LayerNorm and the residual (pre_norm), each
//                   with the fold in Wf and in the A-tile form (a_tile):
//                   |o - o_ref| <= 1e-4 (1 + |o_ref|).
//   mlp_fused (the MLP op's table, paired with the gemm table of the same ISA):
//     gelu          n = 1..80 and 1000 over [-12, 12], plus 0, +-tiny, +-inf and NaN:
//                   |g - g_ref| <= 4e-7 (1 + |x|) vs scalar's std::erf (SIMD erf: 4.5e-7 abs);
//                   NaN where scalar has NaN.
//     layernorm_rows  M 1..5, 7, 9 x C 1..70, 96, 144, 240, 384, ldx / ldo > C, with and without
//                   the affine, ordinary rows and rows of mean 1e4:
//                   |o - o_ref| <= 1e-5 (1 + |o_ref|).
//     add           n = 1..80: bit-exact.
//     gemm_gelu, gemm_add, gemm_scatter (gemm table entries: the MLP's epilogues, the folded
//                   projection's)  M {1..13, 31, 64} x N {1..40, 48, 144, 196} x K {1, 5, 36,
//                   144}, lda > K, ldc > N, ldr > N: bit-exact vs the same table's gemm followed
//                   by gelu / add / scale_rows; nothing written outside C's rows (gemm_scatter:
//                   outside its non-null destination rows, each ending at a guard page), R and
//                   e read only inside (guard page after the last element).
//     mlp_prepare_weights + mlp_forward  the whole driver with each table vs scalar (M up to
//                   100, C and hidden with tails, LayerNorm and residual on/off, serial or
//                   one-task-at-a-time): |o - o_ref| <= 1e-4 (1 + |o_ref|).
//   patch_embed_prepare_weights + patch_embed_forward  the whole driver with each table vs scalar
//                   (NCHW and channels_last x, patch 1..4, channel tails, LayerNorm on/off):
//                   |o - o_ref| <= 1e-4 (1 + |o_ref|).
//   linear_prepare_weights + linear_forward  each table vs scalar (rows 1..130, channel tails,
//                   residual on/off, one task at a time): |o - o_ref| <= 1e-4 (1 + |o_ref|).
//   dwconv row      the dwconv micro-kernel (dwconv_ukernels.h) of the same ISA vs the scalar
//                   table: k {1, 3, 5, 7} x W {1..9, 14, 17, 28} x C {1..34, 36, 47, 48, 64, 72,
//                   96, 144, 240, 288, 384} (tails of every vector width), input rows off the map
//                   (null) at the top, bottom or both, bias and residual on or off; every input
//                   row, the weights, bias and residual end at guard pages, the output row too
//                   after a canary prefix. |o - o_ref| <= 2 (k*k + 2) eps_f32 S, S = |bias| +
//                   sum |x w| + |res| (same order, FMA vs mul + add only). The scalar table
//                   itself vs a plain double loop: |o - o_64| <= (k*k + 2) eps_f32 S.
//   dwconv_forward  the driver with each table vs scalar on whole maps (H, W < k, C tails, B > 1):
//                   the same tolerance; and bitwise equal with a serial and a one-task-at-a-time
//                   ParallelFor (blocking independent of threads).
//
// Out-of-bounds checks: every input the kernels read (A, packed B, bias, softmax rows, y, pwt,
// pb, src, scale, e, the prepared weights, the workspace) ends exactly at a PROT_NONE guard page,
// so reading one element too far faults; outputs end at a guard page too (each scale_rows
// destination row its own) and their gaps (ldc > N, ld > N) and a prefix are filled with a
// canary bit pattern that must be intact afterwards; gaps between y rows (ldy > C), the prepared
// weights and the workspace start as canary NaNs, so a read of an unwritten element shows as a
// NaN result. The asan target adds ASan/UBSan.
//
// Usage: harness            run all tests, print "<isa>: <n> cases OK" per ISA; exit 1 on failure
//        harness --quick    fewer gemm cases (for slow emulators)
//        harness --bench    per ISA: gemm GFLOP/s on the workload's representative shapes, weight
//                           packing ns per element, prop_rstd ns per token-offset, and
//                           microseconds of lgl_prepare_weights and lgl_fused_forward on the
//                           8 EdgeViT stage shapes (one thread); dwconv_forward microseconds
//                           on the EdgeViT local-aggregation shapes, k = 3 and 5; gelu ns per
//                           element, layernorm_rows ns per row, mlp_forward microseconds
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../csrc/cpu/dwconv.h"
#include "../../csrc/cpu/isa.h"
#include "../../csrc/cpu/lgl_fused.h"
#include "../../csrc/cpu/lgl_fused_ukernels.h"
#include "../../csrc/cpu/linear_fused.h"
#include "../../csrc/cpu/mlp_fused.h"
#include "../../csrc/cpu/patch_embed.h"
#include "../../csrc/cpu/thread_pool.h"

using edgevit::cpu::LglArgs;
using edgevit::cpu::DwconvArgs;
using DUK = edgevit::cpu::DwconvUKernels<float>;
using edgevit::cpu::LglUKernels;
using UK = LglUKernels<float>;
using MUK = edgevit::cpu::MlpUKernels<float>;

namespace {

// ------------------------------------------------------------------------------------------
// Guarded buffers

constexpr uint32_t kCanaryBits = 0x7fa5c3e1u;  // a NaN payload no kernel produces

float canary() {
  float f;
  std::memcpy(&f, &kCanaryBits, 4);
  return f;
}

bool is_canary(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u == kCanaryBits;
}

// n floats ending exactly at a PROT_NONE page (and starting after another one).
class Guarded {
 public:
  explicit Guarded(int64_t n) : n_(n) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t bytes = size_t(n) * sizeof(float);
    const size_t data_pages = (bytes + page - 1) / page;
    len_ = (data_pages + 2) * page;
    void* p = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::exit(2);
    }
    base_ = static_cast<char*>(p);
    if (mprotect(base_, page, PROT_NONE) != 0 ||
        mprotect(base_ + (data_pages + 1) * page, page, PROT_NONE) != 0) {
      std::perror("mprotect");
      std::exit(2);
    }
    data_ = reinterpret_cast<float*>(base_ + (data_pages + 1) * page - bytes);
  }
  ~Guarded() { munmap(base_, len_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  float* data() { return data_; }
  float& operator[](int64_t i) { return data_[i]; }
  int64_t size() const { return n_; }
  void fill(float v) { std::fill(data_, data_ + n_, v); }

 private:
  int64_t n_;
  size_t len_ = 0;
  char* base_ = nullptr;
  float* data_ = nullptr;
};

// ------------------------------------------------------------------------------------------
// Bookkeeping

struct Tally {
  const char* isa;
  int64_t cases = 0, failures = 0;
  double gemm_worst = 0, softmax_worst = 0, rstd_worst = 0, scale_worst = 0,  // err / tol
      fused_worst = 0, gelu_worst = 0, layernorm_worst = 0, mlp_worst = 0, dwconv_worst = 0;
  double exp_ulp = 0;
  double rstd_err[2] = {0, 0};  // max |r - r_ref| / r_ref: ordinary inputs, large-mean inputs
  double rstd_err64 = 0;        // max |r - float64 rstd of the same inputs| / it, large mean
};

constexpr int kMaxReports = 20;
int g_reports = 0;

void fail(Tally& t, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void fail(Tally& t, const char* fmt, ...) {
  ++t.failures;
  if (g_reports++ >= kMaxReports) return;
  std::printf("FAIL [%s] ", t.isa);
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::printf("\n");
}

// What is running, for the SIGSEGV/SIGBUS handler (a guard-page hit is an out-of-bounds access).
char g_current[256] = "startup";

void on_fault(int sig) {
  char msg[400];
  const int n = std::snprintf(msg, sizeof msg,
                              "FAIL: signal %d (out-of-bounds access hits a guard page) in: %s\n",
                              sig, g_current);
  if (n > 0) {
    const ssize_t w = write(1, msg, size_t(n) < sizeof msg ? size_t(n) : sizeof msg - 1);
    (void)w;
  }
  _exit(1);
}

#define CURRENT(...) std::snprintf(g_current, sizeof g_current, __VA_ARGS__)

std::mt19937 g_rng(12345);

float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(g_rng); }
float normal() { return std::normal_distribution<float>(0.f, 1.f)(g_rng); }

// ------------------------------------------------------------------------------------------
// gemm

int64_t g_gemm_scalar_cases = 0, g_gemm_scalar_failures = 0;
double g_gemm_scalar_worst = 0;  // err / tol of the scalar gemm vs float64

struct GemmCase {
  int64_t M, N, K, lda, ldc;
  bool bias;
};

void test_gemm_case(const GemmCase& gc, const std::vector<const UK*>& isas,
                    std::vector<Tally>& tallies) {
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  const int64_t M = gc.M, N = gc.N, K = gc.K, lda = gc.lda, ldc = gc.ldc;
  Guarded A((M - 1) * lda + K);
  A.fill(canary());  // the gaps between rows (lda > K) are never read; NaN would show if they were
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) A[m * lda + k] = uniform(-1.f, 1.f);
  std::vector<float> Bsrc(K * N);
  for (float& v : Bsrc) v = uniform(-1.f, 1.f);
  Guarded bias(gc.bias ? N : 0);
  for (int64_t n = 0; n < bias.size(); ++n) bias[n] = uniform(-1.f, 1.f);
  const float* biasp = gc.bias ? bias.data() : nullptr;

  // Reference result and per-element bound sum_k |A||B| + |bias|.
  std::vector<float> Bref(edgevit::cpu::packed_b_size(K, N, ref.nr));
  edgevit::cpu::pack_b(Bsrc.data(), K, N, N, 1, ref.nr, Bref.data());
  std::vector<float> Cref(M * N);
  ref.gemm(M, N, K, A.data(), lda, Bref.data(), biasp, Cref.data(), N);
  std::vector<double> bound(M * N);
  // The scalar table itself (its tiles: full panels, partial and half panels, 1-4 rows) against
  // float64, within the rigorous bound of K + 1 float additions in any order,
  // gamma = (K + 1) u / (1 - (K + 1) u), times sum_k |A||B| + |bias|.
  const double u = std::ldexp(1.0, -24), gamma = (K + 1) * u / (1 - (K + 1) * u);
  ++g_gemm_scalar_cases;
  bool scalar_bad = false;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = biasp ? std::fabs(double(biasp[n])) : 0.0;
      double exact = biasp ? double(biasp[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(A[m * lda + k]) * Bsrc[k * N + n];
        s += std::fabs(p);
        exact += p;
      }
      bound[m * N + n] = 1e-5 * s + 1e-30;
      const double err = std::fabs(Cref[m * N + n] - exact), tol = gamma * s + 1e-30;
      g_gemm_scalar_worst = std::max(g_gemm_scalar_worst, err / tol);
      if (!(err <= tol) && !scalar_bad) {
        std::printf("FAIL scalar gemm M=%ld N=%ld K=%ld bias=%d: C[%ld,%ld] = %.9g, float64 %.9g "
                    "(tol %.3g)\n", long(M), long(N), long(K), int(gc.bias), long(m), long(n),
                    double(Cref[m * N + n]), exact, tol);
        scalar_bad = true;
      }
    }
  // ... and its stores: only columns < N of each row, at the case's ldc.
  {
    Guarded Cg((M - 1) * ldc + N);  // the last row's column N-1 touches the guard
    Cg.fill(canary());
    CURRENT("scalar gemm M=%ld N=%ld K=%ld lda=%ld ldc=%ld bias=%d", long(M), long(N), long(K),
            long(lda), long(ldc), int(gc.bias));
    ref.gemm(M, N, K, A.data(), lda, Bref.data(), biasp, Cg.data(), ldc);
    for (int64_t i = 0; i < Cg.size() && !scalar_bad; ++i) {
      const bool inside = i % ldc < N;
      const bool ok = inside ? std::memcmp(&Cg[i], &Cref[i / ldc * N + i % ldc], 4) == 0
                             : is_canary(Cg[i]);
      if (!ok) {
        std::printf("FAIL scalar gemm M=%ld N=%ld K=%ld ldc=%ld: offset %ld %s\n", long(M),
                    long(N), long(K), long(ldc), long(i),
                    inside ? "differs from the ldc = N result" : "written outside C");
        scalar_bad = true;
      }
    }
  }
  g_gemm_scalar_failures += scalar_bad;

  constexpr int64_t kPrefix = 16;
  for (size_t t = 0; t < isas.size(); ++t) {
    const UK& uk = *isas[t];
    Tally& tally = tallies[t];
    ++tally.cases;
    Guarded Bp(edgevit::cpu::packed_b_size(K, N, uk.nr));
    edgevit::cpu::pack_b(Bsrc.data(), K, N, N, 1, uk.nr, Bp.data());
    Guarded Cbuf(kPrefix + (M - 1) * ldc + N);  // the last row's column N-1 touches the guard
    Cbuf.fill(canary());
    float* C = Cbuf.data() + kPrefix;
    CURRENT("%s gemm M=%ld N=%ld K=%ld lda=%ld ldc=%ld bias=%d", uk.name, long(M), long(N),
            long(K), long(lda), long(ldc), int(gc.bias));
    uk.gemm(M, N, K, A.data(), lda, Bp.data(), biasp, C, ldc);
    bool bad = false;
    for (int64_t i = 0; i < Cbuf.size() && !bad; ++i) {
      const int64_t off = i - kPrefix;
      const bool inside = off >= 0 && off % ldc < N;
      if (!inside && !is_canary(Cbuf[i])) {
        fail(tally, "gemm M=%ld N=%ld K=%ld lda=%ld ldc=%ld bias=%d: wrote outside C at offset %ld",
             long(M), long(N), long(K), long(lda), long(ldc), int(gc.bias), long(off));
        bad = true;
      }
    }
    for (int64_t m = 0; m < M && !bad; ++m)
      for (int64_t n = 0; n < N && !bad; ++n) {
        const double got = C[m * ldc + n], want = Cref[m * N + n];
        const double err = std::fabs(got - want), tol = bound[m * N + n];
        if (!(err <= tol)) {
          fail(tally, "gemm M=%ld N=%ld K=%ld lda=%ld ldc=%ld bias=%d: C[%ld,%ld] = %.9g, "
               "scalar %.9g (tol %.3g)", long(M), long(N), long(K), long(lda), long(ldc),
               int(gc.bias), long(m), long(n), got, want, tol);
          bad = true;
        }
        tally.gemm_worst = std::max(tally.gemm_worst, err / tol);
      }
  }
}

void test_gemm(bool quick, const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  std::vector<int64_t> Ms, Ns;
  for (int64_t m = 1; m <= 13; ++m) Ms.push_back(m);
  Ms.push_back(31);
  Ms.push_back(64);
  for (int64_t n = 1; n <= 40; ++n) Ns.push_back(n);
  for (int64_t n : {48, 72, 108, 144, 196, 240, 288, 432, 1152}) Ns.push_back(n);
  const int64_t Ks[] = {1, 3, 16, 36, 49, 144, 384};
  int64_t idx = 0;
  for (int64_t K : Ks)
    for (int64_t M : Ms)
      for (int64_t N : Ns)
        for (int b = 0; b < 2; ++b) {
          ++idx;
          // quick: both bias settings only for small K, one (alternating) otherwise.
          if (quick && K > 16 && (idx % 2 == 0)) continue;
          const int64_t lda = K + (idx % 3 == 0 ? 0 : idx % 3 == 1 ? 1 : 7);
          const int64_t ldc = N + (idx % 4 == 0 ? 0 : idx % 4 == 1 ? 3 : idx % 4 == 2 ? 16 : 0);
          test_gemm_case({M, N, K, lda, ldc, b == 1}, isas, tallies);
        }
}

// ------------------------------------------------------------------------------------------
// pack_weight_t (when a table has one): bit-exact vs pack_b of W^T, panels outside [p0, p1)
// untouched, W read only inside its rows (guard page after the last row's column K-1).

void test_pack(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  std::vector<int64_t> Ns, Ks;
  for (int64_t n = 1; n <= 40; ++n) Ns.push_back(n);
  for (int64_t n : {48, 100, 108, 864}) Ns.push_back(n);
  for (int64_t k = 1; k <= 20; ++k) Ks.push_back(k);
  for (int64_t k : {36, 49, 144, 288}) Ks.push_back(k);
  int64_t idx = 0;
  for (int64_t N : Ns)
    for (int64_t K : Ks) {
      const int64_t ldw = K + (++idx % 2 ? 0 : 3);
      Guarded w((N - 1) * ldw + K);
      for (int64_t i = 0; i < w.size(); ++i) w[i] = uniform(-1.f, 1.f);
      for (size_t t = 0; t < isas.size(); ++t) {
        const UK& uk = *isas[t];
        if (!uk.pack_weight_t) continue;
        const int64_t P = (N + uk.nr - 1) / uk.nr;
        std::vector<float> want(edgevit::cpu::packed_b_size(K, N, uk.nr));
        edgevit::cpu::pack_b(w.data(), K, N, 1, ldw, uk.nr, want.data());
        const int64_t ranges[2][2] = {{0, P}, {P >= 3 ? 1 : 0, P >= 3 ? P - 1 : P}};
        for (const auto& rg : ranges) {
          Tally& tally = tallies[t];
          ++tally.cases;
          Guarded got(int64_t(want.size()));
          got.fill(canary());
          CURRENT("%s pack_weight_t N=%ld K=%ld ldw=%ld panels [%ld, %ld)", uk.name, long(N),
                  long(K), long(ldw), long(rg[0]), long(rg[1]));
          uk.pack_weight_t(w.data(), N, K, ldw, rg[0], rg[1], got.data());
          for (int64_t i = 0; i < got.size(); ++i) {
            const int64_t panel = i / (K * uk.nr);
            const bool inside = panel >= rg[0] && panel < rg[1];
            const bool ok = inside ? std::memcmp(&got[i], &want[i], 4) == 0 : is_canary(got[i]);
            if (!ok) {
              fail(tally, "pack_weight_t N=%ld K=%ld ldw=%ld panels [%ld, %ld): dst[%ld] = %g, "
                   "expected %g", long(N), long(K), long(ldw), long(rg[0]), long(rg[1]),
                   long(i), got[i], inside ? want[i] : canary());
              break;
            }
          }
        }
      }
    }
}

// ------------------------------------------------------------------------------------------
// softmax

enum RowKind { kRandom, kHuge, kHugeNeg, kNegInf, kNaN, kAllNegInf, kPosInf, kTwo, kNumKinds };

void fill_row(float* s, int64_t N, int kind, int64_t salt) {
  for (int64_t j = 0; j < N; ++j) s[j] = 3.f * normal();
  const int64_t at = salt % N;
  switch (kind) {
    case kHuge: s[at] = 1e30f; break;
    case kHugeNeg: s[at] = 1e4f; s[(at + 1) % N] = -1e30f; break;
    case kNegInf:
      for (int64_t j = salt % 3; j < N; j += 3) s[j] = -INFINITY;
      break;
    case kNaN: s[at] = NAN; break;
    case kAllNegInf:
      for (int64_t j = 0; j < N; ++j) s[j] = -INFINITY;
      break;
    case kPosInf: s[at] = INFINITY; break;
    case kTwo:  // [0, x]: exercises exp over its whole range, down to underflow
      for (int64_t j = 0; j < N; ++j) s[j] = -float(salt % 120) * (float(j) + 0.37f) / 3.f;
      break;
    default: break;
  }
}

void test_softmax(const std::vector<const UK*>& isas, std::vector<Tally>& tallies,
                  double* max_rel_vs_double) {
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  const float scales[] = {1.0f, 0.16666667f};
  int64_t salt = 0;
  for (int64_t N = 1; N <= 200; ++N)
    for (float scale : scales)
      for (int64_t pad : {int64_t(0), int64_t(5)}) {
        const int64_t M = kNumKinds, ld = N + pad;
        std::vector<float> src(M * ld, 0.f);
        for (int64_t m = 0; m < M; ++m) fill_row(src.data() + m * ld, N, int(m), ++salt * 7919);
        std::vector<float> want(src);
        ref.softmax_rows(M, N, scale, want.data(), ld);
        // Double-precision softmax of the same rows (informational accuracy figure).
        std::vector<double> exact(M * N);
        for (int64_t m = 0; m < M; ++m) {
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j < N; ++j) mx = std::max(mx, double(src[m * ld + j] * scale));
          for (int64_t j = 0; j < N; ++j) sum += std::exp(double(src[m * ld + j] * scale) - mx);
          for (int64_t j = 0; j < N; ++j)
            exact[m * N + j] = std::exp(double(src[m * ld + j] * scale) - mx) / sum;
        }
        for (size_t t = 0; t < isas.size(); ++t) {
          Tally& tally = tallies[t];
          ++tally.cases;
          Guarded buf(16 + (M - 1) * ld + N);
          buf.fill(canary());
          float* S = buf.data() + 16;
          for (int64_t m = 0; m < M; ++m)
            std::memcpy(S + m * ld, src.data() + m * ld, N * sizeof(float));
          CURRENT("%s softmax_rows N=%ld ld=%ld scale=%g", isas[t]->name, long(N), long(ld),
                  scale);
          isas[t]->softmax_rows(M, N, scale, S, ld);
          bool bad = false;
          for (int64_t i = 0; i < buf.size() && !bad; ++i) {
            const int64_t off = i - 16;
            if ((off < 0 || off % ld >= N) && !is_canary(buf[i])) {
              fail(tally, "softmax N=%ld ld=%ld: wrote outside the rows at offset %ld", long(N),
                   long(ld), long(off));
              bad = true;
            }
          }
          for (int64_t m = 0; m < M && !bad; ++m)
            for (int64_t j = 0; j < N && !bad; ++j) {
              const float got = S[m * ld + j], w = want[m * ld + j];
              if (std::isnan(got) != std::isnan(w)) {
                fail(tally, "softmax N=%ld kind=%ld scale=%g: s[%ld] = %g, scalar %g", long(N),
                     long(m), scale, long(j), got, w);
                bad = true;
                continue;
              }
              if (std::isnan(w)) continue;
              const double err = std::fabs(double(got) - w), tol = 1e-6 + 1e-5 * std::fabs(w);
              if (!(err <= tol)) {
                fail(tally, "softmax N=%ld kind=%ld scale=%g: s[%ld] = %.9g, scalar %.9g",
                     long(N), long(m), scale, long(j), got, w);
                bad = true;
              }
              tally.softmax_worst = std::max(tally.softmax_worst, err / tol);
              const double e = exact[m * N + j];
              if (e > 1e-30)
                max_rel_vs_double[t] =
                    std::max(max_rel_vs_double[t], std::fabs(double(got) - e) / e);
            }
        }
      }
}

// exp accuracy through softmax: a row [0, x] with x <= -17 gives s[1] = exp(x) / (1 + exp(x))
// = exp(x) exactly in float (1 + exp(x) rounds to 1), so s[1] is the kernel's exp(x) itself.
// Measured in ulps of the float64 exp(x), over x in [-103.9, -17] (down into the denormal range,
// where an ulp is 2^-149) at 4001 points. Must be <= kMaxExpUlp.
constexpr double kMaxExpUlp = 2.0;

double ulp_of(double v) {  // ulp of v as a float
  const double a = std::fabs(v);
  if (a < std::ldexp(1.0, -126)) return std::ldexp(1.0, -149);
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  return std::ldexp(1.0, e - 24);
}

double exp_ulp_error(const UK& uk) {
  constexpr int64_t kPoints = 4001;
  std::vector<float> rows(2 * kPoints);
  for (int64_t i = 0; i < kPoints; ++i) {
    rows[2 * i] = 0.f;
    rows[2 * i + 1] = float(-17.0 - 86.9 * double(i) / double(kPoints - 1));
  }
  std::vector<float> s(rows);
  uk.softmax_rows(kPoints, 2, 1.0f, s.data(), 2);
  double worst = 0;
  for (int64_t i = 0; i < kPoints; ++i) {
    const double exact = std::exp(double(rows[2 * i + 1]));
    worst = std::max(worst, std::fabs(double(s[2 * i + 1]) - exact) / ulp_of(exact));
  }
  return worst;
}

// ------------------------------------------------------------------------------------------
// Guarded rows

// nrows rows of n floats, each ending exactly at its own PROT_NONE page (and the first one
// starting after another), in one mapping: row pointers (scale_rows' destinations).
class GuardedRows {
 public:
  GuardedRows(int64_t nrows, int64_t n) : nrows_(nrows) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t bytes = size_t(n) * sizeof(float);
    const size_t data_pages = (bytes + page - 1) / page;
    stride_ = (data_pages + 1) * page;  // data pages, then a guard page
    len_ = page + size_t(nrows) * stride_;
    void* p = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::exit(2);
    }
    base_ = static_cast<char*>(p);
    if (mprotect(base_, page, PROT_NONE) != 0) {
      std::perror("mprotect");
      std::exit(2);
    }
    for (int64_t i = 0; i < nrows; ++i) {
      char* guard = base_ + page + (size_t(i) + 1) * stride_ - page;
      if (mprotect(guard, page, PROT_NONE) != 0) {
        std::perror("mprotect");
        std::exit(2);
      }
      rows_.push_back(reinterpret_cast<float*>(guard - bytes));
    }
  }
  ~GuardedRows() { munmap(base_, len_); }
  GuardedRows(const GuardedRows&) = delete;
  GuardedRows& operator=(const GuardedRows&) = delete;
  float* row(int64_t i) { return rows_[size_t(i)]; }
  int64_t rows() const { return nrows_; }

 private:
  int64_t nrows_;
  size_t stride_ = 0, len_ = 0;
  char* base_ = nullptr;
  std::vector<float*> rows_;
};

// ------------------------------------------------------------------------------------------
// prop_rstd

constexpr double kEpsF32 = 1.1920929e-7;  // 2^-23

// The informational large-mean figures (Tally::rstd_err[1], rstd_err64 and the one below) cover
// C >= kInfoMinC only: for smaller C, var(z) can be ~0 and the rounding of z alone (0.5 ulp of
// 1e4) is then comparable to sqrt(eps), which says nothing about the kernels.
constexpr int64_t kInfoMinC = 16;
double g_scalar_rstd_err64 = 0;  // max |r - float64 rstd| / it of the scalar table, large mean

// Channel counts of the prop_rstd test: 1..40, every 9th up to 400 (all residues mod 16 and
// mod 4), the EdgeViT channels.
std::vector<int64_t> rstd_channels() {
  std::vector<int64_t> Cs;
  for (int64_t C = 1; C <= 40; ++C) Cs.push_back(C);
  for (int64_t C = 41; C <= 400; C += 9) Cs.push_back(C);
  for (int64_t C : {36, 48, 72, 96, 144, 240, 288, 384, 400}) Cs.push_back(C);
  std::sort(Cs.begin(), Cs.end());
  Cs.erase(std::unique(Cs.begin(), Cs.end()), Cs.end());
  return Cs;
}

// For each C, R in {1, 2, 3, 4, 5, 9, 16, 17, 64} (fewer offsets than a vector, whole vectors
// of 4, 8 and 16 lanes, and tails) and M in {1, 2, 3, 4, 5, 7, 8, 9, 17} (full and partial token
// groups): y is M rows of row stride ldy in {C, C + 1, C + 13} ending at a guard page, its gaps
// canary NaNs (a read of one shows as a NaN result); pwt [C, R] and pb [C] end at guard pages;
// rstd is M*R floats ending at a guard page after a canary prefix. Ordinary inputs and
// large-mean inputs (z of mean 1e4, std ~1); eps 1e-5 or 1e-6 (alternating).
void test_prop_rstd(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  const auto& ref64 = edgevit::cpu::scalar_ukernels<double>();
  constexpr int64_t kPrefix = 16;
  const int64_t Rs[] = {1, 2, 3, 4, 5, 9, 16, 17, 64};
  const int64_t Ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 17};
  int64_t idx = 0;
  for (int64_t C : rstd_channels())
    for (int64_t R : Rs) {
      Guarded pwt(C * R), pb(C);
      for (int large_mean = 0; large_mean < 2; ++large_mean) {
        for (int64_t i = 0; i < C * R; ++i) pwt[i] = uniform(0.5f, 1.5f);
        for (int64_t c = 0; c < C; ++c)
          pb[c] = large_mean ? 1e4f + uniform(-0.5f, 0.5f) : uniform(-1.f, 1.f);
        const std::vector<double> pwt64(pwt.data(), pwt.data() + C * R),
            pb64(pb.data(), pb.data() + C);
        for (int64_t M : Ms) {
          ++idx;
          const int64_t ldy = C + (idx % 3 == 0 ? 0 : idx % 3 == 1 ? 1 : 13);
          const float eps = idx % 2 ? 1e-5f : 1e-6f;
          Guarded y((M - 1) * ldy + C);
          y.fill(canary());
          for (int64_t m = 0; m < M; ++m)
            for (int64_t c = 0; c < C; ++c)
              y[m * ldy + c] = large_mean ? normal() : 2.f * normal() + 0.5f;
          std::vector<float> want(M * R);
          ref.prop_rstd(M, R, C, y.data(), ldy, pwt.data(), pb.data(), eps, want.data());
          // Float64 statistics of the same inputs: rstd64 = 1 / sqrt(var + eps), and max|z|.
          const std::vector<double> y64(y.data(), y.data() + y.size());
          std::vector<double> want64(M * R), zmax(M * R, 0.0);
          ref64.prop_rstd(M, R, C, y64.data(), ldy, pwt64.data(), pb64.data(), double(eps),
                          want64.data());
          for (int64_t m = 0; m < M; ++m)
            for (int64_t d = 0; d < R; ++d)
              for (int64_t c = 0; c < C; ++c) {
                const double z = y64[m * ldy + c] * pwt64[c * R + d] + pb64[c];
                zmax[m * R + d] = std::max(zmax[m * R + d], std::fabs(z));
              }
          const bool info = large_mean && C >= kInfoMinC;
          if (info)
            for (int64_t i = 0; i < M * R; ++i)
              g_scalar_rstd_err64 =
                  std::max(g_scalar_rstd_err64, std::fabs(want[i] - want64[i]) / want64[i]);
          for (size_t t = 0; t < isas.size(); ++t) {
            Tally& tally = tallies[t];
            ++tally.cases;
            Guarded rbuf(kPrefix + M * R);
            rbuf.fill(canary());
            float* rstd = rbuf.data() + kPrefix;
            CURRENT("%s prop_rstd M=%ld R=%ld C=%ld ldy=%ld large_mean=%d", isas[t]->name,
                    long(M), long(R), long(C), long(ldy), large_mean);
            isas[t]->prop_rstd(M, R, C, y.data(), ldy, pwt.data(), pb.data(), eps, rstd);
            bool bad = false;
            for (int64_t i = 0; i < kPrefix && !bad; ++i)
              if (!is_canary(rbuf[i])) {
                fail(tally, "prop_rstd M=%ld R=%ld C=%ld ldy=%ld: wrote before rstd", long(M),
                     long(R), long(C), long(ldy));
                bad = true;
              }
            for (int64_t i = 0; i < M * R && !bad; ++i) {
              // Relative: 1e-4, plus the float rounding of z (magnitude max|z|) relative to its
              // spread, which scalar and SIMD incur differently (see the top of this file).
              const double cond = 8.0 * kEpsF32 * (2.0 + std::sqrt(double(C))) * zmax[i] *
                                  want64[i];
              const double err = std::fabs(double(rstd[i]) - want[i]);
              const double tol = (1e-4 + cond) * std::fabs(double(want[i]));
              if (!(err <= tol)) {
                fail(tally, "prop_rstd M=%ld R=%ld C=%ld ldy=%ld large_mean=%d eps=%g: "
                     "rstd[%ld, %ld] = %.9g, scalar %.9g (float64 %.9g, tol %.3g)", long(M),
                     long(R), long(C), long(ldy), large_mean, eps, long(i / R), long(i % R),
                     rstd[i], want[i], want64[i], tol);
                bad = true;
              }
              tally.rstd_worst = std::max(tally.rstd_worst, err / tol);
              if (!large_mean || info)
                tally.rstd_err[large_mean] =
                    std::max(tally.rstd_err[large_mean], err / std::fabs(double(want[i])));
              if (info)
                tally.rstd_err64 =
                    std::max(tally.rstd_err64, std::fabs(rstd[i] - want64[i]) / want64[i]);
            }
          }
        }
      }
    }
}

// ------------------------------------------------------------------------------------------
// scale_rows

// rows 1..20 x C in 1..70, 96, 144, 240, 384: src [rows, C], scale [rows], e [C] end at guard
// pages; each dst row is its own guarded row (canary prefix, then C floats ending at a guard
// page), about a third of them null (their rows must stay canary).
// |o - o_ref| <= 1e-6 (1 + |o_ref|) + 2^-23 |scale src| (FMA vs mul + add: the rounding of the
// product).
void test_scale_rows(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  constexpr int64_t kPrefix = 16;
  std::vector<int64_t> Cs;
  for (int64_t C = 1; C <= 70; ++C) Cs.push_back(C);
  for (int64_t C : {96, 144, 240, 384}) Cs.push_back(C);
  for (int64_t rows = 1; rows <= 20; ++rows)
    for (int64_t C : Cs) {
      Guarded src(rows * C), scale(rows), e(C);
      for (int64_t i = 0; i < rows * C; ++i) src[i] = 2.f * normal();
      for (int64_t t = 0; t < rows; ++t) scale[t] = uniform(0.2f, 5.f);
      for (int64_t c = 0; c < C; ++c) e[c] = normal();
      std::vector<bool> null_row(rows);
      for (int64_t t = 0; t < rows; ++t) null_row[t] = (t + C + rows) % 3 == 2;
      std::vector<float> want(rows * C, 0.f);
      std::vector<float*> want_dst(rows);
      for (int64_t t = 0; t < rows; ++t) want_dst[t] = null_row[t] ? nullptr : &want[t * C];
      ref.scale_rows(rows, C, src.data(), scale.data(), e.data(), want_dst.data());
      for (size_t t = 0; t < isas.size(); ++t) {
        Tally& tally = tallies[t];
        ++tally.cases;
        GuardedRows out(rows, kPrefix + C);
        std::vector<float*> dst(rows);
        for (int64_t r = 0; r < rows; ++r) {
          std::fill(out.row(r), out.row(r) + kPrefix + C, canary());
          dst[r] = null_row[r] ? nullptr : out.row(r) + kPrefix;
        }
        CURRENT("%s scale_rows rows=%ld C=%ld", isas[t]->name, long(rows), long(C));
        isas[t]->scale_rows(rows, C, src.data(), scale.data(), e.data(), dst.data());
        bool bad = false;
        for (int64_t r = 0; r < rows && !bad; ++r)
          for (int64_t i = 0; i < kPrefix + C && !bad; ++i) {
            const float got = out.row(r)[i];
            const int64_t c = i - kPrefix;
            if (c < 0 || null_row[r]) {
              if (!is_canary(got)) {
                fail(tally, "scale_rows rows=%ld C=%ld: wrote %s row %ld at column %ld",
                     long(rows), long(C), null_row[r] ? "the null" : "before", long(r), long(c));
                bad = true;
              }
              continue;
            }
            const double w = want[r * C + c];
            const double err = std::fabs(double(got) - w);
            const double tol = 1e-6 * (1.0 + std::fabs(w)) +
                               kEpsF32 * std::fabs(double(scale[r]) * src[r * C + c]);
            if (!(err <= tol)) {
              fail(tally, "scale_rows rows=%ld C=%ld: dst[%ld][%ld] = %.9g, scalar %.9g",
                   long(rows), long(C), long(r), long(c), got, w);
              bad = true;
            }
            tally.scale_worst = std::max(tally.scale_worst, err / tol);
          }
      }
    }
}

// ------------------------------------------------------------------------------------------
// fused driver

struct OpShape {
  int64_t B, H, W, C, heads, r;
  bool bias, channels_first;
};

void serial_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) { fn(0, n); }
void one_by_one_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  for (int64_t i = 0; i < n; ++i) fn(i, i + 1);
}

// The inputs of one op: x and the weights, random, at about the scales of a trained model.
struct OpData {
  std::vector<float> x, qkv_w, qkv_b, prop_w, prop_b, norm_w, norm_b, proj_w, proj_b;
  explicit OpData(const OpShape& s) {
    const int64_t C = s.C, N = s.H * s.W, rr = s.r * s.r;
    x.resize(s.B * N * C); qkv_w.resize(3 * C * C); qkv_b.resize(3 * C); prop_w.resize(rr * C);
    prop_b.resize(C); norm_w.resize(C); norm_b.resize(C); proj_w.resize(C * C); proj_b.resize(C);
    const float ws = 1.0f / std::sqrt(float(C));
    for (float& v : x) v = normal();
    for (float& v : qkv_w) v = ws * normal();
    for (float& v : qkv_b) v = 0.1f * normal();
    for (float& v : prop_w) v = uniform(-1.f, 1.f);
    for (float& v : prop_b) v = 0.1f * normal();
    for (float& v : norm_w) v = uniform(0.5f, 1.5f);
    for (float& v : norm_b) v = 0.1f * normal();
    for (float& v : proj_w) v = ws * normal();
    for (float& v : proj_b) v = 0.1f * normal();
  }
};

LglArgs<float> op_args(const OpShape& s, const OpData& d, float* out) {
  const int64_t C = s.C, N = s.H * s.W;
  LglArgs<float> a{};
  a.B = s.B; a.H = s.H; a.W = s.W; a.C = C; a.num_heads = s.heads; a.r = s.r;
  a.scale = 1.0f / std::sqrt(float(C / s.heads));
  a.eps = 1e-5f;
  a.x = d.x.data();
  if (s.channels_first) {  // x stored [B, C, N], viewed as [B, N, C]
    a.x_sb = N * C; a.x_sn = 1; a.x_sc = N;
  } else {
    a.x_sb = N * C; a.x_sn = C; a.x_sc = 1;
  }
  a.qkv_w = d.qkv_w.data();
  a.qkv_b = s.bias ? d.qkv_b.data() : nullptr;
  a.prop_w = s.r > 1 ? d.prop_w.data() : nullptr;
  a.prop_b = s.r > 1 ? d.prop_b.data() : nullptr;
  a.norm_w = s.r > 1 ? d.norm_w.data() : nullptr;
  a.norm_b = s.r > 1 ? d.norm_b.data() : nullptr;
  a.proj_w = d.proj_w.data();
  a.proj_b = s.bias ? d.proj_b.data() : nullptr;
  a.out = out;
  return a;
}

// Phase 0 (lgl_prepare_weights) then phases 1-3 (lgl_fused_forward) with table uk, both through
// the same ParallelFor; the prepared weights and the workspace end at guard pages. block: with
// the input LayerNorm (affine norm_w, norm_b) and, for token-major x, the residual. a_tile: the
// A-tile form of the fold where nr divides C.
std::vector<float> run_fused(const UK& uk, const OpShape& s, const OpData& d, bool one_by_one,
                             bool block, bool a_tile) {
  const int64_t C = s.C, N = s.H * s.W;
  Guarded out(s.B * N * C);
  out.fill(canary());
  Guarded weights(edgevit::cpu::lgl_weights_size(C, s.r, uk.nr, a_tile));
  weights.fill(canary());
  Guarded ws(edgevit::cpu::lgl_workspace_size(s.B, s.H, s.W, C, s.heads, s.r, uk.nr));
  ws.fill(canary());
  LglArgs<float> a = op_args(s, d, out.data());
  a.a_tile = a_tile;
  if (block) {
    a.pre_norm = true;
    a.pre_w = d.norm_w.data();
    a.pre_b = d.norm_b.data();
    a.pre_eps = 1e-5f;
    a.residual = !s.channels_first;
  }
  const edgevit::cpu::ParallelFor pf = one_by_one ? one_by_one_for : serial_for;
  edgevit::cpu::lgl_prepare_weights<float>(a, uk, weights.data(), pf);
  edgevit::cpu::lgl_fused_forward<float>(a, uk, weights.data(), ws.data(), pf,
                                         edgevit::cpu::isa_named(uk.name)->mlp);
  return std::vector<float>(out.data(), out.data() + out.size());
}

void test_fused(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const OpShape shapes[] = {
      {1, 7, 7, 36, 1, 1, true, false},     {2, 9, 11, 48, 2, 2, true, false},
      {1, 13, 10, 72, 2, 3, false, false},  {1, 28, 28, 36, 1, 4, true, false},
      {1, 14, 14, 144, 4, 2, true, true},   {1, 7, 7, 288, 8, 1, true, false},
      {2, 17, 23, 96, 2, 4, true, false},   {1, 30, 30, 36, 1, 4, false, true},
      {1, 9, 11, 40, 2, 2, true, false},    {1, 20, 19, 48, 2, 8, true, false},
  };
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  int variant = 0;
  for (const OpShape& s : shapes) {
    const int64_t C = s.C;
    const OpData d(s);
    const bool block = variant % 3 == 1;  // pre_norm + residual on a third of the shapes
    const bool one_by_one = variant++ % 2 == 1;
    CURRENT("scalar lgl_fused_forward B=%ld H=%ld W=%ld C=%ld heads=%ld r=%ld block=%d",
            long(s.B), long(s.H), long(s.W), long(C), long(s.heads), long(s.r), int(block));
    const std::vector<float> want = run_fused(ref, s, d, false, block, false);
    for (size_t t = 0; t < isas.size(); ++t) {
      Tally& tally = tallies[t];
      for (const bool a_tile : {false, true}) {
        ++tally.cases;
        CURRENT("%s lgl_fused_forward B=%ld H=%ld W=%ld C=%ld heads=%ld r=%ld block=%d a_tile=%d",
                isas[t]->name, long(s.B), long(s.H), long(s.W), long(C), long(s.heads),
                long(s.r), int(block), int(a_tile));
        const std::vector<float> got = run_fused(*isas[t], s, d, one_by_one, block, a_tile);
        for (size_t i = 0; i < got.size(); ++i) {
          const double err = std::fabs(double(got[i]) - want[i]);
          const double tol = 1e-4 * (1.0 + std::fabs(want[i]));
          if (!(err <= tol)) {
            fail(tally, "lgl_fused_forward B=%ld H=%ld W=%ld C=%ld heads=%ld r=%ld a_tile=%d: "
                 "out[%zu] = %.9g, scalar %.9g", long(s.B), long(s.H), long(s.W), long(C),
                 long(s.heads), long(s.r), int(a_tile), i, got[i], want[i]);
            break;
          }
          tally.fused_worst = std::max(tally.fused_worst, err / tol);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// dwconv

// The dwconv table of the same ISA as an lgl table.
const DUK& dwconv_table(const UK& uk) { return *edgevit::cpu::isa_named(uk.name)->dwconv; }

// out (and S, the sum of the magnitudes of its terms) of one output row in double, straight from
// the definition (dwconv_ukernels.h).
void dwconv_row_f64(int64_t W, int64_t C, int64_t k, const float* const* rows, const float* wt,
                    const float* bias, const float* res, double* out, double* mag) {
  const int64_t p = k / 2;
  for (int64_t w = 0; w < W; ++w)
    for (int64_t c = 0; c < C; ++c) {
      double acc = bias ? bias[c] : 0.0, s = bias ? std::fabs(bias[c]) : 0.0;
      for (int64_t kh = 0; kh < k; ++kh)
        for (int64_t kw = 0; kw < k; ++kw) {
          const int64_t iw = w + kw - p;
          if (!rows[kh] || iw < 0 || iw >= W) continue;
          const double t = double(rows[kh][iw * C + c]) * wt[(kh * k + kw) * C + c];
          acc += t;
          s += std::fabs(t);
        }
      if (res) {
        acc += res[w * C + c];
        s += std::fabs(res[w * C + c]);
      }
      out[w * C + c] = acc;
      mag[w * C + c] = s;
    }
}

int64_t g_dwconv_scalar_cases = 0, g_dwconv_scalar_failures = 0;
double g_dwconv_scalar_worst = 0;  // err / tol of the scalar table vs float64

// Compares got[0, n) to want with |got - want| <= factor (k*k + 2) eps_f32 mag; returns the
// first bad index or -1, and raises *worst to the largest err / tol.
int64_t dwconv_compare(const float* got, const float* want, const double* want64,
                       const double* mag, int64_t n, int64_t k, double factor, double* worst) {
  for (int64_t i = 0; i < n; ++i) {
    const double w = want ? double(want[i]) : want64[i];
    const double err = std::fabs(double(got[i]) - w);
    const double tol = factor * double(k * k + 2) * kEpsF32 * mag[i] + 1e-30;
    if (!(err <= tol)) return i;
    *worst = std::max(*worst, err / tol);
  }
  return -1;
}

void test_dwconv_rows(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const DUK& ref = edgevit::cpu::scalar_dwconv_ukernels<float>();
  constexpr int64_t kPrefix = 16;
  std::vector<int64_t> Cs;
  for (int64_t C = 1; C <= 34; ++C) Cs.push_back(C);
  for (int64_t C : {36, 47, 48, 64, 72, 96, 144, 240, 288, 384}) Cs.push_back(C);
  int64_t variant = 0;
  for (int64_t k : {1, 3, 5, 7})
    for (int64_t W : {1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 17, 28})
      for (int64_t C : Cs) {
        const int64_t p = k / 2, n = W * C;
        ++variant;
        // Rows off the map: none, the top ones, the bottom ones, or both (a map shorter than k).
        const int64_t pattern = variant % 4, cut = p > 0 ? 1 + variant / 4 % p : 0;
        const bool has_bias = variant % 3 != 0, has_res = variant % 5 < 3;
        std::vector<std::unique_ptr<Guarded>> in;
        std::vector<const float*> rows(k);
        for (int64_t kh = 0; kh < k; ++kh) {
          const bool off = ((pattern & 1) && kh < cut) || ((pattern & 2) && kh >= k - cut);
          if (off) continue;
          in.emplace_back(new Guarded(n));
          for (int64_t i = 0; i < n; ++i) (*in.back())[i] = normal();
          rows[kh] = in.back()->data();
        }
        Guarded wt(k * k * C), bias(C), res(n);
        for (int64_t i = 0; i < k * k * C; ++i) wt[i] = uniform(-1.f, 1.f);
        for (int64_t c = 0; c < C; ++c) bias[c] = normal();
        for (int64_t i = 0; i < n; ++i) res[i] = normal();
        const float* b = has_bias ? bias.data() : nullptr;
        const float* r = has_res ? res.data() : nullptr;
        std::vector<double> want64(n), mag(n);
        dwconv_row_f64(W, C, k, rows.data(), wt.data(), b, r, want64.data(), mag.data());
        Guarded want(n);
        CURRENT("scalar dwconv row k=%ld W=%ld C=%ld", long(k), long(W), long(C));
        ref.row(W, C, k, rows.data(), wt.data(), b, r, want.data());
        ++g_dwconv_scalar_cases;
        const int64_t bad64 = dwconv_compare(want.data(), nullptr, want64.data(), mag.data(), n,
                                             k, 1.0, &g_dwconv_scalar_worst);
        if (bad64 >= 0) {
          ++g_dwconv_scalar_failures;
          std::printf("FAIL [scalar] dwconv row k=%ld W=%ld C=%ld: out[%ld] = %.9g, float64 %.9g\n",
                      long(k), long(W), long(C), long(bad64), want[bad64], want64[bad64]);
        }
        for (size_t t = 0; t < isas.size(); ++t) {
          Tally& tally = tallies[t];
          ++tally.cases;
          const DUK& uk = dwconv_table(*isas[t]);
          Guarded out(kPrefix + n);
          out.fill(canary());
          CURRENT("%s dwconv row k=%ld W=%ld C=%ld", uk.name, long(k), long(W), long(C));
          uk.row(W, C, k, rows.data(), wt.data(), b, r, out.data() + kPrefix);
          for (int64_t i = 0; i < kPrefix; ++i)
            if (!is_canary(out[i])) {
              fail(tally, "dwconv row k=%ld W=%ld C=%ld: wrote before the row", long(k), long(W),
                   long(C));
              break;
            }
          const int64_t bad = dwconv_compare(out.data() + kPrefix, want.data(), nullptr,
                                             mag.data(), n, k, 2.0, &tally.dwconv_worst);
          if (bad >= 0)
            fail(tally, "dwconv row k=%ld W=%ld C=%ld pattern=%ld bias=%d res=%d: out[%ld] = "
                 "%.9g, scalar %.9g", long(k), long(W), long(C), long(pattern), int(has_bias),
                 int(has_res), long(bad), out[kPrefix + bad], want[bad]);
        }
      }
}

struct DwShape {
  int64_t B, H, W, C, k;
  bool bias, residual;
};

// The driver on one map with table uk; x, wt, bias and out end at guard pages.
std::vector<float> run_dwconv(const DUK& uk, const DwShape& s, const std::vector<float>& x,
                              const std::vector<float>& wt, const std::vector<float>& bias,
                              bool one_by_one) {
  Guarded gx(int64_t(x.size())), gw(int64_t(wt.size())), gb(s.C), out(s.B * s.H * s.W * s.C);
  std::copy(x.begin(), x.end(), gx.data());
  std::copy(wt.begin(), wt.end(), gw.data());
  std::copy(bias.begin(), bias.end(), gb.data());
  out.fill(canary());
  DwconvArgs<float> a{};
  a.B = s.B; a.C = s.C; a.H = s.H; a.W = s.W; a.k = s.k;
  a.x = gx.data(); a.wt = gw.data(); a.bias = s.bias ? gb.data() : nullptr;
  a.residual = s.residual;
  a.out = out.data();
  edgevit::cpu::dwconv_forward<float>(a, uk, one_by_one ? one_by_one_for : serial_for);
  return std::vector<float>(out.data(), out.data() + out.size());
}

void test_dwconv_forward(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const DwShape shapes[] = {
      {1, 1, 1, 1, 1, true, false},     {1, 2, 3, 17, 7, true, true},
      {3, 5, 4, 33, 5, false, true},    {2, 7, 7, 288, 5, true, true},
      {1, 14, 14, 240, 3, true, false}, {1, 3, 9, 15, 7, false, false},
      {2, 28, 28, 72, 3, true, true},   {1, 56, 56, 36, 3, true, true},
      {1, 6, 1, 31, 3, true, true},     {2, 9, 11, 40, 1, true, true},
  };
  const DUK& ref = edgevit::cpu::scalar_dwconv_ukernels<float>();
  for (const DwShape& s : shapes) {
    const int64_t n = s.B * s.H * s.W * s.C;
    std::vector<float> x(n), wt(s.k * s.k * s.C), bias(s.C);
    for (float& v : x) v = normal();
    for (float& v : wt) v = uniform(-1.f, 1.f);
    for (float& v : bias) v = normal();
    // S of every output element, for the tolerance.
    std::vector<double> mag(n), unused(n);
    const int64_t row_size = s.W * s.C;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.H; ++h) {
        std::vector<const float*> rows(s.k);
        for (int64_t kh = 0; kh < s.k; ++kh) {
          const int64_t ih = h + kh - s.k / 2;
          rows[kh] = ih >= 0 && ih < s.H ? &x[(b * s.H + ih) * row_size] : nullptr;
        }
        const int64_t o = (b * s.H + h) * row_size;
        dwconv_row_f64(s.W, s.C, s.k, rows.data(), wt.data(), s.bias ? bias.data() : nullptr,
                       s.residual ? &x[o] : nullptr, &unused[o], &mag[o]);
      }
    CURRENT("scalar dwconv_forward B=%ld H=%ld W=%ld C=%ld k=%ld", long(s.B), long(s.H),
            long(s.W), long(s.C), long(s.k));
    const std::vector<float> want = run_dwconv(ref, s, x, wt, bias, false);
    for (size_t t = 0; t < isas.size(); ++t) {
      Tally& tally = tallies[t];
      ++tally.cases;
      const DUK& uk = dwconv_table(*isas[t]);
      CURRENT("%s dwconv_forward B=%ld H=%ld W=%ld C=%ld k=%ld", uk.name, long(s.B), long(s.H),
              long(s.W), long(s.C), long(s.k));
      const std::vector<float> got = run_dwconv(uk, s, x, wt, bias, false);
      const std::vector<float> got1 = run_dwconv(uk, s, x, wt, bias, true);
      const int64_t bad = dwconv_compare(got.data(), want.data(), nullptr, mag.data(), n, s.k,
                                         2.0, &tally.dwconv_worst);
      if (bad >= 0)
        fail(tally, "dwconv_forward B=%ld H=%ld W=%ld C=%ld k=%ld: out[%ld] = %.9g, scalar %.9g",
             long(s.B), long(s.H), long(s.W), long(s.C), long(s.k), long(bad), got[bad],
             want[bad]);
      if (std::memcmp(got.data(), got1.data(), sizeof(float) * size_t(n)) != 0)
        fail(tally, "dwconv_forward B=%ld H=%ld W=%ld C=%ld k=%ld: differs between a serial and "
             "a one-task-at-a-time ParallelFor", long(s.B), long(s.H), long(s.W), long(s.C),
             long(s.k));
    }
  }
}

// ------------------------------------------------------------------------------------------
// mlp_fused micro-kernels and driver

const MUK* mlp_table(const UK* uk) { return edgevit::cpu::isa_named(uk->name)->mlp; }

// gemm_gelu and gemm_add of each table: bit-exact vs the same table's gemm followed by the
// mlp table's gelu / add (their contract), C written only inside its rows' first N columns
// (canary elsewhere), R read only inside (a guard page right after its last element).
void test_gemm_epilogues(bool quick, const std::vector<const UK*>& isas,
                         std::vector<Tally>& tallies) {
  std::vector<int64_t> Ms, Ns;
  for (int64_t m = 1; m <= 13; ++m) Ms.push_back(m);
  for (int64_t m : {31, 64}) Ms.push_back(m);
  for (int64_t n = 1; n <= 40; ++n) Ns.push_back(n);
  for (int64_t n : {48, 144, 196}) Ns.push_back(n);
  int64_t idx = 0;
  constexpr int64_t kPrefix = 16;
  for (int64_t K : {1, 5, 36, 144})
    for (int64_t M : Ms)
      for (int64_t N : Ns) {
        if (quick && K > 5 && (++idx % 3 != 0)) continue;
        ++idx;
        const int64_t lda = K + idx % 3, ldc = N + (idx % 4 == 1 ? 3 : 0), ldr = N + idx % 2;
        std::vector<float> A(M * lda), Bsrc(K * N), bias(N);
        for (float& v : A) v = uniform(-1.f, 1.f);
        for (float& v : Bsrc) v = uniform(-1.f, 1.f);
        for (float& v : bias) v = uniform(-1.f, 1.f);
        Guarded R((M - 1) * ldr + N);
        for (int64_t i = 0; i < R.size(); ++i) R[i] = normal();
        for (size_t t = 0; t < isas.size(); ++t) {
          const UK& uk = *isas[t];
          const MUK& muk = *mlp_table(&uk);
          Tally& tally = tallies[t];
          std::vector<float> Bp(edgevit::cpu::packed_b_size(K, N, uk.nr));
          edgevit::cpu::pack_b(Bsrc.data(), K, N, N, 1, uk.nr, Bp.data());
          for (int ep = 0; ep < 2; ++ep) {
            ++tally.cases;
            // Expected: gemm, then the element-wise step on each row.
            std::vector<float> want(M * ldc, 0.f);
            uk.gemm(M, N, K, A.data(), lda, Bp.data(), bias.data(), want.data(), ldc);
            for (int64_t m = 0; m < M; ++m) {
              if (ep == 0) muk.gelu(N, want.data() + m * ldc);
              if (ep == 1) muk.add(N, R.data() + m * ldr, want.data() + m * ldc);
            }
            Guarded Cbuf(kPrefix + (M - 1) * ldc + N);
            Cbuf.fill(canary());
            float* C = Cbuf.data() + kPrefix;
            const char* what = ep == 0 ? "gemm_gelu" : "gemm_add";
            CURRENT("%s %s M=%ld N=%ld K=%ld lda=%ld ldc=%ld ldr=%ld", uk.name, what, long(M),
                    long(N), long(K), long(lda), long(ldc), long(ldr));
            if (ep == 0) uk.gemm_gelu(M, N, K, A.data(), lda, Bp.data(), bias.data(), C, ldc);
            if (ep == 1)
              uk.gemm_add(M, N, K, A.data(), lda, Bp.data(), bias.data(), R.data(), ldr, C, ldc);
            for (int64_t i = 0; i < Cbuf.size(); ++i) {
              const int64_t off = i - kPrefix;
              const bool inside = off >= 0 && off % ldc < N;
              const bool ok = inside ? std::memcmp(&Cbuf[i], &want[off], 4) == 0
                                     : is_canary(Cbuf[i]);
              if (!ok) {
                fail(tally, "%s M=%ld N=%ld K=%ld lda=%ld ldc=%ld ldr=%ld: %s at offset %ld",
                     what, long(M), long(N), long(K), long(lda), long(ldc), long(ldr),
                     inside ? "differs from gemm + the element-wise step" : "wrote outside C",
                     long(off));
                break;
              }
            }
          }
          if (!uk.gemm_scatter) continue;
          // gemm_scatter: the same bits as gemm into a scratch, then scale_rows; each non-null
          // destination row is its own guarded row (canary prefix, N floats ending at a guard
          // page); null rows (about a third) are skipped.
          ++tally.cases;
          std::vector<float> acc(M * N), scale(M);
          Guarded e(N);  // read only at columns < N: a guard page follows it
          for (float& v : scale) v = uniform(0.2f, 5.f);
          for (int64_t c = 0; c < N; ++c) e[c] = normal();
          uk.gemm(M, N, K, A.data(), lda, Bp.data(), bias.data(), acc.data(), N);
          std::vector<float> want(M * N, 0.f);
          std::vector<float*> want_dst(M), dst(M);
          GuardedRows out(M, kPrefix + N);
          for (int64_t m = 0; m < M; ++m) {
            const bool null_row = (m + N + idx) % 3 == 2;
            want_dst[m] = null_row ? nullptr : &want[m * N];
            std::fill(out.row(m), out.row(m) + kPrefix + N, canary());
            dst[m] = null_row ? nullptr : out.row(m) + kPrefix;
          }
          uk.scale_rows(M, N, acc.data(), scale.data(), e.data(), want_dst.data());
          CURRENT("%s gemm_scatter M=%ld N=%ld K=%ld lda=%ld", uk.name, long(M), long(N),
                  long(K), long(lda));
          uk.gemm_scatter(M, N, K, A.data(), lda, Bp.data(), bias.data(), scale.data(),
                          e.data(), dst.data());
          for (int64_t m = 0; m < M; ++m) {
            int64_t bad = -1;
            for (int64_t i = 0; i < kPrefix + N && bad < 0; ++i) {
              const int64_t c = i - kPrefix;
              const bool inside = c >= 0 && dst[m];
              if (inside ? std::memcmp(&out.row(m)[i], &want[m * N + c], 4) != 0
                         : !is_canary(out.row(m)[i]))
                bad = i;
            }
            if (bad >= 0) {
              fail(tally, "gemm_scatter M=%ld N=%ld K=%ld lda=%ld: row %ld%s, column %ld: %s",
                   long(M), long(N), long(K), long(lda), long(m), dst[m] ? "" : " (null)",
                   long(bad - kPrefix),
                   bad >= kPrefix && dst[m] ? "differs from gemm + scale_rows"
                                            : "written outside its destination");
              break;
            }
          }
        }
      }
}

void test_mlp_ukernels(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const MUK& ref = edgevit::cpu::scalar_mlp_ukernels<float>();
  const float specials[] = {0.f,  -0.f, 1e-30f, -1e-30f, INFINITY, -INFINITY,
                           NAN, 3.9f, -3.9f,  12.f,    -12.f};
  constexpr int64_t kSpecials = int64_t(sizeof specials / sizeof specials[0]);
  std::vector<int64_t> ns;
  for (int64_t n = 1; n <= 80; ++n) ns.push_back(n);
  ns.push_back(1000);
  for (int64_t n : ns) {
    Guarded in(n);
    for (int64_t i = 0; i < n; ++i)
      in[i] = i < kSpecials && n >= kSpecials ? specials[i] : uniform(-12.f, 12.f);
    std::vector<float> want(in.data(), in.data() + n);
    ref.gelu(n, want.data());
    for (size_t t = 0; t < isas.size(); ++t) {
      Tally& tally = tallies[t];
      ++tally.cases;
      Guarded h(n);
      std::copy(in.data(), in.data() + n, h.data());
      CURRENT("%s gelu n=%ld", isas[t]->name, long(n));
      mlp_table(isas[t])->gelu(n, h.data());
      for (int64_t i = 0; i < n; ++i) {
        const double x = in[i], w = want[i], got = h[i];
        if (std::isnan(w) != std::isnan(got)) {
          fail(tally, "gelu n=%ld: gelu(%g) = %g, scalar %g", long(n), x, got, w);
          break;
        }
        if (std::isnan(w) || std::isinf(x)) continue;
        const double tol = 4e-7 * (1.0 + std::fabs(x)), err = std::fabs(got - w);
        tally.gelu_worst = std::max(tally.gelu_worst, err / tol);
        if (!(err <= tol)) {
          fail(tally, "gelu n=%ld: gelu(%.9g) = %.9g, scalar %.9g", long(n), x, got, w);
          break;
        }
      }
    }
    // add: bit-exact
    Guarded src(n);
    for (int64_t i = 0; i < n; ++i) src[i] = normal();
    std::vector<float> sum(in.data(), in.data() + n);
    ref.add(n, src.data(), sum.data());
    for (size_t t = 0; t < isas.size(); ++t) {
      ++tallies[t].cases;
      Guarded dst(n);
      std::copy(in.data(), in.data() + n, dst.data());
      CURRENT("%s add n=%ld", isas[t]->name, long(n));
      mlp_table(isas[t])->add(n, src.data(), dst.data());
      if (std::memcmp(dst.data(), sum.data(), size_t(n) * 4) != 0)
        fail(tallies[t], "add n=%ld: differs from scalar", long(n));
    }
  }
  std::vector<int64_t> Cs;
  for (int64_t C = 1; C <= 70; ++C) Cs.push_back(C);
  for (int64_t C : {96, 144, 240, 384}) Cs.push_back(C);
  for (int64_t M : {1, 2, 3, 4, 5, 7, 9})  // whole groups of 4 rows (AVX-512) and the rest
    for (int64_t C : Cs)
      for (int large_mean = 0; large_mean < 2; ++large_mean) {
        const int64_t ldx = C + (M + C) % 3, ldo = C + (C % 2) * 5;
        Guarded x(M * ldx), gw(C), gb(C);
        for (int64_t i = 0; i < M * ldx; ++i) x[i] = (large_mean ? 1e4f : 0.f) + 2.f * normal();
        for (int64_t c = 0; c < C; ++c) {
          gw[c] = uniform(0.5f, 1.5f);
          gb[c] = normal();
        }
        const bool affine = (M + C) % 2 == 1;
        const float* w = affine ? gw.data() : nullptr;
        const float* b = affine ? gb.data() : nullptr;
        std::vector<float> want(M * ldo, 0.f);
        ref.layernorm_rows(M, C, x.data(), ldx, 1e-6f, w, b, want.data(), ldo);
        for (size_t t = 0; t < isas.size(); ++t) {
          Tally& tally = tallies[t];
          ++tally.cases;
          Guarded out(M * ldo);
          out.fill(canary());
          CURRENT("%s layernorm_rows M=%ld C=%ld", isas[t]->name, long(M), long(C));
          mlp_table(isas[t])->layernorm_rows(M, C, x.data(), ldx, 1e-6f, w, b, out.data(), ldo);
          bool bad = false;
          for (int64_t m = 0; m < M && !bad; ++m)
            for (int64_t c = 0; c < ldo && !bad; ++c) {
              const float got = out[m * ldo + c];
              if (c >= C) {
                if (!is_canary(got)) {
                  fail(tally, "layernorm_rows M=%ld C=%ld: wrote the gap at [%ld][%ld]",
                       long(M), long(C), long(m), long(c));
                  bad = true;
                }
                continue;
              }
              const double w = want[m * ldo + c], err = std::fabs(double(got) - w);
              const double tol = 1e-5 * (1.0 + std::fabs(w));
              tally.layernorm_worst = std::max(tally.layernorm_worst, err / tol);
              if (!(err <= tol)) {
                fail(tally, "layernorm_rows M=%ld C=%ld large_mean=%d: [%ld][%ld] = %.9g, "
                     "scalar %.9g", long(M), long(C), large_mean, long(m), long(c), got, w);
                bad = true;
              }
            }
        }
      }
}

// The whole output of a driver run with one table vs the scalar table's:
// |o - o_ref| <= 1e-4 (1 + |o_ref|); the worst err/tol goes to tally.mlp_worst.
void compare_driver(Tally& tally, const char* what, const std::vector<float>& got,
                    const std::vector<float>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double tol = 1e-4 * (1.0 + std::fabs(double(want[i])));
    tally.mlp_worst = std::max(tally.mlp_worst, err / tol);
    if (!(err <= tol)) {
      fail(tally, "%s: out[%ld] = %.9g, scalar %.9g", what, long(i), got[i], want[i]);
      return;
    }
  }
}

struct MlpShape {
  int64_t M, C, hidden;
  bool layer_norm, residual;
};

void test_mlp_driver(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const MlpShape shapes[] = {{1, 1, 1, true, true},     {33, 5, 7, true, false},
                             {100, 36, 144, true, true}, {64, 48, 192, false, true},
                             {31, 17, 40, false, false}, {49, 72, 288, true, true}};
  for (const MlpShape& s : shapes)
    for (int one_by_one = 0; one_by_one < 2; ++one_by_one) {
      std::vector<float> x(s.M * s.C), w1(s.hidden * s.C), b1(s.hidden), w2(s.C * s.hidden),
          b2(s.C), nw(s.C), nb(s.C);
      for (float& v : x) v = 1.5f * normal();
      for (float& v : w1) v = normal() / std::sqrt(float(s.C));
      for (float& v : w2) v = normal() / std::sqrt(float(s.hidden));
      for (std::vector<float>* v : {&b1, &b2, &nb})
        for (float& e : *v) e = 0.3f * normal();
      for (float& v : nw) v = uniform(0.5f, 1.5f);
      edgevit::cpu::MlpArgs<float> a{};
      a.M = s.M; a.C = s.C; a.hidden = s.hidden; a.layer_norm = s.layer_norm;
      a.residual = s.residual; a.eps = 1e-6f;
      a.norm_w = nw.data(); a.norm_b = nb.data();
      a.fc1_w = w1.data(); a.fc1_b = b1.data(); a.fc2_w = w2.data(); a.fc2_b = b2.data();
      a.x = x.data();
      const edgevit::cpu::ParallelFor pf = one_by_one ? one_by_one_for : serial_for;
      auto run = [&](const UK& uk, std::vector<float>& out) {
        std::vector<float> weights(edgevit::cpu::mlp_weights_size(s.C, s.hidden, uk.nr));
        out.assign(s.M * s.C, 0.f);
        a.out = out.data();
        edgevit::cpu::mlp_prepare_weights<float>(a, uk, weights.data(), pf);
        edgevit::cpu::mlp_forward<float>(a, uk, *mlp_table(&uk), weights.data(), pf);
      };
      std::vector<float> want, got;
      run(edgevit::cpu::scalar_ukernels<float>(), want);
      for (size_t t = 0; t < isas.size(); ++t) {
        Tally& tally = tallies[t];
        ++tally.cases;
        CURRENT("%s mlp_forward M=%ld C=%ld hidden=%ld", isas[t]->name, long(s.M), long(s.C),
                long(s.hidden));
        run(*isas[t], got);
        compare_driver(tally, g_current, got, want);
      }
    }
}


void test_linear_driver(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const int64_t shapes[][3] = {{1, 1, 1}, {63, 5, 17}, {65, 33, 7}, {130, 36, 36}, {70, 144, 40}};
  for (const auto& sh : shapes)
    for (int with_residual = 0; with_residual < 2; ++with_residual) {
      const int64_t M = sh[0], K = sh[1], N = sh[2];
      std::vector<float> x(M * K), w(N * K), b(N), res(M * N);
      for (float& v : x) v = normal();
      for (float& v : w) v = normal() / std::sqrt(float(K));
      for (float& v : b) v = normal();
      for (float& v : res) v = normal();
      edgevit::cpu::LinearArgs<float> a{};
      a.M = M; a.K = K; a.N = N; a.weight = w.data(); a.bias = b.data(); a.x = x.data();
      a.residual = with_residual ? res.data() : nullptr;
      auto run = [&](const UK& uk, std::vector<float>& out) {
        std::vector<float> weights(edgevit::cpu::linear_weights_size(K, N, uk.nr));
        out.assign(M * N, 0.f);
        a.out = out.data();
        edgevit::cpu::linear_prepare_weights<float>(a, uk, weights.data());
        edgevit::cpu::linear_forward<float>(a, uk, weights.data(), one_by_one_for);
      };
      std::vector<float> want, got;
      run(edgevit::cpu::scalar_ukernels<float>(), want);
      for (size_t t = 0; t < isas.size(); ++t) {
        Tally& tally = tallies[t];
        ++tally.cases;
        CURRENT("%s linear_forward M=%ld K=%ld N=%ld", isas[t]->name, long(M), long(K), long(N));
        run(*isas[t], got);
        compare_driver(tally, g_current, got, want);
      }
    }
}


void test_patch_embed_driver(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  struct Shape { int64_t B, Cin, H, W, Cout, p; bool channels_last, layer_norm; };
  const Shape shapes[] = {{1, 3, 32, 32, 36, 4, false, true}, {2, 36, 12, 10, 72, 2, true, true},
                          {1, 5, 9, 11, 17, 3, false, false}, {1, 16, 6, 7, 40, 1, true, true},
                          {2, 1, 2, 2, 1, 2, true, true}};
  for (const Shape& s : shapes) {
    const int64_t K = s.p * s.p * s.Cin, M = s.B * (s.H / s.p) * (s.W / s.p);
    std::vector<float> x(s.B * s.Cin * s.H * s.W), w(s.Cout * K), b(s.Cout), nw(s.Cout), nb(s.Cout);
    for (float& v : x) v = normal();
    for (float& v : w) v = normal() / std::sqrt(float(K));
    for (float& v : b) v = 0.3f * normal();
    for (float& v : nw) v = uniform(0.5f, 1.5f);
    for (float& v : nb) v = 0.3f * normal();
    edgevit::cpu::PatchEmbedArgs<float> a{};
    a.B = s.B; a.Cin = s.Cin; a.H = s.H; a.W = s.W; a.Cout = s.Cout; a.p = s.p;
    a.x = x.data();
    if (s.channels_last) {
      a.x_sc = 1; a.x_sw = s.Cin; a.x_sh = s.W * s.Cin; a.x_sb = s.H * s.W * s.Cin;
    } else {
      a.x_sw = 1; a.x_sh = s.W; a.x_sc = s.H * s.W; a.x_sb = s.Cin * s.H * s.W;
    }
    a.weight = w.data(); a.bias = b.data();  // (the layout of w does not matter here)
    a.layer_norm = s.layer_norm; a.norm_w = nw.data(); a.norm_b = nb.data(); a.eps = 1e-6f;
    auto run = [&](const UK& uk, std::vector<float>& out) {
      std::vector<float> weights(edgevit::cpu::patch_embed_weights_size(s.Cin, s.Cout, s.p, uk.nr));
      out.assign(M * s.Cout, 0.f);
      a.out = out.data();
      edgevit::cpu::patch_embed_prepare_weights<float>(a, uk, weights.data());
      edgevit::cpu::patch_embed_forward<float>(a, uk, *mlp_table(&uk), weights.data(),
                                               one_by_one_for);
    };
    std::vector<float> want, got;
    run(edgevit::cpu::scalar_ukernels<float>(), want);
    for (size_t t = 0; t < isas.size(); ++t) {
      Tally& tally = tallies[t];
      ++tally.cases;
      CURRENT("%s patch_embed_forward Cin=%ld Cout=%ld p=%ld", isas[t]->name, long(s.Cin),
              long(s.Cout), long(s.p));
      run(*isas[t], got);
      compare_driver(tally, g_current, got, want);
    }
  }
}


// ------------------------------------------------------------------------------------------
// bench

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Seconds per call of run(): calibrated to batches of >= 2 ms (short, so that some batches see
// no preemption on a shared machine), best of `trials` batches.
template <typename F>
double best_seconds(F&& run, int trials) {
  int64_t reps = 1;
  for (;;) {
    const double t0 = now_s();
    for (int64_t i = 0; i < reps; ++i) run();
    if (now_s() - t0 >= 0.002) break;
    reps *= 2;
  }
  double best = 1e30;
  for (int trial = 0; trial < trials; ++trial) {
    const double t0 = now_s();
    for (int64_t i = 0; i < reps; ++i) run();
    best = std::min(best, (now_s() - t0) / double(reps));
  }
  return best;
}

void bench_gemm(const std::vector<const UK*>& isas) {
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{64, 36, 36},   {64, 144, 144}, {49, 1152, 384}, {64, 196, 36},
                          {64, 36, 196},  {64, 108, 36},  {64, 48, 48},    {64, 864, 288},
                          {64, 288, 288}, {49, 49, 48},   {49, 48, 49}};
  std::printf("gemm GFLOP/s (2*M*N*K useful flops; best of 31 runs of >= 2 ms; one thread)\n");
  std::printf("%-16s", "M x N x K");
  for (const UK* uk : isas) std::printf("%10s", uk->name);
  std::printf("\n");
  for (const Shape& s : shapes) {
    std::printf("%4ld x%5ld x%4ld ", long(s.M), long(s.N), long(s.K));
    for (const UK* uk : isas) {
      std::vector<float> A(s.M * s.K), Bsrc(s.K * s.N), bias(s.N), C(s.M * s.N);
      for (float& v : A) v = uniform(-1.f, 1.f);
      for (float& v : Bsrc) v = uniform(-1.f, 1.f);
      for (float& v : bias) v = uniform(-1.f, 1.f);
      std::vector<float> Bp(edgevit::cpu::packed_b_size(s.K, s.N, uk->nr) + 64);
      float* Bal = Bp.data();
      while (reinterpret_cast<uintptr_t>(Bal) % 64) ++Bal;  // as at::empty would
      edgevit::cpu::pack_b(Bsrc.data(), s.K, s.N, s.N, 1, uk->nr, Bal);
      const double flops = 2.0 * s.M * s.N * s.K;
      const double best = best_seconds(
          [&] { uk->gemm(s.M, s.N, s.K, A.data(), s.K, Bal, bias.data(), C.data(), s.N); }, 31);
      std::printf("%10.1f", flops / best * 1e-9);
    }
    std::printf("\n");
  }
}

void bench_pack(const std::vector<const UK*>& isas) {
  struct Shape { int64_t M, N, K; };
  // Packing W^T (phase 0 of the driver, lgl_prepare_weights): pack_weight_t vs the generic
  // pack_b.
  std::printf("pack W^T [N x K], ns per element: pack_weight_t (pack_b)\n");
  const Shape packs[] = {{0, 108, 36}, {0, 864, 288}, {0, 1152, 384}};
  for (const Shape& s : packs) {
    std::printf("%4s  %5ld x%4ld ", "", long(s.N), long(s.K));
    std::vector<float> w(s.N * s.K);
    for (float& v : w) v = uniform(-1.f, 1.f);
    for (const UK* uk : isas) {
      std::vector<float> dst(edgevit::cpu::packed_b_size(s.K, s.N, uk->nr));
      const int64_t P = (s.N + uk->nr - 1) / uk->nr;
      double t_pack[2];
      for (int which = 0; which < 2; ++which) {
        auto run = [&] {
          if (which == 0 && uk->pack_weight_t)
            uk->pack_weight_t(w.data(), s.N, s.K, s.K, 0, P, dst.data());
          else
            edgevit::cpu::pack_b(w.data(), s.K, s.N, 1, s.K, uk->nr, dst.data());
        };
        const double best = best_seconds(run, 15);
        t_pack[which] = best * 1e9 / double(s.N * s.K);
      }
      std::printf("  %4.2f (%4.2f)", t_pack[0], t_pack[1]);
    }
    std::printf("\n");
  }
}

void bench_prop_rstd(const std::vector<const UK*>& isas) {
  // LayerNorm statistics of the propagated tokens (phase 3 of the driver, r > 1): one call per
  // block of 64 sampled tokens, as the driver makes it (y rows contiguous, ldy = C), R offsets
  // each; time per (token, offset) pair.
  std::printf("prop_rstd, ns per token-offset (M = 64 sampled tokens (a driver task) x R offsets per call)\n");
  for (int64_t R : {16, 4})
    for (int64_t C : {36, 48, 72, 96, 144, 240}) {
      constexpr int64_t kM = 64;
      std::printf("  R = %2ld  C = %4ld  ", long(R), long(C));
      std::vector<float> y(kM * C), pwt(C * R), pb(C), rstd(kM * R);
      for (float& v : y) v = normal();
      for (float& v : pwt) v = uniform(-1.f, 1.f);
      for (float& v : pb) v = 0.1f * normal();
      for (const UK* uk : isas) {
        const double best = best_seconds(
            [&] {
              uk->prop_rstd(kM, R, C, y.data(), C, pwt.data(), pb.data(), 1e-5f, rstd.data());
            },
            31);
        std::printf("  %s %6.2f", uk->name, best * 1e9 / double(kM * R));
      }
      std::printf("\n");
    }
}

void bench_lgl_driver(const std::vector<const UK*>& isas) {
  // The driver on the 8 EdgeViT stage shapes (B = 1), one thread (serial ParallelFor): phase 0
  // (lgl_prepare_weights, cacheable) and phases 1-3 (lgl_fused_forward).
  std::printf("lgl_prepare_weights (lgl_fused_forward), microseconds; B = 1, one thread\n");
  const OpShape stages[] = {
      {1, 56, 56, 36, 1, 4, true, false},  {1, 28, 28, 72, 2, 2, true, false},
      {1, 14, 14, 144, 4, 2, true, false}, {1, 7, 7, 288, 8, 1, true, false},
      {1, 56, 56, 48, 1, 4, true, false},  {1, 28, 28, 96, 2, 2, true, false},
      {1, 14, 14, 240, 5, 2, true, false}, {1, 7, 7, 384, 8, 1, true, false},
  };
  for (const OpShape& s : stages) {
    std::printf("  %2ldx%2ld C=%3ld h=%ld r=%ld", long(s.H), long(s.W), long(s.C), long(s.heads),
                long(s.r));
    const OpData d(s);
    std::vector<float> out(s.B * s.H * s.W * s.C);
    const LglArgs<float> a = op_args(s, d, out.data());
    for (const UK* uk : isas) {
      std::vector<float> weights(edgevit::cpu::lgl_weights_size(s.C, s.r, uk->nr)),
          ws(edgevit::cpu::lgl_workspace_size(s.B, s.H, s.W, s.C, s.heads, s.r, uk->nr));
      const double t_prep = best_seconds(
          [&] { edgevit::cpu::lgl_prepare_weights<float>(a, *uk, weights.data(), serial_for); },
          15);
      const double t_fwd = best_seconds(
          [&] {
            edgevit::cpu::lgl_fused_forward<float>(a, *uk, weights.data(), ws.data(),
                                                   serial_for);
          },
          15);
      std::printf("  %s %7.1f (%7.1f)", uk->name, t_prep * 1e6, t_fwd * 1e6);
    }
    std::printf("\n");
  }
}

void bench_mlp_row_ops(const std::vector<const UK*>& isas) {
  // The mlp_fused row ops alone: gelu and layernorm_rows.
  {
    std::vector<float> h(144 * 32);
    std::printf("gelu, ns per element (n = %ld):", long(h.size()));
    for (const UK* uk : isas) {
      for (float& v : h) v = uniform(0.5f, 4.f);  // stays in range when applied repeatedly
      const MUK& muk = *mlp_table(uk);
      const double t = best_seconds([&] { muk.gelu(int64_t(h.size()), h.data()); }, 31);
      std::printf("  %s %.3f", uk->name, t * 1e9 / double(h.size()));
    }
    std::printf("\n");
  }
  std::printf("layernorm_rows with affine, ns per row of C (3136 rows):\n");
  for (int64_t C : {36, 72, 144, 288}) {
    std::vector<float> x(3136 * C), o(3136 * C), w(C, 1.1f), b(C, 0.1f);
    for (float& v : x) v = normal();
    std::printf("  C=%3ld", long(C));
    for (const UK* uk : isas) {
      const MUK& muk = *mlp_table(uk);
      const double t = best_seconds(
          [&] { muk.layernorm_rows(3136, C, x.data(), C, 1e-6f, w.data(), b.data(), o.data(), C); },
          15);
      std::printf("  %s %6.1f", uk->name, t * 1e9 / 3136);
    }
    std::printf("\n");
  }
}

void bench_mlp_driver(const std::vector<const UK*>& isas) {
  // mlp_fused: the blocks' MLPs (LayerNorm, fc1, GELU, fc2, residual; hidden = 4C), weights
  // prepared once; microseconds and GFLOP/s of the two products (4 M C hidden flops).
  std::printf("mlp_forward (LayerNorm + residual), us (GFLOP/s), one thread\n");
  const int64_t mlp_shapes[][2] = {{3136, 36}, {784, 72}, {196, 144}, {49, 288},
                                   {3136, 48}, {784, 96}, {196, 240}, {49, 384}};
  for (const auto& ms : mlp_shapes) {
    const int64_t M = ms[0], C = ms[1], hidden = 4 * C;
    std::vector<float> x(M * C), out(M * C), w1(hidden * C), b1(hidden), w2(C * hidden), b2(C),
        nw(C, 1.f), nb(C, 0.f);
    for (float& v : x) v = normal();
    for (float& v : w1) v = 0.1f * normal();
    for (float& v : w2) v = 0.1f * normal();
    edgevit::cpu::MlpArgs<float> a{};
    a.M = M; a.C = C; a.hidden = hidden; a.layer_norm = true; a.residual = true; a.eps = 1e-6f;
    a.norm_w = nw.data(); a.norm_b = nb.data(); a.fc1_w = w1.data(); a.fc1_b = b1.data();
    a.fc2_w = w2.data(); a.fc2_b = b2.data(); a.x = x.data(); a.out = out.data();
    std::printf("  M=%4ld C=%3ld", long(M), long(C));
    for (const UK* uk : isas) {
      std::vector<float> weights(edgevit::cpu::mlp_weights_size(C, hidden, uk->nr));
      edgevit::cpu::mlp_prepare_weights<float>(a, *uk, weights.data(), serial_for);
      const MUK& muk = *mlp_table(uk);
      const double t = best_seconds(
          [&] { edgevit::cpu::mlp_forward<float>(a, *uk, muk, weights.data(), serial_for); }, 15);
      std::printf("  %s %7.1f (%5.1f)", uk->name, t * 1e6, 4.0 * M * C * hidden / t * 1e-9);
    }
    std::printf("\n");
  }
}

void bench_dwconv(const std::vector<const UK*>& isas) {
  // dwconv_forward on the EdgeViT local-aggregation / positional-encoding shapes (B = 1, bias,
  // residual), one thread.
  std::printf("dwconv_forward, microseconds; B = 1, bias + residual, one thread\n");
  const int64_t dw_shapes[][2] = {{36, 56}, {72, 28}, {144, 14}, {288, 7},
                                  {48, 56}, {96, 28}, {240, 14}, {384, 7}};
  for (const auto& cs : dw_shapes)
    for (int64_t k : {3, 5}) {
      const DwShape s{1, cs[1], cs[1], cs[0], k, true, true};
      std::printf("  %2ldx%2ld C=%3ld k=%ld", long(s.H), long(s.W), long(s.C), long(k));
      std::vector<float> x(s.H * s.W * s.C), wt(k * k * s.C), bias(s.C), out(x.size());
      for (float& v : x) v = normal();
      for (float& v : wt) v = uniform(-1.f, 1.f);
      for (float& v : bias) v = normal();
      DwconvArgs<float> a{};
      a.B = 1; a.C = s.C; a.H = s.H; a.W = s.W; a.k = k;
      a.x = x.data(); a.wt = wt.data(); a.bias = bias.data(); a.residual = true;
      a.out = out.data();
      for (const UK* uk : isas) {
        const DUK& duk = dwconv_table(*uk);
        const double t = best_seconds(
            [&] { edgevit::cpu::dwconv_forward<float>(a, duk, serial_for); }, 15);
        std::printf("  %s %7.1f", duk.name, t * 1e6);
      }
      std::printf("\n");
    }
}

// Per ISA: gemm GFLOP/s, packing and prop_rstd costs, the lgl, mlp and dwconv drivers on the
// stage shapes (make -C tests/native bench).
void bench(const std::vector<const UK*>& isas) {
  bench_gemm(isas);
  bench_pack(isas);
  bench_prop_rstd(isas);
  bench_lgl_driver(isas);
  bench_mlp_row_ops(isas);
  bench_mlp_driver(isas);
  bench_dwconv(isas);
}

// ------------------------------------------------------------------------------------------
// The kernels' thread pool (cpu/thread_pool.h): phases in quick succession whose chunk counts
// alternate between small and large, so that a worker still leaving a small phase meets the
// fields of a large one (the race the pool's generation close prevents), with more threads than
// cores so that threads are preempted anywhere. Every task of every phase must run exactly once,
// and all of them before pool_parallel_for returns. Without the close the race is rare: on a
// 2-vCPU VM this test caught it in 1 of 4 runs (a 2M-phase loop of the same kind found 2-3
// double runs per run quiet, 34-82 with other jobs on the machine; the suite once crashed in a
// pool worker). A stress test, then, not a proof.

int64_t g_pool_phases = 0, g_pool_failures = 0;

void test_pool(bool quick) {
  CURRENT("thread pool");
  constexpr int64_t kMaxN = 64;
  static std::atomic<int64_t> mark[kMaxN];
  for (auto& m : mark) m.store(-1);
  const int64_t sizes[] = {2, 37, 3, 16, 1, 64, 5, 9};
  const int64_t phases = quick ? 20000 : 200000;
  // A thread spinning beside the pool, like another process on a busy core: preemptions then
  // land inside the pool's hand-offs far more often.
  std::atomic<bool> stop{false};
  std::thread spinner([&] {
    while (!stop.load(std::memory_order_relaxed)) {
    }
  });
  for (int threads : {2, 3, 4, 6, 8}) {
    for (int64_t ph = 0; ph < phases && g_pool_failures < kMaxReports; ++ph) {
      const int64_t id = (threads << 24) + ph, n = sizes[ph % 8];
      std::atomic<int64_t> twice{0};
      edgevit::cpu::pool_parallel_for(n, 1, threads, [&, id](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          if (mark[i].exchange(id) == id) twice.fetch_add(1);
          for (volatile int k = 0; k < 50; ++k) {
          }  // a task of some length, so that the workers take part
        }
      });
      ++g_pool_phases;
      int64_t missing = 0;
      for (int64_t i = 0; i < n; ++i) missing += mark[i].load() != id;
      if (twice.load() || missing) {
        ++g_pool_failures;
        std::printf("FAIL [pool] %d threads, phase %ld of %ld tasks: %ld ran twice, %ld had not "
                    "run at return\n", threads, long(ph), long(n), long(twice.load()), long(missing));
      }
    }
  }
  stop.store(true);
  spinner.join();
  std::printf("  pool: %ld phases, %ld failed\n", long(g_pool_phases), long(g_pool_failures));
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, do_bench = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--bench") == 0) do_bench = true;
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--bench]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGSEGV, on_fault);
  signal(SIGBUS, on_fault);
  std::printf("supported ISAs: %s\n", edgevit::cpu::supported_isas().c_str());
  std::vector<const UK*> isas;
  bool missing = false;
  for (const char* name : {"neon", "avx2", "avx512"}) {
    std::string err;
    const edgevit::cpu::IsaConfig* isa = edgevit::cpu::select_isa(name, &err);
    const UK* uk = isa ? isa->lgl : nullptr;
    if (uk) {
      isas.push_back(uk);
    } else {
      std::printf("%s: skipped (%s)\n", name, err.c_str());
    }
  }
  // The Makefile compiles every ISA file with its flags: a null table for this architecture
  // means the SIMD code was compiled out by mistake.
#if defined(__x86_64__)
  missing = !edgevit::cpu::avx2_ukernels() || !edgevit::cpu::avx512_ukernels();
#elif defined(__aarch64__)
  missing = !edgevit::cpu::neon_ukernels();
#endif
  if (missing) {
    std::printf("FAIL: an ISA variant of this architecture is compiled to a null table\n");
    return 1;
  }
  if (do_bench) {
    std::vector<const UK*> all = isas;
    all.insert(all.begin(), &edgevit::cpu::scalar_ukernels<float>());
    bench(all);
    return 0;
  }
  if (isas.empty()) {
    std::printf("no SIMD variant runs on this machine: nothing to compare\n");
    return 0;
  }
  std::vector<Tally> tallies;
  for (const UK* uk : isas) tallies.push_back(Tally{uk->name});
  const double t0 = now_s();
  test_gemm(quick, isas, tallies);
  test_pack(isas, tallies);
  std::vector<double> softmax_rel(isas.size(), 0.0);
  test_softmax(isas, tallies, softmax_rel.data());
  for (size_t t = 0; t < isas.size(); ++t) {
    Tally& tl = tallies[t];
    ++tl.cases;
    tl.exp_ulp = exp_ulp_error(*isas[t]);
    if (!(tl.exp_ulp <= kMaxExpUlp)) fail(tl, "exp error %.2f ulp > %.1f", tl.exp_ulp, kMaxExpUlp);
  }
  std::printf("  scalar exp error: %.2f ulp\n",
              exp_ulp_error(edgevit::cpu::scalar_ukernels<float>()));
  test_prop_rstd(isas, tallies);
  test_scale_rows(isas, tallies);
  test_fused(isas, tallies);
  test_mlp_ukernels(isas, tallies);
  test_gemm_epilogues(quick, isas, tallies);
  test_mlp_driver(isas, tallies);
  test_patch_embed_driver(isas, tallies);
  test_linear_driver(isas, tallies);
  test_dwconv_rows(isas, tallies);
  test_dwconv_forward(isas, tallies);
  test_pool(quick);
  bool ok = g_dwconv_scalar_failures == 0 && g_gemm_scalar_failures == 0 && g_pool_failures == 0;
  std::printf("  scalar gemm vs float64: %ld of %ld cases failed, worst err/tol %.3f\n",
              long(g_gemm_scalar_failures), long(g_gemm_scalar_cases), g_gemm_scalar_worst);
  std::printf("  scalar dwconv vs float64: %ld of %ld cases failed, worst err/tol %.3f\n",
              long(g_dwconv_scalar_failures), long(g_dwconv_scalar_cases), g_dwconv_scalar_worst);
  for (size_t t = 0; t < isas.size(); ++t) {
    const Tally& tl = tallies[t];
    std::printf("  %s worst err/tol: gemm %.3f softmax %.3f prop_rstd %.3f scale_rows %.3f "
                "fused %.3f; softmax max rel err vs float64 %.2g; exp error %.2f ulp; prop_rstd "
                "max rel err %.2g (mean 1e4, C >= %ld: %.2g; vs float64: %.2g, scalar's %.2g)\n",
                tl.isa, tl.gemm_worst, tl.softmax_worst, tl.rstd_worst, tl.scale_worst,
                tl.fused_worst, softmax_rel[t], tl.exp_ulp, tl.rstd_err[0], long(kInfoMinC),
                tl.rstd_err[1], tl.rstd_err64, g_scalar_rstd_err64);
    std::printf("  %s worst err/tol: gelu %.3f layernorm_rows %.3f drivers (mlp, patch_embed, linear) %.3f "
                "dwconv %.3f\n",
                tl.isa, tl.gelu_worst, tl.layernorm_worst, tl.mlp_worst, tl.dwconv_worst);
  }
  for (const Tally& tl : tallies) {
    if (tl.failures) {
      ok = false;
      std::printf("%s: %ld of %ld cases FAILED\n", tl.isa, long(tl.failures), long(tl.cases));
    } else {
      std::printf("%s: %ld cases OK\n", tl.isa, long(tl.cases));
    }
  }
  std::printf("(%.1f s)\n", now_s() - t0);
  return ok ? 0 : 1;
}
