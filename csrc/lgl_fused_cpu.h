// ATen-side entry points of the CPU implementation (registered in edgevit_ops.cpp / lgl_fused_cpu.cpp).
#pragma once

#include <string>

namespace edgevit {

std::string cpu_isa();             // the ISA lgl_fused runs with now (honours EDGEVIT_CPU_ISA)
std::string supported_cpu_isas();  // every ISA this build can run on this CPU

}  // namespace edgevit
