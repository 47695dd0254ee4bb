#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

namespace poolscope {
class Pool;
}

namespace poolscope::exporter {

/// Synthetic load on a pool (`--workload.workers`): each worker thread borrows
/// a connection, runs `SELECT pg_sleep(hold)`, gives it back and then pauses
/// for `hold` (think time, as a service between requests), over and over, so
/// demos and end-to-end tests see a pool that is used but not pinned: idle
/// connections still get their background validation. Errors (timeouts,
/// outages) are counted by the pool and retried after a short pause.
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
  /// Waits `duration` or until stop(); false once stopping.
  bool pause(std::chrono::milliseconds duration);

  Pool& pool_;
  const std::chrono::milliseconds hold_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;                  // for wake_ only
  std::condition_variable wake_;      // notified by stop()
  std::vector<std::thread> workers_;  // touched only by the owner thread
};

}  // namespace poolscope::exporter
