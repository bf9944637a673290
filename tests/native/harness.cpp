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
//   prop_layernorm_rows  C = 1..400 x rows {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64}
//                   (full and partial token groups of every vector width), each token's y and
//                   pw rows distinct guarded rows in a scrambled order; ordinary inputs and
//                   large-mean inputs (mean 1e4, std 1), eps 1e-5 and 1e-6.
//                   |o - o_ref| <= 1e-4 (1 + |o_ref|) + cond, where cond = 4 eps_f32 (2 + sqrt C)
//                   max|z| rstd |g| (per token) is the float rounding of z = y*pw + pb and of
//                   its mean, amplified by the normalisation (scalar and SIMD sum in different
//                   orders); it is negligible unless |mean(z)| >> std(z).
//   lgl_fused_forward  the whole driver with each table (its own packing) vs the scalar table
//                   on several op shapes (r = 1..4, sides r does not divide, several heads,
//                   strided x), serial ParallelFor: |o - o_ref| <= 1e-4 (1 + |o_ref|).
//
// Out-of-bounds checks: every input the kernels read (A, packed B, bias, rows, each LayerNorm
// input row, LayerNorm vectors) ends exactly at a PROT_NONE guard page, so reading one element
// too far faults; outputs end at a guard page too and their gaps (ldc > N, ld > N) and a prefix
// are filled with a canary bit pattern that must be intact afterwards. The asan target adds
// ASan/UBSan.
//
// Usage: harness            run all tests, print "<isa>: <n> cases OK" per ISA; exit 1 on failure
//        harness --quick    fewer gemm cases (for slow emulators)
//        harness --bench    gemm GFLOP/s per ISA on the workload's representative shapes, weight
//                           packing and prop_layernorm_rows ns per element / token
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/cpu/isa.h"
#include "../../csrc/cpu/lgl_fused.h"
#include "../../csrc/cpu/lgl_fused_ukernels.h"

using edgevit::cpu::LglArgs;
using edgevit::cpu::LglUKernels;
using UK = LglUKernels<float>;

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
  double gemm_worst = 0, softmax_worst = 0, ln_worst = 0, fused_worst = 0;  // err / tol
  double exp_ulp = 0;
  double ln_err[2] = {0, 0};  // max |o - o_ref|: ordinary inputs, large-mean inputs
  double ln_err64 = 0;        // max |o - float64 LayerNorm of the same inputs|, large-mean
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
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = biasp ? std::fabs(double(biasp[n])) : 0.0;
      for (int64_t k = 0; k < K; ++k) s += std::fabs(double(A[m * lda + k]) * Bsrc[k * N + n]);
      bound[m * N + n] = 1e-5 * s + 1e-30;
    }

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
// prop_layernorm_rows

// nrows rows of n floats, each ending exactly at its own PROT_NONE page (and the first one
// starting after another), in one mapping: row pointers for the batched kernels.
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

double g_scalar_ln_err64 = 0;

constexpr int64_t kLnPool = 64;  // distinct input rows per C; a case uses a subset
const int64_t kLnRowCounts[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64};

