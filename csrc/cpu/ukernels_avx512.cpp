// The avx512 tables (lgl_fused_ukernels.h, mlp_fused_ukernels.h) assembled from the kernel
// families; compiled with the avx512 flags like them, so the tables exist exactly where the
// kernels do (null elsewhere).
#include "activation.h"
#include "gemm.h"
#include "layernorm.h"
#include "softmax.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__)
#define EDGEVIT_HAVE_AVX512 1
#endif

namespace edgevit {
namespace cpu {

#if defined(EDGEVIT_HAVE_AVX512)
namespace {

const LglUKernels<float> kLgl{"avx512",
                              kNR_avx512,
                              gemm_avx512,
                              softmax_rows_avx512,
                              prop_rstd_avx512,
                              scale_rows_avx512,
                              pack_weight_t_avx512,
                              gemm_gelu_avx512,
                              gemm_add_avx512,
                              gemm_scatter_avx512};
const MlpUKernels<float> kMlp{"avx512", gelu_avx512, layernorm_rows_avx512, add_avx512};

}  // namespace

const LglUKernels<float>* avx512_ukernels() { return &kLgl; }
const MlpUKernels<float>* avx512_mlp_ukernels() { return &kMlp; }

#else

const LglUKernels<float>* avx512_ukernels() { return nullptr; }
const MlpUKernels<float>* avx512_mlp_ukernels() { return nullptr; }

#endif

}  // namespace cpu
}  // namespace edgevit
