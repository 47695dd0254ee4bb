#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>
#include <vector>

namespace poolscope {
class Pool;
}

namespace poolscope::exporter {

/// Synthetic load on a pool (`--workload.workers`): each worker thread keeps
/// borrowing a connection, running `SELECT pg_sleep(hold)` and giving it back,
/// so demos and end-to-end tests see a pool that is actually used. Errors
/// (timeouts, outages) are counted by the pool and retried after a short pause.
///
/// Thread-safe: stop() may be called from any thread; the pool must outlive
/// this object.
class Workload {
 public:
  Workload(Pool& pool, std::size_t workers, std::chrono::milliseconds hold);
  /// Stops (see stop()).
  ~Workload();

  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  /// Asks the workers to finish their current query and joins them. Idempotent.
  void stop();

 private:
  void run();

  Pool& pool_;
  const std::chrono::milliseconds hold_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;  // touched only by the owner thread
};

}  // namespace poolscope::exporter
