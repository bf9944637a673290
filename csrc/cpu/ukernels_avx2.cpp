// The avx2 tables (lgl_fused_ukernels.h, mlp_fused_ukernels.h) assembled from the kernel
// families; compiled with the avx2 flags like them, so the tables exist exactly where the kernels
// do (null elsewhere).
#include "activation.h"
#include "gemm.h"
#include "layernorm.h"
#include "softmax.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX2 1
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX2)
namespace {

const LglUKernels<float> kLgl{"avx2",
                              kNR_avx2,
                              gemm_avx2,
                              softmax_rows_avx2,
                              prop_rstd_avx2,
                              scale_rows_avx2,
                              pack_weight_t_avx2,
                              gemm_gelu_avx2,
                              gemm_add_avx2,
                              gemm_scatter_avx2};
const MlpUKernels<float> kMlp{"avx2", gelu_avx2, layernorm_rows_avx2, add_avx2};

}  // namespace

const LglUKernels<float>* avx2_ukernels() { return &kLgl; }
const MlpUKernels<float>* avx2_mlp_ukernels() { return &kMlp; }

#else

const LglUKernels<float>* avx2_ukernels() { return nullptr; }
const MlpUKernels<float>* avx2_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
