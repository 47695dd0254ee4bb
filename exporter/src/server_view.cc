#include "server_view.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pqxx/connection>
#include <pqxx/nontransaction>
#include <stdexcept>
#include <string_view>

#include "exporter_log.h"

namespace poolscope::exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// The view's own connection is told apart from the pool's sessions by this
// name, so it never counts itself.
constexpr const char* kViewApplicationName = "poolscope-server-view";

// current_setting(name, true) is NULL where the setting does not exist
// (reserved_connections appeared in PostgreSQL 16).
constexpr const char* kQuery = R"sql(
SELECT
  count(*) FILTER (WHERE state = 'active'),
  count(*) FILTER (WHERE state = 'idle'),
  count(*) FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')),
  count(*) FILTER (WHERE state IS NULL OR state NOT IN
                   ('active', 'idle', 'idle in transaction', 'idle in transaction (aborted)')),
  coalesce(extract(epoch FROM max(clock_timestamp() - xact_start)), 0)::float8,
  current_setting('max_connections')::int,
  current_setting('superuser_reserved_connections')::int
    + coalesce(current_setting('reserved_connections', true)::int, 0)
FROM pg_stat_activity
WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()
)sql";

std::string first_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (auto& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

// The pool's URL with the view's application_name, connect timeout and
// statement_timeout in place of the URL's own.
DatabaseUrl view_url(const ServerView::Options& options) {
  if (options.database_url.empty()) {
    throw std::invalid_argument("the server view needs a DATABASE_URL");
  }
  const auto timeout_ms = options.statement_timeout.count();
  return options.database_url.with("application_name", kViewApplicationName)
      .with("connect_timeout",
            std::to_string(DatabaseUrl::connect_timeout_seconds(options.statement_timeout)))
      .with_server_setting("statement_timeout",
                           std::to_string(std::max<std::int64_t>(1, timeout_ms)));
}

// Shuts the socket down when `limit` passes before finish(): that ends a
// libpq call blocked on a server that stopped answering altogether, which
// the statement_timeout (enforced by that server) cannot. It watches a
// duplicate of the descriptor, so the socket stays the same one even if
// libpq closes its own descriptor and the number is reused meanwhile.
class SocketDeadline {
 public:
  SocketDeadline(int socket, std::chrono::milliseconds limit) : watched_(::dup(socket)) {
    if (watched_ < 0) throw std::runtime_error("cannot watch the connection's socket");
    thread_ = std::thread([this, limit] {
      std::unique_lock lock(mutex_);
      if (!finished_changed_.wait_for(lock, limit, [this] { return finished_; })) {
        ::shutdown(watched_, SHUT_RDWR);
        expired_ = true;
      }
    });
  }
  ~SocketDeadline() {
    finish();
    ::close(watched_);
  }

  SocketDeadline(const SocketDeadline&) = delete;
  SocketDeadline& operator=(const SocketDeadline&) = delete;

  /// Stops watching; true when the deadline had passed and the socket is shut down.
  bool finish() {
    {
      std::lock_guard lock(mutex_);
      finished_ = true;
    }
    finished_changed_.notify_all();
    if (thread_.joinable()) thread_.join();
    return expired_;
  }

 private:
  const int watched_;
  std::mutex mutex_;
  std::condition_variable finished_changed_;
  bool finished_ = false;  // guarded by mutex_
  bool expired_ = false;   // written by thread_ under mutex_, read after join
  std::thread thread_;
};

std::string text_or_empty(const char* text) { return text != nullptr ? text : ""; }

}  // namespace

// A class of its own so that the header needs no libpqxx include.
struct ServerView::Connection : pqxx::connection {
  using pqxx::connection::connection;
};

ServerView::ServerView(Options options, bool start_thread)
    : options_(std::move(options)), url_(view_url(options_)) {
  if (start_thread) thread_ = std::thread([this] { run(); });
}

ServerView::~ServerView() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ServerView::run() {
  for (;;) {
    read_once();
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, options_.interval, [this] { return stopping_; })) return;
  }
}

ServerReading ServerView::query() {
  if (connection_ && !connection_->is_open()) connection_.reset();
  if (!connection_) {
    try {
      connection_ = std::make_unique<Connection>(url_.connection_string_with_secrets());
    } catch (const pqxx::broken_connection& error) {
      throw std::runtime_error("cannot connect: " + first_line(error.what()));
    }
  }
  // statement_timeout ends a slow query on the server; the deadline covers
  // a server that stopped answering altogether.
  const auto limit = options_.statement_timeout + std::chrono::seconds(1);
  SocketDeadline deadline(connection_->sock(), limit);
  ServerReading reading;
  try {
    pqxx::nontransaction transaction(*connection_);
    const pqxx::result result = transaction.exec_params(kQuery, options_.application_name);
    if (result.size() != 1) throw std::runtime_error("no result");
    const pqxx::row row = result[0];
    reading.active = row[0].as<std::size_t>();
    reading.idle = row[1].as<std::size_t>();
    reading.idle_in_transaction = row[2].as<std::size_t>();
    reading.other = row[3].as<std::size_t>();
    reading.oldest_transaction_age_seconds = row[4].as<double>();
    reading.max_connections = row[5].as<std::size_t>();
    reading.reserved_connections = row[6].as<std::size_t>();
    reading.server =
        fmt::format("{}:{}/{}", text_or_empty(connection_->hostname()),
                    text_or_empty(connection_->port()), text_or_empty(connection_->dbname()));
  } catch (const std::exception& error) {
    const bool expired = deadline.finish();
    if (expired || !connection_->is_open()) connection_.reset();
    if (expired) throw std::runtime_error(fmt::format("no answer within {} ms", limit.count()));
    throw std::runtime_error("query failed: " + first_line(error.what()));
  }
  // An answer that came as the deadline passed is good, but its socket is shut down.
  if (deadline.finish()) connection_.reset();
  return reading;
}

