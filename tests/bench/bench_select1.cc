// Load driver: N worker threads borrow a connection, run SELECT 1, give it
// back, for a fixed time, through poolscope or through a hand-written
// mutex + condition_variable pool over the same libpqxx query path.
// Two pool-less baselines show what the client side costs by itself: every
// worker on its own libpqxx connection ("direct"), and every worker on its
// own bare libpq connection ("direct-libpq", PQexec / PQexecPrepared).
//
//   DATABASE_URL=... bench_select1 --pool=poolscope|naive|direct|direct-libpq --workers=N
//       [--max-size=10] [--seconds=5] [--warmup=1] [--query=simple|prepared]
//       [--metrics=on|off] [--leak-detection=on|off]
//       [--queue-policy=barging|fifo] [--barging-wait-bound=1ms]   (poolscope only)
//
// Prints one JSON object: queries/s, acquire latency percentiles (the time
// from asking for a connection to holding it), errors, and the spread of
// completed queries per worker (min/max: starvation shows as a small min).

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "poolscope/error.h"
#include "poolscope/logging.h"
#include "poolscope/pool.h"
#include "poolscope/pool_metrics.h"

namespace {

using Clock = std::chrono::steady_clock;

// Keeps the scraper's work observable so it is not optimised away.
std::atomic<std::size_t> scrape_sink{0};

struct Options {
  std::string pool = "poolscope";
  std::size_t workers = 10;
  std::size_t max_size = 10;
  double seconds = 5.0;
  double warmup = 1.0;
  std::string query = "simple";
  bool metrics = false;
  bool leak_detection = true;
  poolscope::QueuePolicy queue_policy = poolscope::PoolConfig{}.queue_policy;
  std::chrono::milliseconds barging_wait_bound = poolscope::PoolConfig{}.barging_wait_bound;
  std::string database_url;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "bench_select1: " << problem << "\n"
            << "usage: DATABASE_URL=... bench_select1 --pool=poolscope|naive|direct|direct-libpq "
               "--workers=N "
               "[--max-size=10] [--seconds=5] [--warmup=1] [--query=simple|prepared] "
               "[--metrics=on|off] [--leak-detection=on|off] "
               "[--queue-policy=barging|fifo] [--barging-wait-bound=DURATION]\n";
  std::exit(2);
}

bool parse_switch(std::string_view flag, std::string_view value) {
  if (value == "on") return true;
  if (value == "off") return false;
  usage(std::string(flag) + " expects on or off, got '" + std::string(value) + "'");
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto eq = arg.find('=');
    if (!arg.starts_with("--") || eq == std::string_view::npos)
      usage("bad argument '" + std::string(arg) + "'");
    const std::string_view flag = arg.substr(0, eq);
    const std::string value(arg.substr(eq + 1));
    try {
      if (flag == "--pool") {
        options.pool = value;
      } else if (flag == "--workers") {
        options.workers = std::stoul(value);
      } else if (flag == "--max-size") {
        options.max_size = std::stoul(value);
      } else if (flag == "--seconds") {
        options.seconds = std::stod(value);
      } else if (flag == "--warmup") {
        options.warmup = std::stod(value);
      } else if (flag == "--query") {
        options.query = value;
      } else if (flag == "--metrics") {
        options.metrics = parse_switch(flag, value);
      } else if (flag == "--leak-detection") {
        options.leak_detection = parse_switch(flag, value);
      } else if (flag == "--queue-policy") {
        options.queue_policy = poolscope::parse_queue_policy(value, std::string(flag));
      } else if (flag == "--barging-wait-bound") {
        options.barging_wait_bound = poolscope::parse_duration(value, std::string(flag));
      } else {
        usage("unknown flag " + std::string(flag));
      }
    } catch (const poolscope::ConfigError& error) {
      usage(error.what());
    } catch (const std::logic_error&) {
      usage("bad value for " + std::string(flag));
    }
  }
  if (options.pool != "poolscope" && options.pool != "naive" && options.pool != "direct" &&
      options.pool != "direct-libpq") {
    usage("--pool is poolscope, naive, direct or direct-libpq");
  }
  if (options.query != "simple" && options.query != "prepared")
    usage("--query is simple or prepared");
  if (options.workers == 0 || options.max_size == 0 || options.seconds <= 0)
    usage("sizes and times must be positive");
  const char* url = std::getenv("DATABASE_URL");
  if (url == nullptr || *url == '\0') usage("DATABASE_URL is not set");
  options.database_url = url;
  return options;
}

// The query both pools run, so they are compared on the same client path.
// "simple": a nontransaction and the simple query protocol (what pgbench
// -M simple sends). "prepared": the same with a statement prepared once per
// connection (pgbench -M prepared); libpqxx prepares lazily on first use.
constexpr const char* kStatement = "poolscope_bench_select1";

