// lgl_fused's weight cache: the prepared (packed and folded) weights of recent calls, found by
// the bytes of the weights themselves.
//
// lgl_fused is stateless: it takes the raw weights on every call, and preparing them (phase 0,
// cpu/lgl_fused.cpp) costs 40-75 us on EdgeViT's stage 1-2 shapes, a fifth of the whole op at
// B = 1. Calls with the same weights are the common case (a module's forward in a loop), so the
// op keeps what it prepared and reuses it when the weights are the same. "The same" is decided
// by content alone: each entry keeps a byte copy of the weights it was prepared from, and a call
// reuses an entry only when every weight compares equal byte for byte (memcmp; 0.5% of the op's
// profile samples on XS/S stage 1). Data pointers, version counters and tensor identity are never
// trusted, so an in-place change by any route (`.data`, a NumPy view, a freed and reused
// address) can only cause a miss, never a stale result. The output is bitwise the same with or
// without the cache, because preparation is deterministic.
//
// Only for weights of at most kMaxWeightBytes (C <= ~200 in float32: EdgeViT's stages 1-3 of
// XXS, 1-2 of XS/S). Above that, comparing the weights reads twice their bytes and leaves the
// cached buffer cold, which costs what preparing them does (for r = 1 preparing is a packing
// copy): measured on XS/S stage 4 (C = 384, 2.4 MB of weights), the cached call ran 4-34%
// slower than preparing every call (3 runs, B = 1 and 8), and C = 240 / 288 gained nothing.
// Bounded: least recently used entries go first once there are more than kMaxEntries or their
// bytes (copy + prepared buffer) exceed EDGEVIT_WEIGHT_CACHE_MB (default 64); 0 turns the cache
// off. edgevit::lgl_weight_cache_clear() empties it; lgl_weight_cache_info() reports it.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

namespace edgevit {

class LglWeightCache {
 public:
  // Everything besides the weights' bytes that the prepared buffer depends on: dtype, ISA
  // index, panel width nr, C, sr_ratio, A-tile form.
  using Key = std::array<int64_t, 6>;
  static constexpr size_t kMaxEntries = 32;
  static constexpr size_t kMaxWeightBytes = size_t(512) << 10;  // a call's weights, in bytes

  static LglWeightCache& get() {
    static LglWeightCache cache;
    return cache;
  }

  // The budget in bytes for a call with these weights (EDGEVIT_WEIGHT_CACHE_MB, re-read so tests
  // and users can change it at run time); 0 = do not use the cache for this call (off, or the
  // weights are over kMaxWeightBytes).
  static size_t budget(const std::vector<at::Tensor>& weights) {
    const char* env = std::getenv("EDGEVIT_WEIGHT_CACHE_MB");
    long long mb = 64;
    if (env != nullptr && *env != '\0') {
      char* end = nullptr;
      mb = std::strtoll(env, &end, 10);
      TORCH_CHECK(*end == '\0' && mb >= 0, "EDGEVIT_WEIGHT_CACHE_MB: expected a whole number of "
                  "MiB >= 0 (0 turns lgl_fused's weight cache off), got '", env, "'");
    }
    return raw_bytes(weights) > kMaxWeightBytes ? 0 : size_t(mb) << 20;
  }

  // The prepared buffer of an entry with this key whose weights equal `weights` (contiguous, or
  // undefined for an absent optional one), or an undefined tensor.
  at::Tensor find(const Key& key, const std::vector<at::Tensor>& weights) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key != key || !same_bytes(*it, weights)) continue;
      entries_.splice(entries_.begin(), entries_, it);  // most recently used first
      ++hits_;
      return it->prepared;
    }
    ++misses_;
    return at::Tensor();
  }

  // Keeps `prepared` (made from `weights`) under `key`, evicting the least recently used entries
  // over the budget. An entry larger than the whole budget is not kept.
  void insert(const Key& key, const std::vector<at::Tensor>& weights, const at::Tensor& prepared,
              size_t budget_bytes) {
    Entry e;
    e.key = key;
    for (const at::Tensor& w : weights) e.numel.push_back(w.defined() ? w.numel() : -1);
    const size_t raw = raw_bytes(weights);
    e.bytes = raw + prepared.nbytes();
    if (e.bytes > budget_bytes) return;
    e.raw.reset(new char[raw]);
    char* p = e.raw.get();
    for (const at::Tensor& w : weights) {
      if (!w.defined()) continue;
      std::memcpy(p, w.const_data_ptr(), w.nbytes());
      p += w.nbytes();
    }
    e.prepared = prepared;
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ += e.bytes;
    entries_.push_front(std::move(e));
    while (entries_.size() > kMaxEntries || bytes_ > budget_bytes) {
      bytes_ -= entries_.back().bytes;
      entries_.pop_back();
    }
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
    bytes_ = 0;
    hits_ = misses_ = 0;
  }

  // [entries, bytes, hits, misses] (hits and misses since the last clear).
  std::vector<int64_t> info() {
    std::lock_guard<std::mutex> lock(mu_);
    return {int64_t(entries_.size()), int64_t(bytes_), hits_, misses_};
  }

 private:
  static size_t raw_bytes(const std::vector<at::Tensor>& weights) {
    size_t n = 0;
    for (const at::Tensor& w : weights) n += w.defined() ? w.nbytes() : 0;
    return n;
  }

  struct Entry {
    Key key;
    std::vector<int64_t> numel;    // per weight; -1 = absent
    std::unique_ptr<char[]> raw;   // the weights' bytes, back to back
    at::Tensor prepared;
    size_t bytes = 0;              // raw + prepared
  };

  static bool same_bytes(const Entry& e, const std::vector<at::Tensor>& weights) {
    if (e.numel.size() != weights.size()) return false;
    const char* p = e.raw.get();
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor& w = weights[i];
      if (e.numel[i] != (w.defined() ? w.numel() : -1)) return false;
      if (!w.defined()) continue;
      if (std::memcmp(p, w.const_data_ptr(), w.nbytes()) != 0) return false;
      p += w.nbytes();
    }
    return true;
  }

  std::mutex mu_;
  std::list<Entry> entries_;
  size_t bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace edgevit
