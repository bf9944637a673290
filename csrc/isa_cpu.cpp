// The ATen side of the ISA choice (cpu/isa.h): the config every float op call runs with, and the
// cpu_isa / supported_cpu_isas / set_cpu_isa ops. Errors are exceptions here, never at load: a
// bad EDGEVIT_CPU_ISA must not make `import edgevit_kernels` fail, so it is kept and raised by
// every op call until set_cpu_isa chooses a valid ISA.
#include "lgl_fused_cpu.h"

#include <c10/util/Exception.h>

#include <string>

#include "cpu/isa.h"

namespace edgevit {

const cpu::IsaConfig& float_isa() {
  const cpu::IsaConfig* c = cpu::active_isa();
  TORCH_CHECK_VALUE(c != nullptr, "edgevit: ", cpu::load_error(),
                    "; call edgevit_kernels.set_cpu_isa(name) with one of them (or None: the "
                    "best) to run the CPU ops");
  return *c;
}

const cpu::LglUKernels<float>& float_ukernels() { return *float_isa().lgl; }

std::string cpu_isa() { return float_isa().name; }

std::string supported_cpu_isas() { return cpu::supported_isas(); }

std::string set_cpu_isa(const c10::optional<std::string>& name) {
  std::string error;
  const cpu::IsaConfig* c = cpu::set_active_isa(name ? name->c_str() : nullptr, &error);
  TORCH_CHECK_VALUE(c != nullptr, "set_cpu_isa: ", error);
  return c->name;
}

}  // namespace edgevit
