#pragma once

// A throwaway PostgreSQL cluster of the test's own (scripts/lib/pgctl), for
// tests that stop, kill, freeze or reconfigure the server; and the suite's
// shared database. Used by the integration and chaos suites.

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <string_view>

namespace poolscope::testing {

inline std::string pgctl_path() {
  const char* path = std::getenv("POOLSCOPE_PGCTL");
  return path != nullptr ? path : POOLSCOPE_PGCTL_DEFAULT;
}

/// Single-quotes `text` for /bin/sh.
inline std::string shell_quote(std::string_view text) {
  std::string quoted = "'";
  for (const char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += '\'';
  return quoted;
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr together
};

/// Runs `command` through /bin/sh and collects its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  std::array<char, 4096> buffer{};
  std::size_t read = 0;
  while ((read = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), read);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

/// A throwaway PostgreSQL cluster of our own (scripts/lib/pgctl), in a fresh
/// temporary directory, destroyed with this object. Tests that stop, kill or
/// freeze the server use one of these, never the suite's shared cluster.
class TempCluster {
 public:
  explicit TempCluster(int max_connections = 100) {
    char pattern[] = "/tmp/poolscope-cluster.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    const auto created =
        pgctl("create " + shell_quote(dir_) + " " + std::to_string(max_connections));
    if (created.exit_code != 0) {
      destroy();
      throw std::runtime_error("pgctl create failed: " + created.output);
    }
    std::ifstream env(dir_ + "/env");
    for (std::string line; std::getline(env, line);) {
      const auto equals = line.find('=');
      if (equals == std::string::npos) continue;
      const std::string key = line.substr(0, equals);
      const std::string value = line.substr(equals + 1);
      if (key == "DATABASE_URL") url_ = value;
      if (key == "POOLSCOPE_DB_PASSWORD") password_ = value;
      if (key == "PGPORT") port_ = value;
    }
    if (url_.empty() || password_.empty()) {
      destroy();
      throw std::runtime_error("pgctl create wrote no DATABASE_URL/POOLSCOPE_DB_PASSWORD");
    }
  }
  ~TempCluster() { destroy(); }
  TempCluster(const TempCluster&) = delete;
  TempCluster& operator=(const TempCluster&) = delete;

  const std::string& url() const { return url_; }
  const std::string& password() const { return password_; }
  const std::string& port() const { return port_; }
  const std::string& dir() const { return dir_; }

  /// `pg_ctl stop -m immediate`: backends die without a goodbye to clients.
  void stop_immediate() { checked("stop " + shell_quote(dir_) + " immediate"); }
  void start() { checked("start " + shell_quote(dir_)); }
  /// SIGSTOP / SIGCONT on the postmaster and every backend.
  void freeze() { checked("kill-stop " + shell_quote(dir_)); }
  void thaw() { checked("kill-cont " + shell_quote(dir_)); }

  /// Runs one SQL statement as superuser and returns the first column of the
  /// first row ("" when there is none). Uses one cached connection (TCP,
  /// trust for `postgres`), reopened once when the server restarted.
  std::string psql(const std::string& sql) {
    for (int attempt = 0;; ++attempt) {
      try {
        if (!admin_ || !admin_->is_open()) {
          admin_ = std::make_unique<pqxx::connection>(
              "host=127.0.0.1 port=" + port_ +
              " user=postgres dbname=postgres application_name=chaos_admin connect_timeout=5");
        }
        pqxx::nontransaction transaction(*admin_);
        const pqxx::result rows = transaction.exec(sql);
        if (rows.empty() || rows[0][0].is_null()) return "";
        return rows[0][0].c_str();
      } catch (const pqxx::broken_connection&) {
        admin_.reset();
        if (attempt > 0) throw;
      }
    }
  }

  /// Destroys the cluster now (idempotent); also used before a hard exit.
  void destroy() noexcept {
    admin_.reset();
    if (dir_.empty()) return;
    try {
      pgctl("destroy " + shell_quote(dir_));
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    } catch (...) {
    }
    dir_.clear();
  }

 private:
  static CommandResult pgctl(const std::string& arguments) {
    return run_command(pgctl_path() + " " + arguments);
  }
  void checked(const std::string& arguments) const {
    const auto result = pgctl(arguments);
    if (result.exit_code != 0)
      throw std::runtime_error("pgctl " + arguments + ": " + result.output);
  }

  std::string dir_, url_, password_, port_;
  std::unique_ptr<pqxx::connection> admin_;
};

/// The shared test database from scripts/test; fails loudly when unset.
inline std::string shared_database_url() {
  const char* url = std::getenv("POOLSCOPE_TEST_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    throw std::runtime_error(
        "POOLSCOPE_TEST_DATABASE_URL is not set: run the suite through scripts/test, which starts "
        "a throwaway PostgreSQL");
  }
  return url;
}

}  // namespace poolscope::testing
