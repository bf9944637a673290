// The neon tables (lgl_fused_ukernels.h, mlp_fused_ukernels.h) assembled from the kernel
// families; compiled with the neon flags like them, so the tables exist exactly where the kernels
// do (null elsewhere).
#include "activation.h"
#include "gemm.h"
#include "layernorm.h"
#include "softmax.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#define EDGEVIT_HAVE_NEON 1
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_NEON)
namespace {

const LglUKernels<float> kLgl{"neon",
                              kNR_neon,
                              gemm_neon,
                              softmax_rows_neon,
                              prop_rstd_neon,
                              scale_rows_neon,
                              pack_weight_t_neon,
                              gemm_gelu_neon,
                              gemm_add_neon,
                              gemm_scatter_neon};
const MlpUKernels<float> kMlp{"neon", gelu_neon, layernorm_rows_neon, add_neon};

}  // namespace

const LglUKernels<float>* neon_ukernels() { return &kLgl; }
const MlpUKernels<float>* neon_mlp_ukernels() { return &kMlp; }

#else

const LglUKernels<float>* neon_ukernels() { return nullptr; }
const MlpUKernels<float>* neon_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
