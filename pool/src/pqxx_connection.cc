// The libpqxx-backed Connection and its factory.

#include <fmt/format.h>
#include <libpq-fe.h>
#include <poll.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include "poolscope/connection.h"
#include "poolscope/error.h"
#include "poolscope/pool_config.h"

namespace poolscope {
namespace {

// libpqxx 6.4 keeps the PGconn* private, but the pool must read the
// transaction status (PQtransactionStatus) without a round trip to know
// whether a returned connection is still inside a transaction. An explicit
// template instantiation may name a private member (C++20 [temp.spec]/6), so
// this grants read access to the accessor without touching libpqxx's headers.
using RawConnectionFn = pqxx::internal::pq::PGconn* (pqxx::connection_base::*)() const;
RawConnectionFn raw_connection_fn();
template <RawConnectionFn Fn>
struct RawConnectionAccess {
  friend RawConnectionFn raw_connection_fn() { return Fn; }
};
template struct RawConnectionAccess<&pqxx::connection_base::raw_connection>;

PGconn* raw(const pqxx::connection_base& connection) { return (connection.*raw_connection_fn())(); }

std::string first_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (auto& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

// A failed connection attempt reaches us only as libpq's message text (no
// SQLSTATE), so a rejected login is recognised by its wording.
bool is_authentication_failure(std::string_view message) {
  return message.find("authentication failed") != std::string_view::npos ||
         message.find("no password supplied") != std::string_view::npos ||
         message.find("no pg_hba.conf entry") != std::string_view::npos;
}

class PqxxConnection final : public Connection {
 public:
  PqxxConnection(std::unique_ptr<pqxx::connection> connection, std::chrono::milliseconds io_timeout)
      : connection_(std::move(connection)), io_timeout_(io_timeout) {
    // A broken libpqxx 6 connection silently reconnects on next use unless
    // told not to; the pool must see it broken and replace it instead.
    // (Deprecated in libpqxx 6.4 because 7.x dropped reactivation altogether.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    connection_->inhibit_reactivation(true);
#pragma GCC diagnostic pop
  }

  bool is_open() const noexcept override {
    PGconn* handle = raw(*connection_);
    return connection_->is_open() && handle != nullptr && PQstatus(handle) == CONNECTION_OK;
  }

  bool probe() noexcept override {
    PGconn* handle = raw(*connection_);
    if (handle == nullptr || PQstatus(handle) != CONNECTION_OK) return false;
    // An idle connection only receives something when the server is about
    // to drop it (pg_terminate_backend, shutdown: a FATAL message, then end
    // of stream) or sent a notification. One read may return the message
    // without noticing the end of stream behind it, so read until the socket
    // has nothing more.
    for (int reads = 0; reads < 8; ++reads) {
      pollfd descriptor{PQsocket(handle), POLLIN, 0};
      if (::poll(&descriptor, 1, 0) <= 0) return true;  // nothing (more) arrived
      if (PQconsumeInput(handle) == 0 || PQstatus(handle) != CONNECTION_OK) return false;
    }
    return PQstatus(handle) == CONNECTION_OK;
  }

  bool in_transaction() const noexcept override {
    PGconn* handle = raw(*connection_);
    return handle == nullptr || PQtransactionStatus(handle) != PQTRANS_IDLE;
  }

  void validate(std::chrono::milliseconds timeout) override {
    PGconn* handle = raw(*connection_);
    if (handle == nullptr || PQstatus(handle) != CONNECTION_OK) {
      throw Error("Connection validation failed: connection is closed");
    }
    // Sent asynchronously and polled with a deadline: a server that stopped
    // answering (SIGSTOP, network partition) must not hang the pool.
    if (PQsendQuery(handle, "SELECT 1") == 0) {
      throw Error("Connection validation failed: " + first_line(PQerrorMessage(handle)));
    }
    const auto limit = std::min(timeout, io_timeout_);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (PQisBusy(handle) != 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        throw Error(
            fmt::format("Connection validation failed: no answer within {} ms", limit.count()));
      }
      pollfd descriptor{PQsocket(handle), POLLIN, 0};
      const int ready = ::poll(&descriptor, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno != EINTR) throw Error("Connection validation failed: poll failed");
      if (ready > 0 && PQconsumeInput(handle) == 0) {
        throw Error("Connection validation failed: " + first_line(PQerrorMessage(handle)));
      }
    }
    bool ok = false;
    while (PGresult* result = PQgetResult(handle)) {
      ok = ok || (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1);
      PQclear(result);
    }
    if (!ok) throw Error("Connection validation failed: " + first_line(PQerrorMessage(handle)));
  }

  pqxx::connection& native() override { return *connection_; }

  int backend_pid() const noexcept override { return connection_->backendpid(); }

 private:
  std::unique_ptr<pqxx::connection> connection_;
  std::chrono::milliseconds io_timeout_;
};

class PqxxFactory final : public ConnectionFactory {
 public:
  explicit PqxxFactory(const PoolConfig& config) {
    if (config.database_url.empty()) {
      throw ConfigError("DATABASE_URL", "",
                        "not set; expected a libpq URI such as "
                        "postgresql://user:password@host:5432/dbname or a key=value string",
                        "database_url");
    }
    const std::int64_t connect_timeout = DatabaseUrl::connect_timeout_seconds(config.init_timeout);
    io_timeout_ = std::chrono::milliseconds(connect_timeout * 1000);
    url_ = config.database_url.with("application_name", application_name_of(config));
    if (!url_.has("connect_timeout")) {
      url_ = url_.with("connect_timeout", std::to_string(connect_timeout));
    }
    // statement_timeout travels in the startup packet: no extra round trip,
    // and RESET ALL / DISCARD ALL return to it.
    if (config.command_timeout.count() > 0) {
      url_ = url_.with_server_setting("statement_timeout",
                                      std::to_string(config.command_timeout.count()));
    }
    for (const char* keyword : {"host", "hostaddr", "port", "dbname", "user"}) {
      if (const auto value = url_.value(keyword)) {
        description_ += fmt::format("{}{}={}", description_.empty() ? "" : " ", keyword, *value);
      }
    }
    if (description_.empty()) description_ = "(libpq defaults)";
  }