// For every C in 1..400 and every row count: token t reads y row (7t + rows) % 64 and pw row
// (5t + 3 rows + 1) % 64 of two pools of 64 distinct guarded rows (distinct within a case, in a
// scrambled order, y and pw rows not paired the same way); pb, g, b end at guard pages; out is
// rows * C floats ending at a guard page, after a canary prefix. Ordinary inputs and
// large-mean inputs (z of mean 1e4, std ~1), eps 1e-5 and 1e-6.
void test_layernorm(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  const auto& ref64 = edgevit::cpu::scalar_ukernels<double>();
  constexpr int64_t kPrefix = 16;
  for (int64_t C = 1; C <= 400; ++C) {
    GuardedRows ypool(kLnPool, C), pwpool(kLnPool, C);
    Guarded pb(C), g(C), b(C);
    for (int large_mean = 0; large_mean < 2; ++large_mean) {
      for (int64_t i = 0; i < kLnPool; ++i)
        for (int64_t c = 0; c < C; ++c) {
          ypool.row(i)[c] = large_mean ? normal() : 2.f * normal() + 0.5f;
          pwpool.row(i)[c] = uniform(0.5f, 1.5f);
        }
      for (int64_t c = 0; c < C; ++c) {
        pb[c] = large_mean ? 1e4f + uniform(-0.5f, 0.5f) : uniform(-1.f, 1.f);
        g[c] = uniform(0.5f, 1.5f);
        b[c] = uniform(-1.f, 1.f);
      }
      // Float64 copies of the pools (informational accuracy of the large-mean case).
      std::vector<double> y64(kLnPool * C), pw64(kLnPool * C), pb64(pb.data(), pb.data() + C),
          g64(g.data(), g.data() + C), b64(b.data(), b.data() + C);
      for (int64_t i = 0; i < kLnPool; ++i)
        for (int64_t c = 0; c < C; ++c) {
          y64[i * C + c] = ypool.row(i)[c];
          pw64[i * C + c] = pwpool.row(i)[c];
        }
      for (int64_t rows : kLnRowCounts) {
        std::vector<const float*> yp(rows), pwp(rows);
        std::vector<const double*> yp64(rows), pwp64(rows);
        std::vector<double> zmax(rows, 0.0), zvar(rows);  // per token, of z in float64
        for (int64_t t = 0; t < rows; ++t) {
          const int64_t iy = (7 * t + rows) % kLnPool, ip = (5 * t + 3 * rows + 1) % kLnPool;
          yp[t] = ypool.row(iy);
          pwp[t] = pwpool.row(ip);
          yp64[t] = y64.data() + iy * C;
          pwp64[t] = pw64.data() + ip * C;
          double zsum = 0, zsq = 0;
          for (int64_t c = 0; c < C; ++c) {
            const double z = double(yp[t][c]) * pwp[t][c] + pb[c];
            zmax[t] = std::max(zmax[t], std::fabs(z));
            zsum += z;
          }
          for (int64_t c = 0; c < C; ++c) {
            const double d = double(yp[t][c]) * pwp[t][c] + pb[c] - zsum / C;
            zsq += d * d;
          }
          zvar[t] = zsq / C;
        }
        for (float eps : {1e-5f, 1e-6f}) {
          // Per token: cond / |g[c]| of the tolerance rule (see the top of this file).
          std::vector<double> cond(rows);
          for (int64_t t = 0; t < rows; ++t)
            cond[t] = 4.0 * 1.1920929e-7 * (2.0 + std::sqrt(double(C))) * zmax[t] /
                      std::sqrt(zvar[t] + eps);
          std::vector<float> want(rows * C);
          ref.prop_layernorm_rows(rows, C, yp.data(), pwp.data(), pb.data(), g.data(), b.data(),
                                  eps, want.data());
          std::vector<double> want64(rows * C);
          if (large_mean) {
            ref64.prop_layernorm_rows(rows, C, yp64.data(), pwp64.data(), pb64.data(), g64.data(),
                                      b64.data(), double(eps), want64.data());
            for (int64_t i = 0; i < rows * C; ++i)
              g_scalar_ln_err64 = std::max(g_scalar_ln_err64, std::fabs(want[i] - want64[i]));
          }
          for (size_t t = 0; t < isas.size(); ++t) {
            Tally& tally = tallies[t];
            ++tally.cases;
            Guarded obuf(kPrefix + rows * C);
            obuf.fill(canary());
            float* out = obuf.data() + kPrefix;
            CURRENT("%s prop_layernorm_rows rows=%ld C=%ld", isas[t]->name, long(rows), long(C));
            isas[t]->prop_layernorm_rows(rows, C, yp.data(), pwp.data(), pb.data(), g.data(),
                                         b.data(), eps, out);
            bool bad = false;
            for (int64_t i = 0; i < kPrefix && !bad; ++i)
              if (!is_canary(obuf[i])) {
                fail(tally, "prop_layernorm_rows rows=%ld C=%ld: wrote before out", long(rows),
                     long(C));
                bad = true;
              }
            for (int64_t i = 0; i < rows * C && !bad; ++i) {
              const int64_t tok = i / C, c = i % C;
              const double err = std::fabs(double(out[i]) - want[i]);
              const double tol = 1e-4 * (1.0 + std::fabs(want[i])) + cond[tok] * std::fabs(g[c]);
              if (!(err <= tol)) {
                fail(tally, "prop_layernorm_rows rows=%ld C=%ld large_mean=%d eps=%g: out[%ld, "
                     "%ld] = %.9g, scalar %.9g (tol %.3g)", long(rows), long(C), large_mean, eps,
                     long(tok), long(c), out[i], want[i], tol);
                bad = true;
              }
              tally.ln_worst = std::max(tally.ln_worst, err / tol);
              tally.ln_err[large_mean] = std::max(tally.ln_err[large_mean], err);
              if (large_mean)
                tally.ln_err64 = std::max(tally.ln_err64, std::fabs(out[i] - want64[i]));
            }
          }
        }
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

std::vector<float> run_fused(const UK& uk, const OpShape& s, const std::vector<float>& x,
                             const std::vector<float>& qkv_w, const std::vector<float>& qkv_b,
                             const std::vector<float>& prop_w, const std::vector<float>& prop_b,
                             const std::vector<float>& norm_w, const std::vector<float>& norm_b,
                             const std::vector<float>& proj_w, const std::vector<float>& proj_b,
                             bool one_by_one) {
  const int64_t C = s.C, N = s.H * s.W;
  Guarded out(s.B * N * C);
  out.fill(canary());
  std::vector<float> ws(
      edgevit::cpu::lgl_workspace_size(s.B, s.H, s.W, C, s.heads, s.r, uk.nr));
  LglArgs<float> a{};
  a.B = s.B; a.H = s.H; a.W = s.W; a.C = C; a.num_heads = s.heads; a.r = s.r;
  a.scale = 1.0f / std::sqrt(float(C / s.heads));
  a.eps = 1e-5f;
  a.x = x.data();
  if (s.channels_first) {  // x stored [B, C, N], viewed as [B, N, C]
    a.x_sb = N * C; a.x_sn = 1; a.x_sc = N;
  } else {
    a.x_sb = N * C; a.x_sn = C; a.x_sc = 1;
  }
  a.qkv_w = qkv_w.data();
  a.qkv_b = s.bias ? qkv_b.data() : nullptr;
  a.prop_w = s.r > 1 ? prop_w.data() : nullptr;
  a.prop_b = s.r > 1 ? prop_b.data() : nullptr;
  a.norm_w = s.r > 1 ? norm_w.data() : nullptr;
  a.norm_b = s.r > 1 ? norm_b.data() : nullptr;
  a.proj_w = proj_w.data();
  a.proj_b = s.bias ? proj_b.data() : nullptr;
  a.out = out.data();
  edgevit::cpu::lgl_fused_forward<float>(a, uk, ws.data(),
                                         one_by_one ? one_by_one_for : serial_for);
  return std::vector<float>(out.data(), out.data() + out.size());
}

void test_fused(const std::vector<const UK*>& isas, std::vector<Tally>& tallies) {
  const OpShape shapes[] = {
      {1, 7, 7, 36, 1, 1, true, false},     {2, 9, 11, 48, 2, 2, true, false},
      {1, 13, 10, 72, 2, 3, false, false},  {1, 28, 28, 36, 1, 4, true, false},
      {1, 14, 14, 144, 4, 2, true, true},   {1, 7, 7, 288, 8, 1, true, false},
      {2, 17, 23, 96, 2, 4, true, false},   {1, 30, 30, 36, 1, 4, false, true},
  };
  const UK& ref = edgevit::cpu::scalar_ukernels<float>();
  int variant = 0;
  for (const OpShape& s : shapes) {
    const int64_t C = s.C, N = s.H * s.W, rr = s.r * s.r;
    std::vector<float> x(s.B * N * C), qkv_w(3 * C * C), qkv_b(3 * C), prop_w(rr * C),
        prop_b(C), norm_w(C), norm_b(C), proj_w(C * C), proj_b(C);
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
    const bool one_by_one = variant++ % 2 == 1;
    const std::vector<float> want = run_fused(ref, s, x, qkv_w, qkv_b, prop_w, prop_b, norm_w,
                                              norm_b, proj_w, proj_b, false);
    for (size_t t = 0; t < isas.size(); ++t) {
      Tally& tally = tallies[t];
      ++tally.cases;
      CURRENT("%s lgl_fused_forward B=%ld H=%ld W=%ld C=%ld heads=%ld r=%ld", isas[t]->name,
              long(s.B), long(s.H), long(s.W), long(C), long(s.heads), long(s.r));
      const std::vector<float> got = run_fused(*isas[t], s, x, qkv_w, qkv_b, prop_w, prop_b,
                                               norm_w, norm_b, proj_w, proj_b, one_by_one);
      for (size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(double(got[i]) - want[i]);
        const double tol = 1e-4 * (1.0 + std::fabs(want[i]));
        if (!(err <= tol)) {
          fail(tally, "lgl_fused_forward B=%ld H=%ld W=%ld C=%ld heads=%ld r=%ld: out[%zu] = "
               "%.9g, scalar %.9g", long(s.B), long(s.H), long(s.W), long(C), long(s.heads),
               long(s.r), i, got[i], want[i]);
          break;
        }
        tally.fused_worst = std::max(tally.fused_worst, err / tol);
      }
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

void bench(const std::vector<const UK*>& isas) {
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
  // Packing W^T (phase 0 of the driver, every call): pack_weight_t vs the generic pack_b.
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
  // Propagate + LayerNorm (phase 3 of the driver, r > 1): one block of 64 output tokens as the
  // driver gathers it at EdgeViT stage 1 (W = 56, r = 4: token t reads sampled row
  // (t / 56 / 4) * 14 + t % 56 / 4 and offset row (t / 56 % 4) * 4 + t % 4), in one call and in
  // 64 calls of one row each (what the per-token kernel cost, plus the indirection).
  std::printf("prop_layernorm_rows, ns per token: 64 rows per call (64 calls of 1 row)\n");
  for (int64_t C : {36, 72, 144, 240}) {
    constexpr int64_t kRows = 64;
    std::printf("%4s  C = %4ld  ", "", long(C));
    std::vector<float> y(14 * 14 * C), pw(16 * C), pb(C), g(C), b(C), out(kRows * C);
    for (float& v : y) v = normal();
    for (float& v : pw) v = uniform(-1.f, 1.f);
    for (float& v : pb) v = 0.1f * normal();
    for (float& v : g) v = uniform(0.5f, 1.5f);
    for (float& v : b) v = 0.1f * normal();
    std::vector<const float*> yp(kRows), pwp(kRows);
    for (int64_t t = 0; t < kRows; ++t) {
      const int64_t yy = t / 56, xx = t % 56;
      yp[t] = y.data() + (yy / 4 * 14 + xx / 4) * C;
      pwp[t] = pw.data() + (yy % 4 * 4 + xx % 4) * C;
    }
    for (const UK* uk : isas) {
      double t_ln[2];
      for (int which = 0; which < 2; ++which) {
        auto run = [&] {
          if (which == 0) {
            uk->prop_layernorm_rows(kRows, C, yp.data(), pwp.data(), pb.data(), g.data(),
                                    b.data(), 1e-5f, out.data());
          } else {
            for (int64_t t = 0; t < kRows; ++t)
              uk->prop_layernorm_rows(1, C, yp.data() + t, pwp.data() + t, pb.data(), g.data(),
                                      b.data(), 1e-5f, out.data() + t * C);
          }
        };
        const double best = best_seconds(run, 31);
        t_ln[which] = best * 1e9 / double(kRows);
      }
      std::printf("  %s %5.1f (%5.1f)", uk->name, t_ln[0], t_ln[1]);
    }
    std::printf("\n");
  }
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
    const UK* uk = edgevit::cpu::select_ukernels(name, &err);
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
  std::printf("  scalar (std::exp) exp error: %.2f ulp\n",
              exp_ulp_error(edgevit::cpu::scalar_ukernels<float>()));
  test_layernorm(isas, tallies);
  test_fused(isas, tallies);
  bool ok = true;
  for (size_t t = 0; t < isas.size(); ++t) {
    const Tally& tl = tallies[t];
    std::printf("  %s worst err/tol: gemm %.3f softmax %.3f layernorm %.3f fused %.3f; softmax "
                "max rel err vs float64 %.2g; exp error %.2f ulp; layernorm max abs err %.2g "
                "(mean 1e4: %.2g; vs float64: %.2g, scalar's %.2g)\n", tl.isa, tl.gemm_worst,
                tl.softmax_worst, tl.ln_worst, tl.fused_worst, softmax_rel[t], tl.exp_ulp,
                tl.ln_err[0], tl.ln_err[1], tl.ln_err64, g_scalar_ln_err64);
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
