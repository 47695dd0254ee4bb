// Acquire + release with no I/O: the pool's own cost per borrow.
//
// A fake connection factory (tests/support/fakes.h) stands in for the
// database, but time is real (Clock::system()), because real time is what is
// measured. Each variant is one pool of 10 ready connections, shared by the
// benchmark's threads (1 and 2). Two floors give the numbers context on the
// machine at hand: one steady_clock read and one locked deque push/pop.
// For reference, a hand-written mutex + condition_variable pool over the
// same fake connections does the same cycle.
//
//   bench_acquire [--benchmark_* flags]
//
// Prints Google Benchmark's table (or JSON with --benchmark_format=json);
// "items_per_second" is cycles per second over all threads.

#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fakes.h"
#include "poolscope/logging.h"
#include "poolscope/pool.h"
#include "poolscope/pool_metrics.h"

namespace {

using poolscope::Pool;
using poolscope::PoolConfig;

constexpr std::size_t kPoolSize = 10;

/// One pool on fake connections, optionally published through PoolMetrics.
struct FakePool {
  FakePool(bool with_metrics, bool leak_detection) {
    PoolConfig config;
    config.name = std::string(with_metrics ? "metrics" : "bare") + (leak_detection ? "_leak" : "");
    config.min_size = kPoolSize;
    config.max_size = kPoolSize;
    config.enable_leak_detection = leak_detection;
    config.log_level = poolscope::LogLevel::kWarning;
    pool = std::make_unique<Pool>(config,
                                  std::make_shared<poolscope::testing::FakeFactory>(
                                      std::make_shared<poolscope::testing::FakeServer>()),
                                  poolscope::Clock::system());
    if (!pool->wait_until_ready()) throw std::runtime_error("fake pool did not start");
    if (with_metrics) {
      metrics = std::make_unique<poolscope::PoolMetrics>();
      metrics->add(*pool);
    }
  }
  ~FakePool() {
    if (metrics) metrics->remove(*pool);
  }

  std::unique_ptr<Pool> pool;
  std::unique_ptr<poolscope::PoolMetrics> metrics;
};

void cycle_poolscope(benchmark::State& state, Pool* pool) {
  for (auto _ : state) {
    auto connection = pool->acquire();
    benchmark::DoNotOptimize(connection);
  }
  state.SetItemsProcessed(state.iterations());
}

/// What people write by hand: a vector of connections, one mutex, one
/// condition variable, notify_one on release. Not FIFO.
class NaivePool {
 public:
  explicit NaivePool(std::size_t size) {
    auto server = std::make_shared<poolscope::testing::FakeServer>();
    poolscope::testing::FakeFactory factory(server);
    for (std::size_t i = 0; i < size; ++i) idle_.push_back(factory.connect());
  }
  std::unique_ptr<poolscope::Connection> acquire() {
    std::unique_lock lock(mutex_);
    available_.wait(lock, [this] { return !idle_.empty(); });
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    return connection;
  }
  void release(std::unique_ptr<poolscope::Connection> connection) {
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(connection));
    }
    available_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<poolscope::Connection>> idle_;
};

void cycle_naive(benchmark::State& state, NaivePool* pool) {
  for (auto _ : state) {
    auto connection = pool->acquire();
    benchmark::DoNotOptimize(connection);
    pool->release(std::move(connection));
  }
  state.SetItemsProcessed(state.iterations());
}

void floor_steady_clock(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(std::chrono::steady_clock::now());
  state.SetItemsProcessed(state.iterations());
}

// The clock the pool reads (twice per cycle): Clock::system().
void floor_pool_clock(benchmark::State& state) {
  const auto clock = poolscope::Clock::system();
  for (auto _ : state) benchmark::DoNotOptimize(clock->now());
  state.SetItemsProcessed(state.iterations());
}

struct LockedDeque {
  std::mutex mutex;
  std::deque<int> items{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
};

void floor_locked_deque(benchmark::State& state, LockedDeque* deque) {
  for (auto _ : state) {
    int item;
    {
      std::lock_guard lock(deque->mutex);
      item = deque->items.back();
      deque->items.pop_back();
    }
    benchmark::DoNotOptimize(item);
    std::lock_guard lock(deque->mutex);
    deque->items.push_back(item);
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename Fn, typename... Args>
void add(const std::string& name, Fn fn, Args... args) {
  benchmark::RegisterBenchmark(name.c_str(), fn, args...)
      ->Threads(1)
      ->Threads(2)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
}

int run(int argc, char** argv) {
  poolscope::configure_logging(poolscope::LogLevel::kWarning);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  // Built before any benchmark runs and destroyed after the last one, so the
  // pools' background threads start and stop outside the measurements.
  FakePool bare(false, false);
  FakePool bare_leak(false, true);
  FakePool metrics(true, false);
  FakePool metrics_leak(true, true);
  NaivePool naive(kPoolSize);
  LockedDeque deque;

  add("floor/steady_clock_now", floor_steady_clock);
  add("floor/pool_clock_now", floor_pool_clock);
  add("floor/locked_deque_pop_push", floor_locked_deque, &deque);
  add("naive_mutex_condvar", cycle_naive, &naive);
  add("poolscope/metrics_off/leak_off", cycle_poolscope, bare.pool.get());
  add("poolscope/metrics_off/leak_on", cycle_poolscope, bare_leak.pool.get());
  add("poolscope/metrics_on/leak_off", cycle_poolscope, metrics.pool.get());
  add("poolscope/metrics_on/leak_on", cycle_poolscope, metrics_leak.pool.get());

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_acquire: %s\n", error.what());
    return 1;
  }
}
