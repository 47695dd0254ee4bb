#include "poolscope/pool_metrics.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>

#include "latency_histogram.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"
#include "thread_annotations.h"

namespace poolscope {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

const std::vector<double> kHoldBuckets = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
                                          0.5,    1,      5,     10,    30,   60};
const std::vector<double> kCreateBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,    1,     2.5,  5,     10};

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// One pool's duration histograms, published under every naming in use.
struct PoolHistograms {
  detail::LatencyHistogram acquisition{PoolMetrics::acquisition_buckets()};
  detail::LatencyHistogram hold{kHoldBuckets};
  detail::LatencyHistogram create{kCreateBuckets};
};

// Each histogram's family under the guide's names and OpenTelemetry's.
struct HistogramFamily {
  detail::LatencyHistogram PoolHistograms::*histogram;
  const char* guide_name;
  const char* guide_help;
  const char* otel_name;
  const char* otel_help;
};
const std::array<HistogramFamily, 3> kHistogramFamilies = {{
    {&PoolHistograms::acquisition, "acquisition_duration_seconds",
     "Time to acquire connection from pool", "db_client_connection_wait_time_seconds",
     "The time it took to obtain an open connection from the pool"},
    {&PoolHistograms::hold, "connection_hold_duration_seconds",
     "How long callers hold a connection", "db_client_connection_use_time_seconds",
     "The time between borrowing a connection and returning it to the pool"},
    {&PoolHistograms::create, "connection_create_duration_seconds",
     "Time to open and validate a new connection", "db_client_connection_create_time_seconds",
     "The time it took to create a new connection"},
}};

// Feeds one pool's histograms from its hot path.
class HistogramObserver final : public PoolObserver {
 public:
  explicit HistogramObserver(std::shared_ptr<PoolHistograms> histograms)
      : histograms_(std::move(histograms)) {}

  void on_acquired(std::chrono::nanoseconds waited) noexcept override {
    histograms_->acquisition.observe(waited);
  }
  void on_released(std::chrono::nanoseconds held) noexcept override {
    histograms_->hold.observe(held);
  }
  void on_connection_created(std::chrono::nanoseconds took) noexcept override {
    histograms_->create.observe(took);
  }

 private:
  // Shared: the pool keeps a removed observer alive, and with it these.
  const std::shared_ptr<PoolHistograms> histograms_;
};

// Builds the snapshot families in a fixed order, one series per pool.
class FamilyBuilder {
 public:
  explicit FamilyBuilder(std::string prefix) : prefix_(std::move(prefix)) {}

  void add(const std::string& name, const std::string& help, MetricType type,
           std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric metric;
    metric.label = std::move(labels);
    if (type == MetricType::Counter) {
      metric.counter.value = value;
    } else if (type == MetricType::Untyped) {
      metric.untyped.value = value;
    } else {
      metric.gauge.value = value;
    }
    family(name, help, type).metric.push_back(std::move(metric));
  }

  void add_histogram(const std::string& name, const std::string& help,
                     std::vector<ClientMetric::Label> labels,
                     const ClientMetric::Histogram& histogram) {
    ClientMetric metric;
    metric.label = std::move(labels);
    metric.histogram = histogram;
    family(name, help, MetricType::Histogram).metric.push_back(std::move(metric));
  }

  std::vector<MetricFamily> take() { return std::move(families_); }

 private:
  MetricFamily& family(const std::string& name, const std::string& help, MetricType type) {
    auto it = std::find_if(families_.begin(), families_.end(),
                           [&](const MetricFamily& f) { return f.name == prefix_ + name; });
    if (it != families_.end()) return *it;
    families_.push_back(MetricFamily{prefix_ + name, help, type, {}});
    return families_.back();
  }

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

