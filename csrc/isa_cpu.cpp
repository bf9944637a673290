// The ATen side of the ISA choice (cpu/isa.h): the config every float op call runs with, and the
// cpu_isa / supported_cpu_isas / set_cpu_isa ops. Errors are exceptions here, never at load: a
// bad EDGEVIT_CPU_ISA must not make `import edgevit_kernels` fail, so it is kept and raised by
// every op call until set_cpu_isa chooses a valid ISA.
#include "lgl_fused_cpu.h"

#include <c10/util/Exception.h>

#include <ATen/Parallel.h>

#include <sstream>
#include <string>

#include "cpu/cache_info.h"
#include "cpu/isa.h"
#include "cpu/mlp_fused.h"
#include "cpu/thread_pool.h"

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

// What the kernels chose for this CPU, as "key=value" pairs joined by ';' (ops.cpu_info parses
// them): the ISA and its panel width, the caches the blocking is sized from, the thread pool.
std::string cpu_info() {
  const cpu::IsaConfig& isa = float_isa();
  const cpu::CacheInfo& c = cpu::cache_info();
  const cpu::PoolInfo p = cpu::pool_info();
  std::ostringstream s;
  s << "isa=" << isa.name << ";nr=" << isa.lgl->nr << ";l1d=" << c.l1d << ";l2=" << c.l2
    << ";l3=" << c.l3 << ";cache_source=" << c.source << ";threads=" << at::get_num_threads()
    << ";pool_workers=" << p.workers << ";chunks_per_thread=" << p.chunks_per_thread
    << ";mlp_hidden_tile=" << cpu::mlp_hidden_tile_elements(sizeof(float));
  return s.str();
}

}  // namespace edgevit
