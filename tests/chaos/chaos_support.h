#pragma once

// Shared by the fault-injection tests: throwaway PostgreSQL clusters (through
// scripts/lib/pgctl), capture of poolscope's log lines, and small helpers
// for running commands and checking that a secret never shows up.

#include <prometheus/text_serializer.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
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
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cluster.h"
#include "fakes.h"
#include "poolscope/logging.h"
#include "poolscope/pool.h"
#include "poolscope/pool_config.h"
#include "poolscope/pool_metrics.h"
#include "poolscope/pool_statistics.h"

namespace poolscope::chaos {

using namespace std::chrono_literals;
using poolscope::testing::CommandResult;
using poolscope::testing::eventually;
using poolscope::testing::run_command;
using poolscope::testing::shell_quote;
using poolscope::testing::TempCluster;

inline std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

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
  explicit Scraper(Pool& pool) : pool_(pool) { metrics_.add(pool_); }
  ~Scraper() { metrics_.remove(pool_); }

  std::string text() const { return prometheus::TextSerializer().Serialize(metrics_.Collect()); }

  /// Every text the pool exposes about itself: a scrape and last_error.
  std::vector<std::string> exposed_texts() const {
    std::vector<std::string> texts{text()};
    if (const auto error = pool_.get_statistics().last_error) texts.push_back(*error);
    return texts;
  }

 private:
  Pool& pool_;
  PoolMetrics metrics_;
};

/// Where `secret` shows up in the captured log lines or in what the pool
/// exposes (empty when nowhere), for one EXPECT at the end of a test.
inline std::vector<std::string> find_secret_in_logs_and_scrape(const std::string& secret,
                                                               const LogCapture& logs,
                                                               const Scraper& scraper) {
  auto found = find_secret(secret, "log", logs.lines());
  for (auto& exposed : find_secret(secret, "exposed", scraper.exposed_texts())) {
    found.push_back(std::move(exposed));
  }
  return found;
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace poolscope::chaos
