#pragma once

// Worker threads that keep borrowing connections from a pool and running a
// statement on each, classifying every outcome. Used by the fault tests to
// keep a pool under load while the database misbehaves.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "poolscope/error.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {

/// Thrown by a request body on purpose, to check that the handle still goes back.
struct InjectedFault : std::runtime_error {
  InjectedFault() : std::runtime_error("injected fault") {}
};

/// What happened to the requests of a LoadGenerator.
struct LoadTotals {
  std::uint64_t ok = 0;                 ///< the statement ran
  std::uint64_t acquire_timeouts = 0;   ///< acquire() threw AcquireTimeout
  std::uint64_t pool_closed = 0;        ///< acquire() threw PoolClosed
  std::uint64_t broken_connection = 0;  ///< the statement threw pqxx::broken_connection
  std::uint64_t sql_error = 0;          ///< the statement threw pqxx::sql_error
  std::uint64_t injected = 0;           ///< the body threw InjectedFault on purpose
  std::uint64_t unexpected = 0;         ///< anything else: a test failure
  /// A connection that had failed with broken_connection was handed out again.
  std::uint64_t dead_connection_reused = 0;
  double longest_acquire_seconds = 0;          ///< longest acquire() call, also when it threw
  std::map<std::string, std::string> samples;  ///< one message per outcome kind

  std::uint64_t requests() const {
    return ok + acquire_timeouts + pool_closed + broken_connection + sql_error + injected +
           unexpected;
  }
  std::uint64_t failed() const { return requests() - ok - injected; }
};

class LoadGenerator {
 public:
  /// Runs on a borrowed connection; may throw. The default runs `statement`.
  using Body = std::function<void(PooledConnection&, std::mt19937_64&)>;

  LoadGenerator(Pool& pool, std::size_t workers, std::string statement, Body body = {})
      : pool_(pool), statement_(std::move(statement)), body_(std::move(body)) {
    for (std::size_t i = 0; i < workers; ++i) {
      threads_.emplace_back([this, i] { run(i); });
    }
  }

