// The one place that chooses the ISA variant of the float micro-kernels: every table of one ISA
// (gemm + lgl row ops, mlp row ops, dwconv) in one IsaConfig, chosen once at load and swapped
// only by an explicit call (set_active_isa), so an op call reads one atomic pointer and never
// mixes the tables of two ISAs. Torch-free: the ATen side (csrc/isa_cpu.cpp) turns the errors
// into exceptions.
#pragma once

#include <string>

#include "dwconv_ukernels.h"
#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

// The float tables of one ISA. The packed-B panel width (and so every prepared blob's layout)
// is lgl->nr; prepared blobs record name and nr and are rejected under another config.
struct IsaConfig {
  const char* name;  // "scalar", "neon", "avx2", "avx512"
  const LglUKernels<float>* lgl;
  const MlpUKernels<float>* mlp;
  const DwconvUKernels<float>* dwconv;
};

// The config of `requested` ("scalar", "neon", "avx2", "avx512"; null, "" or "auto": the best
// this CPU supports). Returns null and fills *error when the request names an unknown ISA, one
// not compiled into this build, or one this CPU lacks. Pure: changes nothing.
const IsaConfig* select_isa(const char* requested, std::string* error);

// The config of the ISA named `name` if it is compiled into this build (whether or not this CPU
// runs it), else null.
const IsaConfig* isa_named(const char* name);

// The config every op call uses now: one acquire load. Initialised at load from EDGEVIT_CPU_ISA
// (read that once); null when that variable names an ISA select_isa rejects, until
// set_active_isa succeeds. load_error() then says why.
const IsaConfig* active_isa();
const std::string& load_error();

// Makes select_isa(requested) the config of every later op call (calls in flight finish with
// the config they loaded). On error returns null, fills *error and changes nothing.
const IsaConfig* set_active_isa(const char* requested, std::string* error);

// Comma-separated ISAs this build can run on this CPU, best last: "scalar,avx2,avx512".
std::string supported_isas();

}  // namespace cpu
}  // namespace edgevit
