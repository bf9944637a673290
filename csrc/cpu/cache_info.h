// Data-cache sizes of the CPU this process runs on, read once: blocking that must fit a cache
// level (mlp_fused's hidden tile) is sized from these, not from one machine's constants.
#pragma once

#include <cstdint>

namespace edgevit {
namespace cpu {

struct CacheInfo {
  int64_t l1d;         // bytes per core
  int64_t l2;          // bytes per core (or per cluster where it is shared)
  int64_t l3;          // bytes in all (0: none found)
  const char* source;  // "sysfs", "cpuid" or "default" (nothing could be read)
};

// Linux sysfs (cpu0's cache/index*), else x86 cpuid (leaf 4 on Intel, 0x8000001D on AMD), else
// defaults of 32 KiB / 512 KiB / 0. Read on first call, then fixed.
const CacheInfo& cache_info();

}  // namespace cpu
}  // namespace edgevit