bool ServerView::read_once() {
  try {
    ServerReading reading = query();
    if (!warned_overcommit_ && options_.pool_max_size > reading.available_connections()) {
      log_event(LogLevel::kWarning,
                "The pool's max_size alone exceeds the database server's available connection "
                "slots; lower POOL_MAX_SIZE or raise max_connections",
                {{"pool", options_.pool_name},
                 {"server", reading.server},
                 {"pool_max_size", options_.pool_max_size},
                 {"max_connections", reading.max_connections},
                 {"reserved_connections", reading.reserved_connections},
                 {"available_connections", reading.available_connections()}});
    }
    warned_overcommit_ = true;
    std::lock_guard lock(mutex_);
    server_ = reading.server;
    reading_ = std::move(reading);
    return true;
  } catch (const std::exception& error) {
    errors_.fetch_add(1);
    // libpq reports hosts, ports and server messages, not the conninfo; the
    // secrets are scrubbed all the same in case a message ever quotes them.
    const std::string reason = url_.scrubbed(error.what());
    log_event(LogLevel::kWarning, "Server view read failed",
              {{"pool", options_.pool_name}, {"error", reason}});
    std::lock_guard lock(mutex_);
    reading_.reset();
    return false;
  }
}

std::optional<ServerReading> ServerView::last_reading() const {
  std::lock_guard lock(mutex_);
  return reading_;
}

std::vector<prometheus::MetricFamily> ServerView::collect() const {
  std::optional<ServerReading> reading;
  std::string server;
  {
    std::lock_guard lock(mutex_);
    reading = reading_;
    server = server_;
  }
  const std::string& prefix = options_.metrics_prefix;
  std::vector<MetricFamily> families;
  auto family = [&](const std::string& name, const std::string& help,
                    MetricType type) -> MetricFamily& {
    families.push_back(MetricFamily{prefix + name, help, type, {}});
    return families.back();
  };
  auto sample = [](MetricFamily& into, std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric metric;
    metric.label = std::move(labels);
    if (into.type == MetricType::Counter) {
      metric.counter.value = value;
    } else {
      metric.gauge.value = value;
    }
    into.metric.push_back(std::move(metric));
  };
  const std::string& pool = options_.pool_name;
  sample(family("server_view_up", "1 when the last server view read succeeded", MetricType::Gauge),
         {{"pool", pool}}, reading ? 1.0 : 0.0);
  sample(family("server_view_errors_total", "Server view reads that failed", MetricType::Counter),
         {{"pool", pool}}, static_cast<double>(errors_.load()));
  if (!server.empty()) {
    // Known from the first connection on; summed by server across instances
    // by the ConnectionPoolServerOvercommit alert.
    sample(family("server_pool_max_connections",
                  "This pool's configured max_size, labelled with its database server",
                  MetricType::Gauge),
           {{"pool", pool}, {"server", server}}, static_cast<double>(options_.pool_max_size));
  }
  if (!reading) return families;
  const std::vector<ClientMetric::Label> labels{{"pool", pool}, {"server", reading->server}};
  auto& sessions =
      family("server_sessions", "The pool's sessions on the server (pg_stat_activity), by state",
             MetricType::Gauge);
  const auto states = std::to_array<std::pair<const char*, std::size_t>>(
      {{"active", reading->active},
       {"idle", reading->idle},
       {"idle in transaction", reading->idle_in_transaction},
       {"other", reading->other}});
  for (const auto& [state, count] : states) {
    sample(sessions, {{"pool", pool}, {"server", reading->server}, {"state", state}},
           static_cast<double>(count));
  }
  sample(family("server_oldest_transaction_age_seconds",
                "Age of the oldest open transaction among the pool's sessions (0 when none)",
                MetricType::Gauge),
         labels, reading->oldest_transaction_age_seconds);
  sample(family("server_max_connections", "The server's max_connections", MetricType::Gauge),
         labels, static_cast<double>(reading->max_connections));
  sample(family("server_reserved_connections",
                "Slots reserved for superusers and roles with pg_use_reserved_connections",
                MetricType::Gauge),
         labels, static_cast<double>(reading->reserved_connections));
  sample(family("server_available_connections",
                "max_connections minus the reserved slots: what ordinary roles can open",
                MetricType::Gauge),
         labels, static_cast<double>(reading->available_connections()));
  return families;
}

}  // namespace poolscope::exporter
