#include "poolscope/pool_metrics.h"

#include <algorithm>
#include <stdexcept>

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "poolscope/pool.h"

namespace poolscope {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

const std::vector<double> kHoldBuckets = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
                                          0.5,    1,      5,     10,    30,   60};
const std::vector<double> kCreateBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,   0.25,   0.5,   1,    2.5,   5, 10};

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// Feeds one pool's histograms from its hot path.
class HistogramObserver final : public PoolObserver {
 public:
  HistogramObserver(prometheus::Histogram& acquisition, prometheus::Histogram& hold,
                    prometheus::Histogram& create)
      : acquisition_(acquisition), hold_(hold), create_(create) {}

  void on_acquired(std::chrono::nanoseconds waited) noexcept override {
    acquisition_.Observe(seconds(waited));
  }
  void on_released(std::chrono::nanoseconds held) noexcept override { hold_.Observe(seconds(held)); }
  void on_connection_created(std::chrono::nanoseconds took) noexcept override {
    create_.Observe(seconds(took));
  }

 private:
  prometheus::Histogram& acquisition_;
  prometheus::Histogram& hold_;
  prometheus::Histogram& create_;
};

// Builds the snapshot families in a fixed order, one series per pool.
class FamilyBuilder {
 public:
  explicit FamilyBuilder(std::string prefix) : prefix_(std::move(prefix)) {}

  void add(const std::string& name, const std::string& help, MetricType type,
           std::vector<ClientMetric::Label> labels, double value) {
    auto it = std::find_if(families_.begin(), families_.end(),
                           [&](const MetricFamily& f) { return f.name == prefix_ + name; });
    if (it == families_.end()) {
      families_.push_back(MetricFamily{prefix_ + name, help, type, {}});
      it = families_.end() - 1;
    }
    ClientMetric metric;
    metric.label = std::move(labels);
    if (type == MetricType::Counter) {
      metric.counter.value = value;
    } else if (type == MetricType::Untyped) {
      metric.untyped.value = value;
    } else {
      metric.gauge.value = value;
    }
    it->metric.push_back(std::move(metric));
  }

  std::vector<MetricFamily> take() { return std::move(families_); }

 private:
  std::string prefix_;
  std::vector<MetricFamily> families_;
};

void collect_pool(FamilyBuilder& out, const PoolStatistics& s, const std::string& version) {
  using L = std::vector<ClientMetric::Label>;
  const L pool{{"pool", s.pool_name}};
  auto with = [&](const std::string& name, const std::string& value) {
    L labels{{name, value}, {"pool", s.pool_name}};
    std::sort(labels.begin(), labels.end());
    return labels;
  };
  const auto gauge = MetricType::Gauge;
  const auto counter = MetricType::Counter;
  auto n = [](auto v) { return static_cast<double>(v); };

  // The guide's name ends in _total, which Prometheus reserves for counters;
  // typed as a gauge it fails `promtool check metrics`. Untyped keeps the
  // name and is queried exactly like a gauge.
  out.add("connections_total", "Total number of connections in pool (a gauge: idle + active)",
          MetricType::Untyped, pool, n(s.total_connections));
  out.add("connections_idle", "Number of idle connections available", gauge, pool, n(s.idle_connections));
  out.add("connections_active", "Number of active connections in use", gauge, pool, n(s.active_connections));
  out.add("connections_pending", "Number of connections being opened", gauge, pool, n(s.pending_connections));
  out.add("connections_leaked", "Connections held longer than the leak detection timeout", gauge, pool,
          n(s.leaked_connections));
  out.add("oldest_held_connection_seconds",
          "Age of the longest-held connection now lent out, leaked or not (0 when none is)", gauge,
          pool, s.oldest_held_seconds);
  // At most kMaxLeakSitesReported series per pool: the sites with the most
  // leaked connections right now.
  for (const LeakSite& site : s.leak_sites) {
    L labels{{"function", site.function},
             {"pool", s.pool_name},
             {"site", site.file + ":" + std::to_string(site.line)}};
    out.add("leaked_connections_by_site",
            "Connections held longer than the leak detection timeout, by acquisition site", gauge,
            std::move(labels), n(site.connections));
  }
  out.add("waiting_requests", "Number of requests waiting for connections", gauge, pool, n(s.waiting_requests));
  out.add("max_connections", "Configured maximum pool size", gauge, pool, n(s.max_size));
  out.add("min_connections", "Configured minimum pool size", gauge, pool, n(s.min_size));
  out.add("peak_active_connections", "Most connections active at once in the last 60 seconds", gauge,
          pool, n(s.recent_peak_active_connections));
  out.add("peak_wait_seconds", "Longest wait for a connection in the last 60 seconds", gauge, pool,
          s.recent_peak_wait_time_ms / 1000.0);
  out.add("health_status", "Connection pool health status (0 healthy, 1 degraded, 2 unhealthy)",
          gauge, pool, n(static_cast<int>(s.health)));
  for (std::size_t i = 0; i < kPoolStateCount; ++i) {
    const auto state = static_cast<PoolState>(i);
    out.add("state", "Connection pool lifecycle state (1 for the current state)", gauge,
            with("state", std::string(to_string(state))), s.state == state ? 1.0 : 0.0);
  }
  out.add("acquisitions_total", "Total number of connection acquisitions", counter, pool,
          n(s.total_acquisitions));
  out.add("releases_total", "Total number of connection releases", counter, pool, n(s.total_releases));
  out.add("acquire_timeouts_total", "Acquisitions that timed out waiting for a connection", counter,
          pool, n(s.acquire_timeouts));
  for (std::size_t i = 0; i < kErrorTypeCount; ++i) {
    out.add("errors_total", "Total number of pool errors", counter,
            with("error_type", std::string(to_string(static_cast<ErrorType>(i)))), n(s.errors[i]));
  }
  out.add("connections_created_total", "Connections opened", counter, pool, n(s.connections_created));
  for (std::size_t i = 0; i < kCloseReasonCount; ++i) {
    out.add("connections_closed_total", "Connections closed, by reason", counter,
            with("reason", std::string(to_string(static_cast<CloseReason>(i)))),
            n(s.connections_closed[i]));
  }
  out.add("leaks_detected_total", "Connections reported as potentially leaked", counter, pool,
          n(s.leaks_detected));
  out.add("resizes_total", "Run-time changes of max_size or min_size", counter, pool,
          n(s.resizes));
  out.add("drains_total", "Run-time drains (every connection recycled)", counter, pool,
          n(s.drains));
  out.add("reconnect_attempts_total", "Reconnection attempts while the database was unreachable",
          counter, pool, n(s.reconnect_attempts));
  out.add("created_timestamp_seconds", "Unix time the pool was created", gauge, pool,
          unix_seconds(s.pool_created_at));
  if (s.last_health_check) {
    out.add("last_health_check_timestamp_seconds", "Unix time of the last successful health check",
            gauge, pool, unix_seconds(*s.last_health_check));
  }
  out.add("build_info", "poolscope build information", gauge, with("version", version), 1.0);
}

}  // namespace

