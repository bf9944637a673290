// CPU feature detection and the active ISA config (see isa.h).
#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace edgevit {
namespace cpu {
namespace {

struct Candidate {
  IsaConfig config;  // config.lgl null: not compiled for this architecture
  bool cpu_ok;
};

IsaConfig make_config(const char* name, const LglUKernels<float>* lgl,
                      const MlpUKernels<float>* mlp, const DwconvUKernels<float>* dwconv) {
  // An ISA compiled for this architecture has all its tables or none.
  if (!lgl || !mlp || !dwconv) return {name, nullptr, nullptr, nullptr};
  return {name, lgl, mlp, dwconv};
}

// Best first; built once (the feature checks and tables do not change while the process runs).
const Candidate* candidates() {
  static const Candidate c[4] = {
#if defined(__x86_64__) || defined(_M_X64)
      {make_config("avx512", avx512_ukernels(), avx512_mlp_ukernels(), avx512_dwconv_ukernels()),
       (__builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                  __builtin_cpu_supports("avx512f") &&
                                  __builtin_cpu_supports("avx512bw") &&
                                  __builtin_cpu_supports("avx512vl") &&
                                  __builtin_cpu_supports("avx512dq"))},
      {make_config("avx2", avx2_ukernels(), avx2_mlp_ukernels(), avx2_dwconv_ukernels()),
       (__builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))},
      {make_config("neon", nullptr, nullptr, nullptr), false},
#elif defined(__aarch64__)
      // NEON is the aarch64 baseline.
      {make_config("neon", neon_ukernels(), neon_mlp_ukernels(), neon_dwconv_ukernels()), true},
      {make_config("avx512", nullptr, nullptr, nullptr), false},
      {make_config("avx2", nullptr, nullptr, nullptr), false},
#else
      {make_config("avx512", nullptr, nullptr, nullptr), false},
      {make_config("avx2", nullptr, nullptr, nullptr), false},
      {make_config("neon", nullptr, nullptr, nullptr), false},
#endif
      {make_config("scalar", &scalar_ukernels<float>(), &scalar_mlp_ukernels<float>(),
                   &scalar_dwconv_ukernels<float>()),
       true},
  };
  return c;
}

// The state set at load: the active config (null on a bad EDGEVIT_CPU_ISA) and the error.
struct Active {
  std::string error;  // written once, before `config` is published; never changed after
  std::atomic<const IsaConfig*> config{nullptr};
  Active() {
    const char* env = std::getenv("EDGEVIT_CPU_ISA");
    const IsaConfig* c = select_isa(env, &error);
    if (!c) error = std::string("EDGEVIT_CPU_ISA at start: ") + error;
    config.store(c, std::memory_order_release);
  }
};

Active& active() {
  static Active a;
  return a;
}

// Reads EDGEVIT_CPU_ISA when the library loads, not at the first op call, so a later change of
// the environment has no effect (documented: set_active_isa is the run-time override).
[[maybe_unused]] const bool kInitialisedAtLoad = (active(), true);

}  // namespace

const IsaConfig* select_isa(const char* requested, std::string* error) {
  const bool any = requested == nullptr || requested[0] == '\0' ||
                   std::strcmp(requested, "auto") == 0;
  const Candidate* c = candidates();
  for (int i = 0; i < 4; ++i) {
    const Candidate& cand = c[i];
    if (any) {
      if (cand.config.lgl && cand.cpu_ok) return &cand.config;
      continue;
    }
    if (std::strcmp(requested, cand.config.name) != 0) continue;
    if (cand.config.lgl && cand.cpu_ok) return &cand.config;
    *error = std::string("ISA '") + requested + "' is not available: " +
             (cand.config.lgl ? "this CPU lacks it" : "it is not compiled for this architecture") +
             "; this machine supports " + supported_isas();
    return nullptr;
  }
  *error = std::string("expected an ISA among auto, scalar, neon, avx2, avx512, got '") +
           requested + "'; this machine supports " + supported_isas();
  return nullptr;
}

const IsaConfig* isa_named(const char* name) {
  const Candidate* c = candidates();
  for (int i = 0; i < 4; ++i)
    if (c[i].config.lgl && std::strcmp(name, c[i].config.name) == 0) return &c[i].config;
  return nullptr;
}

const IsaConfig* active_isa() { return active().config.load(std::memory_order_acquire); }

const std::string& load_error() { return active().error; }

const IsaConfig* set_active_isa(const char* requested, std::string* error) {
  const IsaConfig* c = select_isa(requested, error);
  if (c) active().config.store(c, std::memory_order_release);
  return c;
}

std::string supported_isas() {
  const Candidate* c = candidates();
  std::string s;
  for (int i = 3; i >= 0; --i) {
    if (!c[i].config.lgl || !c[i].cpu_ok) continue;
    if (!s.empty()) s += ",";
    s += c[i].config.name;
  }
  return s;
}

}  // namespace cpu
}  // namespace edgevit