  // The name ends in _total, which Prometheus reserves for counters;
  // typed as a gauge it fails `promtool check metrics`. Untyped keeps the
  // name and is queried exactly like a gauge.
  out.add("connections_total", "Total number of connections in pool (a gauge: idle + active)",
          MetricType::Untyped, pool, n(s.total_connections));
  out.add("connections_idle", "Number of idle connections available", gauge, pool,
          n(s.idle_connections));
  out.add("connections_active", "Number of active connections in use", gauge, pool,
          n(s.active_connections));
  out.add("connections_pending", "Number of connections being opened", gauge, pool,
          n(s.pending_connections));
  out.add("connections_leaked", "Connections held longer than the leak detection timeout", gauge,
          pool, n(s.leaked_connections));
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
  out.add("waiting_requests", "Number of requests waiting for connections", gauge, pool,
          n(s.waiting_requests));
  out.add("max_connections", "Configured maximum pool size", gauge, pool, n(s.max_size));
  out.add("min_connections", "Configured minimum pool size", gauge, pool, n(s.min_size));
  out.add("peak_active_connections", "Most connections active at once in the last 60 seconds",
          gauge, pool, n(s.recent_peak_active_connections));
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
  out.add("releases_total", "Total number of connection releases", counter, pool,
          n(s.total_releases));
  out.add("acquire_timeouts_total", "Acquisitions that timed out waiting for a connection", counter,
          pool, n(s.acquire_timeouts));
  for (std::size_t i = 0; i < kErrorTypeCount; ++i) {
    out.add("errors_total", "Total number of pool errors", counter,
            with("error_type", std::string(to_string(static_cast<ErrorType>(i)))), n(s.errors[i]));
  }
  out.add("connections_created_total", "Connections opened", counter, pool,
          n(s.connections_created));
  for (std::size_t i = 0; i < kCloseReasonCount; ++i) {
    out.add("connections_closed_total", "Connections closed, by reason", counter,
            with("reason", std::string(to_string(static_cast<CloseReason>(i)))),
            n(s.connections_closed[i]));
  }
  out.add("leaks_detected_total", "Connections reported as potentially leaked", counter, pool,
          n(s.leaks_detected));
  out.add("resizes_total", "Run-time changes of max_size or min_size", counter, pool, n(s.resizes));
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

// OpenTelemetry's db.client.connection.* metrics in their Prometheus form:
// dots become underscores, a unit in braces ({connection}) is dropped,
// seconds become a _seconds suffix and monotonic sums a _total suffix.
constexpr const char* kOtelPoolLabel = "db_client_connection_pool_name";
constexpr const char* kOtelStateLabel = "db_client_connection_state";

void collect_pool_otel(FamilyBuilder& out, const PoolStatistics& s) {
  using L = std::vector<ClientMetric::Label>;
  const L pool{{kOtelPoolLabel, s.pool_name}};
  const auto gauge = MetricType::Gauge;
  auto n = [](auto v) { return static_cast<double>(v); };
  const char* count_help =
      "The number of connections that are currently in state described by the state attribute";
  out.add("db_client_connection_count", count_help, gauge,
          {{kOtelPoolLabel, s.pool_name}, {kOtelStateLabel, "idle"}}, n(s.idle_connections));
  out.add("db_client_connection_count", count_help, gauge,
          {{kOtelPoolLabel, s.pool_name}, {kOtelStateLabel, "used"}}, n(s.active_connections));
  out.add("db_client_connection_idle_max", "The maximum number of idle open connections allowed",
          gauge, pool, n(s.max_size));
  out.add("db_client_connection_idle_min", "The minimum number of idle open connections allowed",
          gauge, pool, n(s.min_size));
  out.add("db_client_connection_max", "The maximum number of open connections allowed", gauge, pool,
          n(s.max_size));
  out.add("db_client_connection_pending_requests",
          "The number of current pending requests for an open connection", gauge, pool,
          n(s.waiting_requests));
  out.add("db_client_connection_timeouts_total",
          "The number of connection timeouts that have occurred trying to obtain a connection "
          "from the pool",
          MetricType::Counter, pool, n(s.acquire_timeouts));
}

}  // namespace

MetricsNaming parse_metrics_naming(const std::string& text, const std::string& variable) {
  std::string value;
  for (const char c : text) value += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (value == "guide") return MetricsNaming::kGuide;
  if (value == "otel") return MetricsNaming::kOtel;
  if (value == "both") return MetricsNaming::kBoth;
  throw ConfigError(variable, text,
                    "expected guide (codebase_mcp_pool_… names), otel (OpenTelemetry "
                    "db_client_connection_… names) or both");
}

