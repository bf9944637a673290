// Run-time choice of the float micro-kernels of edgevit::lgl_fused (see lgl_fused_ukernels.h).
#pragma once

#include <string>

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

// Comma-separated ISAs this build can run on this CPU, best last: "scalar,avx2,avx512".
std::string supported_isas();

}  // namespace cpu
}  // namespace edgevit
