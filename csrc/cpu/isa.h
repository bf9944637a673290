// Run-time choice of the float micro-kernels of edgevit::lgl_fused (see lgl_fused_ukernels.h)
// and, by the same ISA name, of the other ops (dwconv_ukernels.h).
#pragma once

#include <string>

#include "dwconv_ukernels.h"
#include "lgl_fused_ukernels.h"
#include "mlp_fused_ukernels.h"

namespace edgevit {
namespace cpu {

// The table for `requested` ("scalar", "neon", "avx2", "avx512"), or for the best ISA this CPU
// supports when `requested` is null or empty. Returns null and fills *error when the request
// names an unknown ISA, one not compiled into this build, or one this CPU lacks.
const LglUKernels<float>* select_ukernels(const char* requested, std::string* error);

// The mlp_fused table of the ISA named `isa` (a name select_ukernels' tables carry), or null.
const MlpUKernels<float>* mlp_ukernels_named(const char* isa);
// The dwconv table of the ISA named isa_name ("scalar", "neon", "avx2", "avx512"), as chosen by
// select_ukernels (which checks that this CPU has it); null for an unknown name or an ISA not
// compiled into this build.
const DwconvUKernels<float>* dwconv_ukernels_named(const char* isa_name);

// Comma-separated ISAs this build can run on this CPU, best last: "scalar,avx2,avx512".
std::string supported_isas();

}  // namespace cpu
}  // namespace edgevit
