#pragma once

#include <chrono>
#include <memory>
#include <pqxx/connection>
#include <string>

namespace poolscope {

struct PoolConfig;

/// One database connection as the pool sees it.
///
/// Not thread-safe: like a libpqxx connection it belongs to one holder at a
/// time, and the pool guarantees that.
class Connection {
 public:
  virtual ~Connection() = default;

  /// False once the connection is known to be broken. No I/O.
  virtual bool is_open() const noexcept = 0;

  /// Cheap liveness check before hand-out: reads whatever the server sent
  /// while the connection sat idle (a termination notice, end of stream)
  /// without a round trip — one non-blocking poll(2). False when the
  /// connection turned out dead. The default only asks is_open().
  virtual bool probe() noexcept { return is_open(); }

  /// True when a transaction block is open or failed, or a command is still in
  /// flight: such a connection must not be handed to another caller. No I/O.
  virtual bool in_transaction() const noexcept = 0;

  /// One round trip (`SELECT 1`), waiting at most `timeout` for the answer
  /// (implementations may cap it further). Throws poolscope::Error (or a pqxx
  /// error) when the server does not answer correctly in time.
  virtual void validate(std::chrono::milliseconds timeout) = 0;

  /// The libpqxx connection, for running queries. Throws std::logic_error for
  /// connections that are not backed by libpqxx (test fakes).
  virtual pqxx::connection& native() = 0;

  /// The server process id, for logs and diagnostics; 0 when unknown.
  virtual int backend_pid() const noexcept { return 0; }
};

/// Opens connections for a pool. Called from the pool's connector thread only,
/// never while the pool lock is held.
class ConnectionFactory {
 public:
  virtual ~ConnectionFactory() = default;

  /// Opens, configures (statement_timeout) and validates a new connection.
  /// Throws on failure with a message that never contains the password.
  virtual std::unique_ptr<Connection> connect() = 0;

  /// Where connections go, with the password removed: "host=… port=… dbname=… user=…".
  virtual std::string describe() const = 0;
};

/// The libpqxx factory for `config.database_url`, with `config.command_timeout`
/// as statement_timeout and a connect timeout so a hung server cannot block the
/// pool forever. Throws ConfigError when `config.database_url` is empty.
std::unique_ptr<ConnectionFactory> make_libpqxx_factory(const PoolConfig& config);

/// The application_name every connection of a pool with `config` carries:
/// config.application_name when set, else the URL's application_name, else
/// PoolConfig::kDefaultApplicationName.
std::string application_name_of(const PoolConfig& config);

/// The version of the libpq the library runs with, as PQlibVersion() gives
/// it (150005 for 15.5).
int libpq_version() noexcept;

}  // namespace poolscope
