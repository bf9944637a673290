#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#if !defined(_WIN32)
#include <pthread.h>
#endif

namespace edgevit {
namespace cpu {
namespace {

// A few chunks per thread: small enough that a preempted worker's chunk is a small part of a
// phase, large enough that claiming (one CAS) and the per-chunk setup of a task stay negligible.
constexpr int kChunksPerThread = 4;
// A worker spins this long after its last chunk before it sleeps: most gaps between two phases
// of one op are shorter, and waking a sleeping thread costs a system call and a scheduler round
// trip. Kept short because a spinning worker uses up its share of a core that another process
// wants: the scheduler then favours that process when the next phase needs the core, and a
// thread that slept is the one it wakes first (docs/performance-notes.md, "Worker spin").
constexpr auto kWorkerSpin = std::chrono::microseconds(30);
// The caller spins this long for claimed chunks to finish before it starts yielding its core.
constexpr auto kCallerSpin = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

thread_local bool tl_in_pool = false;  // set in workers, and in the caller while it runs chunks

// The phase being run. `state` packs the job's generation (high 32 bits) with the next chunk to
// claim (low 32): a claim is one CAS that succeeds only for the generation the claimer read the
// job's fields under, so a worker that wakes late can never run a chunk of a later job with the
// function of an earlier one. A new job first closes the finished generation (its next chunk set
// to kClosed, which no chunk count reaches), then writes its fields, then publishes its own
// generation. Without the close, a late worker of generation G that read the next job's fields
// (a larger chunk count) while `state` still said G could claim "chunk i of G" and run the next
// job's function on it before that job was published: that chunk ran twice and the `done` count
// of the new job could be reached early, returning while a chunk still ran.
constexpr uint64_t kClosed = 0xffffffffu;

struct Pool {
  std::mutex run_mutex;  // one phase at a time (held by the caller for the whole phase)
  uint32_t last_gen = 0;  // under run_mutex

  std::atomic<uint64_t> state{0};
  std::atomic<uint32_t> published{0};
  std::atomic<const TaskFn*> fn{nullptr};
  std::atomic<int64_t> n{0}, grain_chunks{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> active{0};  // workers 0 .. active-1 take part in this phase
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception a chunk threw (under error_mutex)
  std::mutex error_mutex;

  std::mutex sleep_mutex;
  std::condition_variable wake;
  std::atomic<int> sleepers{0};

  std::atomic<int> started{0};
  std::vector<std::thread> workers;  // under run_mutex; detached, the pool is never destroyed

  static int64_t chunk_begin(int64_t c, int64_t n, int64_t chunks) {
    const int64_t base = n / chunks, rem = n % chunks;
    return c * base + std::min(c, rem);
  }

  bool claim(uint32_t gen, int64_t chunks, int64_t* c) {
    uint64_t s = state.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(s >> 32) != gen) return false;
      const int64_t i = static_cast<int64_t>(s & 0xffffffffu);
      if (i >= chunks) return false;
      if (state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        *c = i;
        return true;
      }
    }
  }

  // Claims and runs chunks of generation `gen` until none is left.
  void run_chunks(uint32_t gen) {
    const TaskFn* f = fn.load(std::memory_order_acquire);
    const int64_t total = n.load(std::memory_order_acquire);
    const int64_t chunks = grain_chunks.load(std::memory_order_acquire);
    int64_t c;
    while (claim(gen, chunks, &c)) {
      if (!failed.load(std::memory_order_relaxed)) {
        try {
          (*f)(chunk_begin(c, total, chunks), chunk_begin(c + 1, total, chunks));
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
          failed.store(true, std::memory_order_relaxed);
        }
      }
      done.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void worker_loop(int index) {
    tl_in_pool = true;
    uint32_t seen = published.load(std::memory_order_acquire);
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + kWorkerSpin;
      uint32_t gen;
      for (int i = 0;; ++i) {
        gen = published.load(std::memory_order_acquire);
        if (gen != seen) break;
        cpu_relax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(sleep_mutex);
          sleepers.fetch_add(1);
          wake.wait(lock, [&] { return published.load() != seen; });
          sleepers.fetch_sub(1);
          gen = published.load(std::memory_order_acquire);
          break;
        }
      }
      seen = gen;
      if (index < active.load(std::memory_order_acquire)) run_chunks(gen);
    }
  }

  void ensure_workers(int count) {  // under run_mutex
    while (static_cast<int>(workers.size()) < count) {
      const int index = static_cast<int>(workers.size());
      workers.emplace_back([this, index] { worker_loop(index); });
      workers.back().detach();
      started.store(static_cast<int>(workers.size()));
    }
  }

  void run(int64_t total, int64_t chunks, int threads, const TaskFn& f) {  // under run_mutex
    ensure_workers(threads - 1);
    // Before any field changes: a worker that reads a field written below also sees this.
    state.store((static_cast<uint64_t>(last_gen) << 32) | kClosed);
    fn.store(&f, std::memory_order_release);
    n.store(total, std::memory_order_release);
    grain_chunks.store(chunks, std::memory_order_release);
    done.store(0, std::memory_order_release);
    active.store(threads - 1, std::memory_order_release);
    failed.store(false, std::memory_order_relaxed);
    error = nullptr;
    const uint32_t gen = ++last_gen;
    state.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    published.store(gen);  // seq_cst, paired with the sleepers count (no lost wake-up)
    if (sleepers.load() > 0) {
      std::lock_guard<std::mutex> lock(sleep_mutex);
      wake.notify_all();
    }
    tl_in_pool = true;
    run_chunks(gen);
    tl_in_pool = false;
    // Only chunks a worker has claimed are outstanding: it is running them now.
    const auto spin_until = std::chrono::steady_clock::now() + kCallerSpin;
    for (int i = 0; done.load(std::memory_order_acquire) < chunks; ++i) {
      cpu_relax();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) std::this_thread::yield();
    }
    if (error) std::rethrow_exception(error);
  }
};

std::atomic<Pool*> g_pool{nullptr};

#if !defined(_WIN32)
// A forked child has none of the parent's workers (and maybe a held mutex): it starts a pool of
// its own on first use. The parent's pool object is left behind on purpose.
void forget_pool_in_child() { g_pool.store(nullptr); }
#endif

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
#if !defined(_WIN32)
  static const int registered = pthread_atfork(nullptr, nullptr, forget_pool_in_child);
  (void)registered;
#endif
  auto fresh = std::make_unique<Pool>();
  Pool* expected = nullptr;
  if (g_pool.compare_exchange_strong(expected, fresh.get())) return *fresh.release();
  return *expected;
}

}  // namespace

int64_t pool_chunks(int64_t n, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>(n, static_cast<int64_t>(threads) * kChunksPerThread));
}

void pool_parallel_for(int64_t n, int64_t grain, int threads, const TaskFn& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = (n + grain - 1) / grain;
  threads = static_cast<int>(std::min<int64_t>(threads, max_chunks));
  if (threads <= 1 || tl_in_pool) {
    fn(0, n);
    return;
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> lock(p.run_mutex, std::try_to_lock);
  if (!lock.owns_lock()) {  // another thread's phase is running: run this one here, serially
    fn(0, n);
    return;
  }
  p.run(n, std::min(pool_chunks(n, threads), max_chunks), threads, fn);
}

PoolInfo pool_info() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  return {p ? p->started.load() : 0, kChunksPerThread};
}

}  // namespace cpu
}  // namespace edgevit