  std::unique_ptr<Connection> connect() override {
    try {
      auto connection = std::make_unique<pqxx::connection>(url_.connection_string_with_secrets());
      auto pooled = std::make_unique<PqxxConnection>(std::move(connection), io_timeout_);
      pooled->validate(io_timeout_);
      return pooled;
    } catch (const pqxx::broken_connection& error) {
      const std::string reason = first_line(url_.scrubbed(error.what()));
      if (is_authentication_failure(reason)) {
        throw Error("Database authentication failed: " + reason +
                    "; check the user and password in DATABASE_URL");
      }
      throw Error("Cannot connect to the database: " + reason);
    } catch (const Error& error) {
      throw Error(first_line(url_.scrubbed(error.what())));
    } catch (const std::exception& error) {
      throw Error("Database connection failed: " + first_line(url_.scrubbed(error.what())));
    }
  }

  std::string describe() const override { return description_; }

 private:
  DatabaseUrl url_;  // config.database_url with the pool's settings added
  std::string description_;
  std::chrono::milliseconds io_timeout_{2000};
};

}  // namespace

std::unique_ptr<ConnectionFactory> make_libpqxx_factory(const PoolConfig& config) {
  return std::make_unique<PqxxFactory>(config);
}

std::string application_name_of(const PoolConfig& config) {
  if (!config.application_name.empty()) return config.application_name;
  return config.database_url.value("application_name")
      .value_or(PoolConfig::kDefaultApplicationName);
}

int libpq_version() noexcept { return PQlibVersion(); }

}  // namespace poolscope
