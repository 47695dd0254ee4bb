#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
}

namespace poolscope {

class Pool;

/// Which names PoolMetrics publishes.
enum class MetricsNaming {
  /// The guide's names: `<prefix>connections_active{pool}` and the rest.
  kGuide,
  /// OpenTelemetry's database client semantic conventions in their
  /// Prometheus form: `db_client_connection_count{db_client_connection_state,
  /// db_client_connection_pool_name}`, `db_client_connection_wait_time_seconds`, …
  kOtel,
  /// Both sets side by side (for migrating dashboards and alerts).
  kBoth,
};

/// Parses "guide", "otel" or "both" (case-insensitive); throws ConfigError
/// naming `variable`.
MetricsNaming parse_metrics_naming(const std::string& text, const std::string& variable);

/// Options for PoolMetrics.
struct MetricsOptions {
  /// Prepended to every guide metric name (OpenTelemetry names have none).
  std::string prefix = "codebase_mcp_pool_";
  /// Version reported by the build_info metric.
  std::string version;
  /// Which names to publish.
  MetricsNaming naming = MetricsNaming::kGuide;
};

/// Publishes the metrics of one or more pools in Prometheus form.
///
/// The histograms (acquisition, hold and create durations) are fed by the
/// pool's hot path without a lock; everything else is read from one
/// statistics snapshot per pool when Collect() runs, so a pool pays nothing
/// for gauges between scrapes. Register this object with your exposer.
/// Every guide series carries a `pool` label (PoolConfig::name), every
/// OpenTelemetry series a `db_client_connection_pool_name` label with the
/// same value.
/// Thread-safe: no concurrent call causes a data race.
class PoolMetrics : public prometheus::Collectable {
 public:
  explicit PoolMetrics(MetricsOptions options = {});
  /// Before the histograms moved into Collect() they lived in `registry`;
  /// it is no longer used (a null one still throws std::invalid_argument).
  /// The signature is the one it always had.
  [[deprecated(
      "the histograms are part of Collect() now: construct PoolMetrics without a "
      "registry")]] PoolMetrics(std::shared_ptr<prometheus::Registry> registry,
                                MetricsOptions options = {});
  ~PoolMetrics() override;

  /// Starts publishing `pool`'s metrics. Throws std::invalid_argument when a
  /// pool with the same name was added already. The pool must outlive this
  /// object or be removed first.
  void add(Pool& pool);

  /// Stops publishing `pool`'s metrics and detaches its histogram observer
  /// (adding it again later counts every event once). Its histogram series
  /// stay, with the counts they had; adding a pool of the same name again
  /// continues them.
  void remove(Pool& pool);

  /// The families of every added pool: histograms, gauges and counters.
  std::vector<prometheus::MetricFamily> Collect() const override;

  /// The histogram buckets of acquisition_duration_seconds (sub-millisecond
  /// buckets plus 0.001 … 1.0 s).
  static const std::vector<double>& acquisition_buckets();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace poolscope
