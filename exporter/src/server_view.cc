#include "server_view.h"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <poll.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <stdexcept>
#include <string_view>

#include "exporter_log.h"
#include "redaction.h"

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

std::string quote_value(std::string_view value) {
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

std::string first_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (auto& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

// The pool's URL as key=value pairs with the view's application_name,
// connect timeout and statement_timeout in place of the URL's own.
std::string view_conninfo(const ServerView::Options& options) {
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(options.database_url.c_str(), &error);
  if (parsed == nullptr) {
    if (error != nullptr) PQfreemem(error);
    throw std::invalid_argument("the server view cannot parse DATABASE_URL");
  }
  std::string conninfo;
  std::string startup_options;
  for (PQconninfoOption* option = parsed; option->keyword != nullptr; ++option) {
    if (option->val == nullptr || *option->val == '\0') continue;
    const std::string_view keyword(option->keyword);
    if (keyword == "application_name" || keyword == "connect_timeout") continue;
    if (keyword == "options") {
      startup_options = option->val;
      continue;
    }
    conninfo += fmt::format("{}={} ", keyword, quote_value(option->val));
  }
  PQconninfoFree(parsed);
  const auto timeout_ms = options.statement_timeout.count();
  const auto connect_seconds = std::max<std::int64_t>(
      2, static_cast<std::int64_t>(
             std::ceil(std::chrono::duration<double>(options.statement_timeout).count())));
  startup_options += fmt::format("{}-c statement_timeout={}", startup_options.empty() ? "" : " ",
                                 std::max<std::int64_t>(1, timeout_ms));
  conninfo +=
      fmt::format("application_name={} connect_timeout={} options={}",
                  quote_value(kViewApplicationName), connect_seconds, quote_value(startup_options));
  return conninfo;
}

std::size_t as_size(PGresult* result, int column) {
  return static_cast<std::size_t>(std::stoull(PQgetvalue(result, 0, column)));
}

}  // namespace

struct ServerView::Connection {
  PGconn* handle = nullptr;
  ~Connection() {
    if (handle != nullptr) PQfinish(handle);
  }
};

ServerView::ServerView(Options options, bool start_thread)
    : options_(std::move(options)),
      conninfo_(view_conninfo(options_)),
      password_(database_password(options_.database_url)) {
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
  if (!connection_ || PQstatus(connection_->handle) != CONNECTION_OK) {
    connection_ = std::make_unique<Connection>();
    connection_->handle = PQconnectdb(conninfo_.c_str());
    if (connection_->handle == nullptr || PQstatus(connection_->handle) != CONNECTION_OK) {
      const std::string reason = connection_->handle != nullptr
                                     ? first_line(PQerrorMessage(connection_->handle))
                                     : "out of memory";
      connection_.reset();
      throw std::runtime_error("cannot connect: " + reason);
    }
  }
  PGconn* handle = connection_->handle;
  const std::array<const char*, 1> values{options_.application_name.c_str()};
  if (PQsendQueryParams(handle, kQuery, 1, nullptr, values.data(), nullptr, nullptr, 0) == 0) {
    const std::string reason = first_line(PQerrorMessage(handle));
    connection_.reset();
    throw std::runtime_error("cannot send the query: " + reason);
  }
  // statement_timeout ends a slow query on the server; this deadline covers
  // a server that stopped answering altogether.
  const auto limit = options_.statement_timeout + std::chrono::seconds(1);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (PQisBusy(handle) != 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      connection_.reset();
      throw std::runtime_error(fmt::format("no answer within {} ms", limit.count()));
    }
    pollfd descriptor{PQsocket(handle), POLLIN, 0};
    const int ready = ::poll(&descriptor, 1, static_cast<int>(left.count()));
    if ((ready < 0 && errno != EINTR) || (ready > 0 && PQconsumeInput(handle) == 0)) {
      const std::string reason = first_line(PQerrorMessage(handle));
      connection_.reset();
      throw std::runtime_error("connection lost: " + reason);
    }
  }
  std::optional<ServerReading> reading;
  std::string failure;
  while (PGresult* result = PQgetResult(handle)) {
    if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1 && !reading) {
      ServerReading r;
      r.active = as_size(result, 0);
      r.idle = as_size(result, 1);
      r.idle_in_transaction = as_size(result, 2);
      r.other = as_size(result, 3);
      r.oldest_transaction_age_seconds = std::stod(PQgetvalue(result, 0, 4));
      r.max_connections = as_size(result, 5);
      r.reserved_connections = as_size(result, 6);
      reading = r;
    } else if (failure.empty()) {
      failure = first_line(PQresultErrorMessage(result));
    }
    PQclear(result);
  }
  if (!reading) {
    throw std::runtime_error("query failed: " + (failure.empty() ? "no result" : failure));
  }
  const char* host = PQhost(handle);
  reading->server =
      fmt::format("{}:{}/{}", host != nullptr ? host : "", PQport(handle), PQdb(handle));
  return *reading;
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
    // password is scrubbed all the same in case a message ever quotes it.
    std::string reason = error.what();
    scrub_secret(reason, password_);
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
