// CPU feature detection and the one place that picks an ISA variant.
#include "isa.h"

#include <cstring>
#include <utility>

namespace edgevit {
namespace cpu {
namespace {

struct Candidate {
  const char* name;
  const LglUKernels<float>* table;  // null: not compiled for this architecture
  bool cpu_ok;
};

// Best first.
void candidates(Candidate out[4]) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  out[0] = {"avx512", avx512_ukernels(), avx512};
  out[1] = {"avx2", avx2_ukernels(), avx2};
  out[2] = {"neon", nullptr, false};
#elif defined(__aarch64__)
  out[0] = {"neon", neon_ukernels(), true};  // NEON is the aarch64 baseline
  out[1] = {"avx512", nullptr, false};
  out[2] = {"avx2", nullptr, false};
#else
  out[0] = {"avx512", nullptr, false};
  out[1] = {"avx2", nullptr, false};
  out[2] = {"neon", nullptr, false};
#endif
  out[3] = {"scalar", &scalar_ukernels<float>(), true};
}

}  // namespace

const LglUKernels<float>* select_ukernels(const char* requested, std::string* error) {
  Candidate c[4];
  candidates(c);
  const bool any = requested == nullptr || requested[0] == '\0';
  for (const Candidate& cand : c) {
    if (any) {
      if (cand.table && cand.cpu_ok) return cand.table;
      continue;
    }
    if (std::strcmp(requested, cand.name) != 0) continue;
    if (cand.table && cand.cpu_ok) return cand.table;
    *error = std::string("EDGEVIT_CPU_ISA=") + requested + " is not available: " +
             (cand.table ? "this CPU lacks it" : "it is not compiled for this architecture") +
             "; this machine supports " + supported_isas();
    return nullptr;
  }
  *error = std::string("EDGEVIT_CPU_ISA: expected one of scalar, neon, avx2, avx512, got '") +
           requested + "'";
  return nullptr;
}

const MlpUKernels<float>* mlp_ukernels_named(const char* isa) {
  const std::pair<const char*, const MlpUKernels<float>*> tables[] = {
      {"scalar", &scalar_mlp_ukernels<float>()},
      {"avx2", avx2_mlp_ukernels()},
      {"avx512", avx512_mlp_ukernels()},
      {"neon", neon_mlp_ukernels()}};
  for (const auto& [name, table] : tables)
    if (std::strcmp(isa, name) == 0) return table;
  return nullptr;
}

const DwconvUKernels<float>* dwconv_ukernels_named(const char* isa_name) {
  const std::pair<const char*, const DwconvUKernels<float>*> tables[] = {
      {"scalar", &scalar_dwconv_ukernels<float>()},
      {"avx2", avx2_dwconv_ukernels()},
      {"avx512", avx512_dwconv_ukernels()},
      {"neon", neon_dwconv_ukernels()}};
  for (const auto& [name, table] : tables)
    if (std::strcmp(isa_name, name) == 0) return table;
  return nullptr;
}

std::string supported_isas() {
  Candidate c[4];
  candidates(c);
  std::string s;
  for (int i = 3; i >= 0; --i) {
    if (!c[i].table || !c[i].cpu_ok) continue;
    if (!s.empty()) s += ",";
    s += c[i].name;
  }
  return s;
}

}  // namespace cpu
}  // namespace edgevit