struct PoolMetrics::State {
  MetricsOptions options;
  bool guide() const { return options.naming != MetricsNaming::kOtel; }
  bool otel() const { return options.naming != MetricsNaming::kGuide; }
  mutable detail::Mutex mutex;
  struct Published {
    Pool* pool;
    std::shared_ptr<HistogramObserver> observer;
  };
  std::vector<Published> pools POOLSCOPE_GUARDED_BY(mutex);
  // Every pool name ever added, with its histograms: a removed pool's series
  // stay with the counts they had, and adding the name again continues them.
  std::vector<std::pair<std::string, std::shared_ptr<PoolHistograms>>> histograms
      POOLSCOPE_GUARDED_BY(mutex);
};

const std::vector<double>& PoolMetrics::acquisition_buckets() {
  static const std::vector<double> buckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                              0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                              0.5,     1,      2.5,     5,      10,    30};
  return buckets;
}

PoolMetrics::PoolMetrics(MetricsOptions options) : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature it always had.
PoolMetrics::PoolMetrics(std::shared_ptr<prometheus::Registry> registry, MetricsOptions options)
    : PoolMetrics(std::move(options)) {
  if (!registry) throw std::invalid_argument("poolscope::PoolMetrics needs a registry");
}

PoolMetrics::~PoolMetrics() {
  // The observers point into this registry's histograms: detach them from
  // the pools still published (which outlive this object by contract).
  detail::UniqueLock lock(state_->mutex);
  for (const auto& published : state_->pools)
    published.pool->remove_observer(published.observer.get());
}

void PoolMetrics::add(Pool& pool) {
  detail::UniqueLock lock(state_->mutex);
  const std::string& name = pool.config().name;
  for (const auto& existing : state_->pools) {
    if (existing.pool->config().name == name) {
      throw std::invalid_argument("poolscope::PoolMetrics: a pool named '" + name +
                                  "' is already published; give pools distinct names");
    }
  }
  auto known = std::find_if(state_->histograms.begin(), state_->histograms.end(),
                            [&](const auto& entry) { return entry.first == name; });
  if (known == state_->histograms.end()) {
    state_->histograms.emplace_back(name, std::make_shared<PoolHistograms>());
    known = state_->histograms.end() - 1;
  }
  auto observer = std::make_shared<HistogramObserver>(known->second);
  pool.add_observer(observer);
  state_->pools.push_back({&pool, std::move(observer)});
}

void PoolMetrics::remove(Pool& pool) {
  detail::UniqueLock lock(state_->mutex);
  std::erase_if(state_->pools, [&](const State::Published& published) {
    if (published.pool != &pool) return false;
    pool.remove_observer(published.observer.get());
    return true;
  });
}

std::vector<prometheus::MetricFamily> PoolMetrics::Collect() const {
  std::vector<Pool*> pools;
  std::vector<std::pair<std::string, std::shared_ptr<PoolHistograms>>> histograms;
  {
    detail::UniqueLock lock(state_->mutex);
    for (const auto& published : state_->pools) pools.push_back(published.pool);
    histograms = state_->histograms;
  }
  FamilyBuilder guide(state_->options.prefix);
  FamilyBuilder otel("");
  for (const auto& [name, set] : histograms) {
    for (const HistogramFamily& family : kHistogramFamilies) {
      // One snapshot for both namings: the two series always agree.
      const auto snapshot = ((*set).*family.histogram).snapshot();
      if (state_->guide()) {
        guide.add_histogram(family.guide_name, family.guide_help, {{"pool", name}}, snapshot);
      }
      if (state_->otel()) {
        otel.add_histogram(family.otel_name, family.otel_help, {{kOtelPoolLabel, name}}, snapshot);
      }
    }
  }
  for (Pool* pool : pools) {
    const PoolStatistics statistics = pool->get_statistics();
    if (state_->guide()) collect_pool(guide, statistics, state_->options.version);
    if (state_->otel()) collect_pool_otel(otel, statistics);
  }
  std::vector<prometheus::MetricFamily> families = guide.take();
  std::vector<prometheus::MetricFamily> otel_families = otel.take();
  families.insert(families.end(), std::make_move_iterator(otel_families.begin()),
                  std::make_move_iterator(otel_families.end()));
  return families;
}

}  // namespace poolscope
