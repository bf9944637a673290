// avx512 micro-kernels of edgevit::lgl_fused: placeholder until the SIMD variant lands.
#include "lgl_fused_ukernels.h"

namespace edgevit {
namespace cpu {

const LglUKernels<float>* avx512_ukernels() { return nullptr; }

}  // namespace cpu
}  // namespace edgevit
