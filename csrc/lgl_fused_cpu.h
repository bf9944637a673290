// ATen-side entry points of the CPU implementation (registered in edgevit_ops.cpp / lgl_fused_cpu.cpp).
#pragma once

#include <c10/core/ScalarType.h>

#include "cpu/lgl_fused_ukernels.h"

#include <cstdint>
#include <string>
#include <vector>

namespace edgevit {

// The float lgl_fused micro-kernels for the current EDGEVIT_CPU_ISA (re-read on every call; a
// clear error if that ISA is unknown or unavailable). Its `name` is the ISA every edgevit CPU
// op runs with: the other ops select their own tables by that name.
const cpu::LglUKernels<float>& float_ukernels();
std::string cpu_isa();             // the ISA lgl_fused runs with now (honours EDGEVIT_CPU_ISA)
std::string supported_cpu_isas();  // every ISA this build can run on this CPU
// lgl_fused's weight cache (lgl_weight_cache.h): empty it; [entries, bytes, hits, misses].
void lgl_weight_cache_clear();
std::vector<int64_t> lgl_weight_cache_info();
// Elements of the tensor lgl_prepare returns for these C, sr_ratio and dtype with the ISA in use.
int64_t lgl_prepared_numel(int64_t C, int64_t sr_ratio, c10::ScalarType dtype);
// Elements of the tensor mlp_prepare returns for these sizes and dtype with the ISA in use.
int64_t mlp_prepared_numel(int64_t C, int64_t hidden, c10::ScalarType dtype);
// Elements of the tensor patch_embed_prepare returns for these sizes and dtype with the ISA in use.
int64_t patch_embed_prepared_numel(int64_t Cin, int64_t Cout, int64_t patch,
                                   c10::ScalarType dtype);
// Elements of the tensor linear_prepare returns for these sizes and dtype with the ISA in use.
int64_t linear_prepared_numel(int64_t in_features, int64_t out_features, c10::ScalarType dtype);

}  // namespace edgevit
