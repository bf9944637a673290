// The thread pool every CPU kernel's parallel phases run on (cpu::pool_parallel_for).
//
// Why not at::parallel_for (OpenMP, static split): a phase there ends at a barrier that waits
// for every thread, so when one core is busy with another process the phase waits for the OS to
// give the thread on that core a timeslice (milliseconds) before it even starts its half. A
// forward has ~50 such phases. Here the calling thread takes chunks itself and waits only for
// chunks a worker has already claimed: a worker that is not running when the phase starts simply
// gets nothing to do. Chunks are claimed dynamically, so the result of a task never depends on
// which thread ran it (every output element is written by one task; see lgl_fused.h).
#pragma once

#include <cstdint>
#include <functional>

namespace edgevit {
namespace cpu {

using TaskFn = std::function<void(int64_t begin, int64_t end)>;

// Runs fn over [0, n) in chunks of at least `grain` tasks on up to `threads` threads, the
// calling thread included, and returns when all of [0, n) has run (rethrowing the first
// exception a chunk threw). Runs inline when one chunk or thread is all there is, when called
// from inside a task (nesting), or while another thread's phase holds the pool.
void pool_parallel_for(int64_t n, int64_t grain, int threads, const TaskFn& fn);

// Chunks a phase of n tasks is split into for `threads` threads: a few per thread, so that a
// worker that is descheduled mid-chunk holds up only a small part of the phase.
int64_t pool_chunks(int64_t n, int threads);

// What the pool is: workers started so far, and the chunks per thread (for cpu_info()).
struct PoolInfo {
  int workers;
  int chunks_per_thread;
};
PoolInfo pool_info();

}  // namespace cpu
}  // namespace edgevit