  ~LoadGenerator() {
    stop(std::chrono::seconds(120));
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.detach();  // only after a failed stop(): we are exiting
    }
  }

  /// Stops new requests and waits (bounded) until no worker holds or waits
  /// for a connection. Returns false when that did not happen in time.
  bool pause(std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    std::unique_lock lock(mutex_);
    paused_ = true;
    return changed_.wait_for(lock, limit, [this] { return busy_ == 0; });
  }

  void resume() {
    std::lock_guard lock(mutex_);
    paused_ = false;
    changed_.notify_all();
  }

  /// Ends the load and joins the workers if they all finish within `limit`.
  /// Returns false (and leaves them running) when they do not: a hang.
  bool stop(std::chrono::milliseconds limit) {
    {
      std::unique_lock lock(mutex_);
      stopping_ = true;
      changed_.notify_all();
      if (!changed_.wait_for(lock, limit, [this] { return finished_ == threads_.size(); })) {
        return false;
      }
    }
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    return true;
  }

  /// Requests that ran their statement so far.
  std::uint64_t served() const { return ok_.load(); }

  LoadTotals totals() const {
    std::lock_guard lock(mutex_);
    LoadTotals totals = totals_;
    totals.ok = ok_.load();
    return totals;
  }

 private:
  void record(std::uint64_t LoadTotals::*counter, const std::string& kind,
              const std::string& what) {
    std::lock_guard lock(mutex_);
    ++(totals_.*counter);
    totals_.samples.try_emplace(kind, what);
  }

  void run(std::size_t index) {
    std::mt19937_64 random(0x5eed + index);
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [this] { return stopping_ || !paused_; });
        if (stopping_) break;
        ++busy_;
      }
      request(random);
      {
        std::lock_guard lock(mutex_);
        --busy_;
        changed_.notify_all();
      }
    }
    std::lock_guard lock(mutex_);
    ++finished_;
    changed_.notify_all();
  }

  void request(std::mt19937_64& random) {
    const auto started = std::chrono::steady_clock::now();
    auto note_acquire_time = [&] {
      const double took =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::lock_guard lock(mutex_);
      totals_.longest_acquire_seconds = std::max(totals_.longest_acquire_seconds, took);
    };
    PooledConnection connection;
    try {
      connection = pool_.acquire();
    } catch (const AcquireTimeout& error) {
      note_acquire_time();
      record(&LoadTotals::acquire_timeouts, "acquire_timeout", error.what());
      return;
    } catch (const PoolClosed& error) {
      note_acquire_time();
      record(&LoadTotals::pool_closed, "pool_closed", error.what());
      return;
    } catch (const std::exception& error) {
      note_acquire_time();
      record(&LoadTotals::unexpected, "unexpected from acquire", error.what());
      return;
    }
    note_acquire_time();
    const std::uint64_t id = connection.id();
    {
      std::lock_guard lock(mutex_);
      if (dead_ids_.count(id) != 0) {
        ++totals_.dead_connection_reused;
        totals_.samples.try_emplace("dead_connection_reused", "conn_" + std::to_string(id));
      }
    }
    try {
      if (body_) {
        body_(connection, random);
      } else {
        pqxx::nontransaction transaction(*connection);
        transaction.exec(statement_);
      }
      ++ok_;
    } catch (const InjectedFault&) {
      std::lock_guard lock(mutex_);
      ++totals_.injected;
    } catch (const pqxx::broken_connection& error) {
      {
        std::lock_guard lock(mutex_);
        dead_ids_.insert(id);
      }
      record(&LoadTotals::broken_connection, "broken_connection", error.what());
    } catch (const pqxx::sql_error& error) {
      if (!connection.connection().is_open()) {
        std::lock_guard lock(mutex_);
        dead_ids_.insert(id);
      }
      record(&LoadTotals::sql_error, "sql_error " + error.sqlstate(), error.what());
    } catch (const std::exception& error) {
      record(&LoadTotals::unexpected, "unexpected from statement", error.what());
    }
  }

  Pool& pool_;
  const std::string statement_;
  const Body body_;
  std::atomic<std::uint64_t> ok_{0};

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool paused_ = false;
  bool stopping_ = false;
  std::size_t busy_ = 0;
  std::size_t finished_ = 0;
  LoadTotals totals_;
  std::set<std::uint64_t> dead_ids_;
  std::vector<std::thread> threads_;
};

/// One line per outcome kind, for the test output.
inline std::string describe(const LoadTotals& totals) {
  std::string text = "requests=" + std::to_string(totals.requests()) +
                     " ok=" + std::to_string(totals.ok) +
                     " acquire_timeout=" + std::to_string(totals.acquire_timeouts) +
                     " pool_closed=" + std::to_string(totals.pool_closed) +
                     " broken_connection=" + std::to_string(totals.broken_connection) +
                     " sql_error=" + std::to_string(totals.sql_error) +
                     " injected=" + std::to_string(totals.injected) +
                     " unexpected=" + std::to_string(totals.unexpected) +
                     " dead_connection_reused=" + std::to_string(totals.dead_connection_reused) +
                     " longest_acquire_s=" + std::to_string(totals.longest_acquire_seconds);
  for (const auto& [kind, message] : totals.samples) {
    std::string line = message;
    std::replace(line.begin(), line.end(), '\n', ' ');
    text += "\n    e.g. " + kind + ": " + line;
  }
  return text;
}

/// Stops `load`; when its workers do not finish in time (a deadlock or a
/// hang), reports, removes `cluster` and ends the process at once: unwinding
/// would block on the stuck threads and leave the cluster behind.
template <typename Cluster>
void stop_or_exit(LoadGenerator& load, Cluster& cluster, std::chrono::milliseconds limit) {
  if (load.stop(limit)) return;
  std::cerr << "FATAL: load workers still busy after " << limit.count()
            << " ms: deadlock or hang in the pool\n"
            << describe(load.totals()) << std::endl;
  cluster.destroy();
  std::_Exit(1);
}

}  // namespace poolscope::chaos
