#pragma once

// Test doubles injected through Pool's clock and connection factory, so time
// and failure paths run without sleeping and without a database.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "poolscope/clock.h"
#include "poolscope/connection.h"
#include "poolscope/error.h"

namespace poolscope::testing {

/// A clock that moves only when advance() is called. Waits poll briefly in
/// real time and report a timeout once fake time passes the deadline.
class FakeClock final : public Clock {
 public:
  time_point now() const noexcept override {
    return time_point(std::chrono::nanoseconds(now_ns_.load()));
  }
  std::chrono::system_clock::time_point wall_now() const noexcept override {
    return std::chrono::system_clock::time_point(std::chrono::seconds(1760000000)) +
           std::chrono::nanoseconds(now_ns_.load());
  }
  std::cv_status wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                            time_point deadline) override {
    if (now() >= deadline) return std::cv_status::timeout;
    cv.wait_for(lock, std::chrono::milliseconds(1));
    return now() >= deadline ? std::cv_status::timeout : std::cv_status::no_timeout;
  }
  void advance(std::chrono::nanoseconds by) { now_ns_ += by.count(); }

 private:
  // Starts well after zero so that default-constructed time points are "long ago".
  std::atomic<std::int64_t> now_ns_{std::chrono::nanoseconds(std::chrono::hours(1)).count()};
};

/// What the fake database does; shared by the factory and its connections.
struct FakeServer {
  std::atomic<bool> down{false};             ///< connect() and validate() fail
  std::atomic<bool> fail_validation{false};  ///< validate() fails
  std::atomic<int> generation{0};            ///< connections opened so far
  std::atomic<int> killed_below{0};          ///< connections older than this were killed

  /// Like pg_terminate_backend on every backend that exists now.
  void terminate_all() { killed_below = generation.load(); }
  std::atomic<int> connects{0};
  std::atomic<int> validations{0};
  std::atomic<int> probes{0};
  std::atomic<int> closed{0};
  /// Runs at the start of every connect() (set before the pool exists), e.g.
  /// to make connecting take fake time or to hold it until a test is ready.
  std::function<void()> before_connect;
};

class FakeConnection final : public Connection {
 public:
  explicit FakeConnection(std::shared_ptr<FakeServer> server)
      : server_(std::move(server)), generation_(server_->generation++) {}
  ~FakeConnection() override { ++server_->closed; }

  bool is_open() const noexcept override { return open_.load(); }
  bool in_transaction() const noexcept override { return in_transaction_.load(); }
  bool probe() noexcept override {
    ++server_->probes;
    return open_ && generation_ >= server_->killed_below;
  }
  void validate(std::chrono::milliseconds /*timeout*/) override {
    ++server_->validations;
    if (server_->down || server_->fail_validation || !open_) {
      throw Error("Connection validation failed: fake server");
    }
  }
  pqxx::connection& native() override { throw std::logic_error("fake connection"); }

  void break_it() { open_ = false; }
  void begin_transaction() { in_transaction_ = true; }

 private:
  std::shared_ptr<FakeServer> server_;
  const int generation_;
  std::atomic<bool> open_{true};
  std::atomic<bool> in_transaction_{false};
};

class FakeFactory final : public ConnectionFactory {
 public:
  explicit FakeFactory(std::shared_ptr<FakeServer> server) : server_(std::move(server)) {}
  std::unique_ptr<Connection> connect() override {
    if (server_->before_connect) server_->before_connect();
    if (server_->down) throw Error("Database connection refused: fake server is down");
    ++server_->connects;
    return std::make_unique<FakeConnection>(server_);
  }
  std::string describe() const override { return "fake"; }

 private:
  std::shared_ptr<FakeServer> server_;
};

/// Waits (in real time, bounded) for a condition that background threads
/// make true. Returns whether it became true; never asserts on durations.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace poolscope::testing
