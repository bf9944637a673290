#include "cache_info.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace edgevit {
namespace cpu {
namespace {

bool read_line(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return false;
  char buf[64] = {0};
  const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  if (!ok) return false;
  *out = buf;
  while (!out->empty() && (out->back() == '\n' || out->back() == ' ')) out->pop_back();
  return true;
}

// "48K", "2048K", "32M" -> bytes; 0 when it is not such a size.
int64_t parse_size(const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (v <= 0 || end == s.c_str()) return 0;
  const char unit = *end;
  return unit == 'K' ? v << 10 : unit == 'M' ? v << 20 : unit == 'G' ? v << 30 : unit == 0 ? v : 0;
}

bool from_sysfs(CacheInfo* c) {
  bool any = false;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::string level, type, size;
    if (!read_line(dir + "level", &level) || !read_line(dir + "type", &type) ||
        !read_line(dir + "size", &size))
      break;
    if (type == "Instruction") continue;
    const int64_t bytes = parse_size(size);
    if (bytes <= 0) continue;
    if (level == "1") c->l1d = bytes, any = true;
    if (level == "2") c->l2 = bytes, any = true;
    if (level == "3") c->l3 = bytes, any = true;
  }
  return any;
}

bool from_cpuid(CacheInfo* c) {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a, b, cx, d;
  if (!__get_cpuid(0, &a, &b, &cx, &d)) return false;
  const bool amd = b == 0x68747541;  // "Auth"enticAMD
  const unsigned leaf = amd ? 0x8000001Du : 4u;
  if (amd && (!__get_cpuid(0x80000000u, &a, &b, &cx, &d) || a < leaf)) return false;
  if (!amd && a < 4) return false;
  bool any = false;
  for (unsigned i = 0; i < 16; ++i) {
    __cpuid_count(leaf, i, a, b, cx, d);
    const unsigned type = a & 31, level = (a >> 5) & 7;
    if (type == 0) break;
    if (type == 2) continue;  // instruction cache
    const int64_t bytes = static_cast<int64_t>((b >> 22) + 1) * (((b >> 12) & 1023) + 1) *
                          ((b & 4095) + 1) * (static_cast<int64_t>(cx) + 1);
    if (level == 1) c->l1d = bytes, any = true;
    if (level == 2) c->l2 = bytes, any = true;
    if (level == 3) c->l3 = bytes, any = true;
  }
  return any;
#else
  (void)c;
  return false;
#endif
}

CacheInfo detect() {
  CacheInfo c{32 << 10, 512 << 10, 0, "default"};
  if (from_sysfs(&c)) {
    c.source = "sysfs";
  } else if (from_cpuid(&c)) {
    c.source = "cpuid";
  }
  return c;
}

}  // namespace

const CacheInfo& cache_info() {
  static const CacheInfo info = detect();
  return info;
}

}  // namespace cpu
}  // namespace edgevit
