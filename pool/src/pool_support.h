#pragma once

// Small pieces shared by the files that implement PoolCore (pool.cc and
// pool_*.cc); nothing here is part of the public API.

#include <chrono>
#include <cstdint>
#include <source_location>
#include <string>

#include "poolscope/clock.h"

namespace poolscope::detail {

inline double to_ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
inline double to_seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Far enough to mean "until notified", near enough not to overflow.
inline constexpr auto kIdleWait = std::chrono::hours(1);

/// A connection held longer than the leak threshold, as it is logged.
struct LeakReport {
  std::uint64_t id;
  double held_seconds;
  std::source_location site;
  void* caller;
  int backend_pid;
};

/// Logs a leak when it is detected (warning) or when the connection comes
/// back (`returned`, info), with the acquisition site and caller.
void log_leak(const std::string& pool, const LeakReport& leak, bool returned);

}  // namespace poolscope::detail
