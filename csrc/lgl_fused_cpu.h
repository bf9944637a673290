// ATen-side entry points of the CPU implementation (registered in edgevit_ops.cpp / lgl_fused_cpu.cpp).
#pragma once

#include <c10/core/ScalarType.h>

#include <c10/util/Optional.h>

#include "cpu/isa.h"

#include <cstdint>
#include <string>
#include <vector>

namespace edgevit {

// The ISA config every float CPU op runs with (cpu/isa.h: chosen at load from EDGEVIT_CPU_ISA,
// changed only by set_cpu_isa). Raises, naming the cause, while EDGEVIT_CPU_ISA named an ISA
// this machine cannot run and set_cpu_isa has not been called. An op loads it once per call.
const cpu::IsaConfig& float_isa();
// float_isa().lgl: the gemm and lgl_fused micro-kernels.
const cpu::LglUKernels<float>& float_ukernels();
std::string cpu_isa();             // float_isa().name
std::string supported_cpu_isas();  // every ISA this build can run on this CPU, best last
// Makes `name` ("scalar", "neon", "avx2", "avx512"; None or "auto": the best) the ISA of every
// later CPU op call and returns it; a ValueError naming it and what this machine supports if
// it is unknown or unavailable (nothing changes then).
std::string set_cpu_isa(const c10::optional<std::string>& name);
// What the kernels chose for this CPU (isa_cpu.cpp), as key=value pairs joined by ';'.
std::string cpu_info();
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