struct PoolMetrics::State {
  std::shared_ptr<prometheus::Registry> registry;
  MetricsOptions options;
  prometheus::Family<prometheus::Histogram>* acquisition = nullptr;
  prometheus::Family<prometheus::Histogram>* hold = nullptr;
  prometheus::Family<prometheus::Histogram>* create = nullptr;
  mutable std::mutex mutex;
  std::vector<Pool*> pools;  // guarded by mutex
};

const std::vector<double>& PoolMetrics::acquisition_buckets() {
  static const std::vector<double> buckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                              0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                              0.5,     1,      2.5,     5,      10,    30};
  return buckets;
}

PoolMetrics::PoolMetrics(std::shared_ptr<prometheus::Registry> registry, MetricsOptions options)
    : state_(std::make_shared<State>()) {
  if (!registry) throw std::invalid_argument("poolscope::PoolMetrics needs a registry");
  state_->registry = std::move(registry);
  state_->options = std::move(options);
  const auto& prefix = state_->options.prefix;
  state_->acquisition = &prometheus::BuildHistogram()
                             .Name(prefix + "acquisition_duration_seconds")
                             .Help("Time to acquire connection from pool")
                             .Register(*state_->registry);
  state_->hold = &prometheus::BuildHistogram()
                      .Name(prefix + "connection_hold_duration_seconds")
                      .Help("How long callers hold a connection")
                      .Register(*state_->registry);
  state_->create = &prometheus::BuildHistogram()
                        .Name(prefix + "connection_create_duration_seconds")
                        .Help("Time to open and validate a new connection")
                        .Register(*state_->registry);
}

PoolMetrics::~PoolMetrics() = default;

void PoolMetrics::add(Pool& pool) {
  std::lock_guard lock(state_->mutex);
  const std::string& name = pool.config().name;
  for (const Pool* existing : state_->pools) {
    if (existing->config().name == name) {
      throw std::invalid_argument("poolscope::PoolMetrics: a pool named '" + name +
                                  "' is already published; give pools distinct names");
    }
  }
  const prometheus::Labels labels{{"pool", name}};
  auto& acquisition = state_->acquisition->Add(labels, acquisition_buckets());
  auto& hold = state_->hold->Add(labels, kHoldBuckets);
  auto& create = state_->create->Add(labels, kCreateBuckets);
  pool.add_observer(std::make_shared<HistogramObserver>(acquisition, hold, create));
  state_->pools.push_back(&pool);
}

void PoolMetrics::remove(const Pool& pool) {
  std::lock_guard lock(state_->mutex);
  std::erase(state_->pools, &pool);
}

std::vector<prometheus::MetricFamily> PoolMetrics::Collect() const {
  std::vector<Pool*> pools;
  {
    std::lock_guard lock(state_->mutex);
    pools = state_->pools;
  }
  FamilyBuilder builder(state_->options.prefix);
  for (Pool* pool : pools) collect_pool(builder, pool->get_statistics(), state_->options.version);
  return builder.take();
}

}  // namespace poolscope