bool run_select1(pqxx::connection& connection, bool prepared) {
  pqxx::nontransaction tx(connection);
  if (prepared) {
    connection.prepare(kStatement, "SELECT 1");  // a map lookup once defined
    return tx.exec_prepared(kStatement).size() == 1;
  }
  return tx.exec("SELECT 1").size() == 1;
}

/// What people write by hand: every connection opened up front, a vector of
/// idle ones, one mutex, one condition variable, notify_one on release.
/// Waiters are woken in no particular order.
class NaivePool {
 public:
  NaivePool(const std::string& url, std::size_t size) {
    for (std::size_t i = 0; i < size; ++i) idle_.push_back(std::make_unique<pqxx::connection>(url));
  }

  class Handle {
   public:
    Handle(NaivePool& pool, std::unique_ptr<pqxx::connection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    ~Handle() { pool_.release(std::move(connection_)); }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    pqxx::connection& operator*() const { return *connection_; }

   private:
    NaivePool& pool_;
    std::unique_ptr<pqxx::connection> connection_;
  };

  Handle acquire() {
    std::unique_lock lock(mutex_);
    available_.wait(lock, [this] { return !idle_.empty(); });
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    return {*this, std::move(connection)};
  }

 private:
  void release(std::unique_ptr<pqxx::connection> connection) {
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(connection));
    }
    available_.notify_one();
  }

  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
};

enum class Phase { kWarmup, kMeasure, kStop };

struct WorkerResult {
  std::vector<std::uint32_t> acquire_ns;  // measured phase only
  std::uint64_t queries = 0;
  std::uint64_t errors = 0;
};

/// Runs `cycle` on every worker through warmup and measurement; returns the
/// measured wall time. `cycle(result, record)` does one acquire/query/release.
template <typename Cycle>
double drive(const Options& options, std::vector<WorkerResult>& results, Cycle cycle) {
  std::atomic<Phase> phase{Phase::kWarmup};
  std::vector<std::thread> threads;
  results.resize(options.workers);
  for (std::size_t w = 0; w < options.workers; ++w) {
    threads.emplace_back([&, w] {
      WorkerResult& result = results[w];
      result.acquire_ns.reserve(1 << 16);
      for (;;) {
        const Phase now = phase.load(std::memory_order_relaxed);
        if (now == Phase::kStop) break;
        cycle(result, now == Phase::kMeasure);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(options.warmup));
  const auto started = Clock::now();
  phase.store(Phase::kMeasure);
  std::this_thread::sleep_for(std::chrono::duration<double>(options.seconds));
  phase.store(Phase::kStop);
  const auto stopped = Clock::now();
  for (auto& thread : threads) thread.join();
  return std::chrono::duration<double>(stopped - started).count();
}

std::uint32_t since(Clock::time_point started) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count();
  return static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX));
}

/// drive() with the cycle both pools are measured by: borrow from `pool`
/// (the acquire latency is the time until the handle is held), SELECT 1,
/// give the connection back when the handle goes out of scope. One template,
/// so poolscope and NaivePool run the same query path by construction.
template <typename Pool>
double drive_pooled(const Options& options, std::vector<WorkerResult>& results, Pool& pool) {
  const bool prepared = options.query == "prepared";
  return drive(options, results, [&](WorkerResult& result, bool record) {
    try {
      const auto started = Clock::now();
      auto connection = pool.acquire();
      if (record) result.acquire_ns.push_back(since(started));
      const bool ok = run_select1(*connection, prepared);
      if (record) ++(ok ? result.queries : result.errors);
    } catch (const std::exception&) {
      if (record) ++result.errors;
    }
  });
}

