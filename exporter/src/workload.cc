#include "workload.h"

#include <fmt/format.h>

#include <exception>
#include <pqxx/pqxx>

#include "exporter_log.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"

namespace poolscope::exporter {

Workload::Workload(Pool& pool, std::size_t workers, std::chrono::milliseconds hold)
    : pool_(pool), hold_(hold) {
  workers_.reserve(workers);
  for (std::size_t i = 0; i < workers; ++i) workers_.emplace_back([this] { run(); });
}

Workload::~Workload() { stop(); }

void Workload::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

void Workload::run() {
  const std::string query =
      fmt::format("SELECT pg_sleep({:.3f})", std::chrono::duration<double>(hold_).count());
  // Short acquire timeout so that stop() is never stuck behind a long wait.
  constexpr auto kAcquireTimeout = std::chrono::milliseconds(500);
  constexpr auto kPauseAfterError = std::chrono::milliseconds(100);
  // Borrowing before min_size connections exist would make every worker
  // wait for a connect, and a demo pool start out DEGRADED for the whole
  // health window. (Returns at the init timeout when the database is down.)
  pool_.wait_until_ready();
  while (!stopping_.load()) {
    try {
      PooledConnection connection = pool_.acquire(kAcquireTimeout);
      {
        pqxx::nontransaction work(*connection);
        work.exec(query);
      }
      connection.release();
      pause(hold_);
    } catch (const PoolClosed&) {
      return;
    } catch (const AcquireTimeout&) {
      // The pool is saturated or down; it counted the timeout. Try again.
    } catch (const std::exception& error) {
      log_event(LogLevel::kDebug, "Synthetic query failed", {{"error", error.what()}});
      pause(kPauseAfterError);
    }
  }
}

bool Workload::pause(std::chrono::milliseconds duration) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, duration, [this] { return stopping_.load(); });
}

}  // namespace poolscope::exporter
