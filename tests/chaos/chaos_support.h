#pragma once

// Shared by the fault-injection tests: throwaway PostgreSQL clusters (through
// tests/support/pgctl), capture of poolscope's log lines, and small helpers
// for running commands and checking that a secret never shows up.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "fakes.h"
#include "poolscope/logging.h"
#include "poolscope/pool.h"
#include "poolscope/pool_config.h"
#include "poolscope/pool_metrics.h"
#include "poolscope/pool_statistics.h"

namespace poolscope::chaos {

using namespace std::chrono_literals;
using poolscope::testing::eventually;

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

inline std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

/// A throwaway PostgreSQL cluster of our own (tests/support/pgctl), in a fresh
/// temporary directory, destroyed with this object. Tests that stop, kill or
/// freeze the server use one of these, never the suite's shared cluster.
class TempCluster {
 public:
  explicit TempCluster(int max_connections = 100) {
    char pattern[] = "/tmp/poolscope-chaos.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    const auto created = pgctl("create " + shell_quote(dir_) + " " + std::to_string(max_connections));
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
    return run_command(std::string(POOLSCOPE_PGCTL) + " " + arguments);
  }
  void checked(const std::string& arguments) const {
    const auto result = pgctl(arguments);
    if (result.exit_code != 0) throw std::runtime_error("pgctl " + arguments + ": " + result.output);
  }

  std::string dir_, url_, password_, port_;
  std::unique_ptr<pqxx::connection> admin_;
};

/// The suite's shared cluster (scripts/test exports it) when there is one,
/// else a cluster of our own, so each test also runs alone. Only for tests
/// that leave the server running.
class AnyCluster {
 public:
  AnyCluster() {
    const char* url = std::getenv("POOLSCOPE_TEST_DATABASE_URL");
    const char* password = std::getenv("POOLSCOPE_TEST_DB_PASSWORD");
    if (url != nullptr && *url != '\0' && password != nullptr && *password != '\0') {
      url_ = url;
      password_ = password;
    } else {
      own_ = std::make_unique<TempCluster>();
      url_ = own_->url();
      password_ = own_->password();
    }
  }
  const std::string& url() const { return url_; }
  const std::string& password() const { return password_; }

 private:
  std::unique_ptr<TempCluster> own_;
  std::string url_, password_;
};

/// `url` with a query parameter added (libpq URI form).
inline std::string with_parameter(const std::string& url, const std::string& parameter) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + parameter;
}

/// Collects every line poolscope logs. Must be installed before the first
/// pool of the process logs anything: poolscope adopts an spdlog logger that
/// is already registered under the name "poolscope".
class LogCapture {
 public:
  static LogCapture& install(LogLevel level = LogLevel::kDebug) {
    static LogCapture* capture = [] {
      auto* created = new LogCapture();
      auto logger = std::make_shared<spdlog::logger>("poolscope", created->sink_);
      logger->set_pattern("%v");
      logger->set_level(spdlog::level::trace);
      spdlog::register_logger(logger);
      return created;
    }();
    configure_logging(level, LogFormat::kJson);
    return *capture;
  }

  std::vector<std::string> lines() const { return sink_->lines(); }

 private:
  class Sink final : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::vector<std::string> lines() {
      std::lock_guard<std::mutex> lock(this->mutex_);
      return lines_;
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& message) override {
      lines_.emplace_back(message.payload.data(), message.payload.size());
    }
    void flush_() override {}

   private:
    std::vector<std::string> lines_;
  };

  std::shared_ptr<Sink> sink_ = std::make_shared<Sink>();
};

/// Where `secret` shows up in `texts` (empty when nowhere), as
/// "<label>: <offending text>" lines for the failure message.
inline std::vector<std::string> find_secret(const std::string& secret, const std::string& label,
                                            const std::vector<std::string>& texts) {
  std::vector<std::string> found;
  if (secret.empty()) return found;
  for (const auto& text : texts) {
    if (text.find(secret) != std::string::npos) found.push_back(label + ": " + text.substr(0, 400));
  }
  return found;
}

/// Publishes one pool's metrics as the exporter does, so a test can look at
/// the scrape text. Create it once per pool (each adds an observer).
class Scraper {
 public:
  explicit Scraper(Pool& pool)
      : pool_(pool), registry_(std::make_shared<prometheus::Registry>()), metrics_(registry_) {
    metrics_.add(pool_);
  }
  ~Scraper() { metrics_.remove(pool_); }

  std::string text() const {
    auto families = registry_->Collect();
    auto snapshot = metrics_.Collect();
    families.insert(families.end(), snapshot.begin(), snapshot.end());
    return prometheus::TextSerializer().Serialize(families);
  }

  /// Every text the pool exposes about itself: a scrape and last_error.
  std::vector<std::string> exposed_texts() const {
    std::vector<std::string> texts{text()};
    if (const auto error = pool_.get_statistics().last_error) texts.push_back(*error);
    return texts;
  }

 private:
  Pool& pool_;
  std::shared_ptr<prometheus::Registry> registry_;
  PoolMetrics metrics_;
};

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace poolscope::chaos