double run_poolscope(const Options& options, std::vector<WorkerResult>& results) {
  poolscope::PoolConfig config;
  config.database_url = options.database_url;
  config.name = "bench";
  config.min_size = options.max_size;  // all open before the clock starts
  config.max_size = options.max_size;
  // Opening all of them one after the other can pass the default 2 s on a
  // loaded machine; the clock starts only once they are open.
  config.init_timeout = std::chrono::seconds(30);
  config.enable_leak_detection = options.leak_detection;
  config.queue_policy = options.queue_policy;
  config.barging_wait_bound = options.barging_wait_bound;
  config.log_level = poolscope::LogLevel::kWarning;
  poolscope::Pool pool(config);
  if (!pool.wait_until_ready()) throw std::runtime_error("the pool did not open its connections");

  std::unique_ptr<poolscope::PoolMetrics> metrics;
  std::thread scraper;
  std::atomic<bool> stop_scraping{false};
  if (options.metrics) {
    metrics = std::make_unique<poolscope::PoolMetrics>();
    metrics->add(pool);
    // A scrape per second (Prometheus usually scrapes every 15 s): the
    // snapshot takes the pool lock, so it belongs in the measurement.
    scraper = std::thread([&] {
      while (!stop_scraping.load()) {
        scrape_sink += metrics->Collect().size();
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    });
  }
  const double seconds = drive_pooled(options, results, pool);
  stop_scraping = true;
  if (scraper.joinable()) scraper.join();
  if (metrics) metrics->remove(pool);
  return seconds;
}

double run_naive(const Options& options, std::vector<WorkerResult>& results) {
  NaivePool pool(options.database_url, options.max_size);
  return drive_pooled(options, results, pool);
}

// No pool: each worker owns one libpqxx connection for the whole run.
double run_direct(const Options& options, std::vector<WorkerResult>& results) {
  std::vector<std::unique_ptr<pqxx::connection>> connections;
  for (std::size_t i = 0; i < options.workers; ++i) {
    connections.push_back(std::make_unique<pqxx::connection>(options.database_url));
  }
  std::atomic<std::size_t> next{0};
  const bool prepared = options.query == "prepared";
  return drive(options, results, [&](WorkerResult& result, bool record) {
    thread_local pqxx::connection* mine = connections[next++].get();
    try {
      const bool ok = run_select1(*mine, prepared);
      if (record) ++(ok ? result.queries : result.errors);
    } catch (const std::exception&) {
      if (record) ++result.errors;
    }
  });
}

// No pool and no libpqxx: each worker owns one libpq connection.
double run_direct_libpq(const Options& options, std::vector<WorkerResult>& results) {
  struct Closer {
    void operator()(PGconn* connection) const { PQfinish(connection); }
  };
  std::vector<std::unique_ptr<PGconn, Closer>> connections;
  const bool prepared = options.query == "prepared";
  for (std::size_t i = 0; i < options.workers; ++i) {
    connections.emplace_back(PQconnectdb(options.database_url.c_str()));
    PGconn* connection = connections.back().get();
    if (PQstatus(connection) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(connection));
    if (prepared) {
      PGresult* result = PQprepare(connection, kStatement, "SELECT 1", 0, nullptr);
      const bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
      PQclear(result);
      if (!ok) throw std::runtime_error(PQerrorMessage(connection));
    }
  }
  std::atomic<std::size_t> next{0};
  return drive(options, results, [&](WorkerResult& result, bool record) {
    thread_local PGconn* mine = connections[next++].get();
    PGresult* answer = prepared ? PQexecPrepared(mine, kStatement, 0, nullptr, nullptr, nullptr, 0)
                                : PQexec(mine, "SELECT 1");
    const bool ok = PQresultStatus(answer) == PGRES_TUPLES_OK && PQntuples(answer) == 1;
    PQclear(answer);
    if (record) ++(ok ? result.queries : result.errors);
  });
}

int run(int argc, char** argv) {
  const Options options = parse(argc, argv);
  poolscope::configure_logging(poolscope::LogLevel::kWarning);
  std::vector<WorkerResult> results;
  double seconds = 0;
  try {
    if (options.pool == "poolscope") {
      seconds = run_poolscope(options, results);
    } else if (options.pool == "naive") {
      seconds = run_naive(options, results);
    } else if (options.pool == "direct") {
      seconds = run_direct(options, results);
    } else {
      seconds = run_direct_libpq(options, results);
    }
  } catch (const std::exception& error) {
    std::cerr << "bench_select1: " << error.what() << "\n";
    return 1;
  }

  std::vector<std::uint32_t> latencies;
  std::uint64_t queries = 0, errors = 0;
  std::uint64_t min_worker = UINT64_MAX, max_worker = 0;
  for (const auto& result : results) {
    latencies.insert(latencies.end(), result.acquire_ns.begin(), result.acquire_ns.end());
    queries += result.queries;
    errors += result.errors;
    min_worker = std::min(min_worker, result.queries);
    max_worker = std::max(max_worker, result.queries);
  }
  std::sort(latencies.begin(), latencies.end());
  // null for the pool-less baselines, which never acquire.
  auto percentile_us = [&](double p) -> nlohmann::json {
    if (latencies.empty()) return nullptr;
    const auto index = static_cast<std::size_t>(p * static_cast<double>(latencies.size() - 1));
    return latencies[index] / 1000.0;
  };
  const nlohmann::json report = {
      {"pool", options.pool},
      {"workers", options.workers},
      {"max_size", options.max_size},
      {"query", options.query},
      {"metrics", options.metrics},
      {"leak_detection", options.leak_detection},
      {"queue_policy", poolscope::to_string(options.queue_policy)},
      {"barging_wait_bound_ms", options.barging_wait_bound.count()},
      {"seconds", seconds},
      {"queries", queries},
      {"errors", errors},
      {"qps", static_cast<double>(queries) / seconds},
      {"acquire_p50_us", percentile_us(0.50)},
      {"acquire_p95_us", percentile_us(0.95)},
      {"acquire_p99_us", percentile_us(0.99)},
      {"acquire_max_us", percentile_us(1.0)},
      {"worker_queries_min", min_worker},
      {"worker_queries_max", max_worker},
  };
  std::cout << report.dump() << std::endl;
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "bench_select1: " << error.what() << "\n";
    return 1;
  }
}
