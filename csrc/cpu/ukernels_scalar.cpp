// The scalar tables (lgl_fused_ukernels.h, mlp_fused_ukernels.h) assembled from the kernel
// families, for float and double: always compiled, the fallback of every ISA choice and the
// tables float64 runs with.
#include "activation.h"
#include "gemm.h"
#include "layernorm.h"
#include "softmax.h"

namespace edgevit {
namespace cpu {

// gemm_scatter is left null: the fused epilogue gains nothing measurable on the scalar tiles
// (docs/performance-notes.md), so the driver runs gemm + scale_rows.
template <typename T>
const LglUKernels<T>& scalar_ukernels() {
  static const LglUKernels<T> table{"scalar",
                                    kNR_scalar,
                                    gemm_scalar<T>,
                                    softmax_rows_scalar<T>,
                                    prop_rstd_scalar<T>,
                                    scale_rows_scalar<T>,
                                    pack_weight_t_scalar<T>,
                                    gemm_gelu_scalar<T>,
                                    gemm_add_scalar<T>,
                                    nullptr};
  return table;
}

template <typename T>
const MlpUKernels<T>& scalar_mlp_ukernels() {
  static const MlpUKernels<T> table{"scalar", gelu_scalar<T>, layernorm_rows_scalar<T>,
                                    add_scalar<T>};
  return table;
}

template const LglUKernels<float>& scalar_ukernels<float>();
template const LglUKernels<double>& scalar_ukernels<double>();
template const MlpUKernels<float>& scalar_mlp_ukernels<float>();
template const MlpUKernels<double>& scalar_mlp_ukernels<double>();

}  // namespace cpu
}  // namespace edgevit
