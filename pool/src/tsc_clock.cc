#include "tsc_clock.h"

#include <fstream>
#include <string>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace poolscope::detail {

#if defined(__x86_64__)
namespace {

struct TimeStampCounter {
  static std::uint64_t ticks() noexcept { return __rdtsc(); }
  static std::int64_t steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// The kernel keeps CLOCK_MONOTONIC with the counter only after checking that
// it is synchronised across CPUs and does not stop or change rate.
bool kernel_keeps_time_with_tsc() {
  std::ifstream source("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string name;
  return static_cast<bool>(source >> name) && name == "tsc";
}

}  // namespace

std::chrono::steady_clock::time_point fast_steady_now() noexcept {
  static TickClock<TimeStampCounter> clock(kernel_keeps_time_with_tsc());
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(clock.now_ns()));
}
#else
std::chrono::steady_clock::time_point fast_steady_now() noexcept {
  return std::chrono::steady_clock::now();
}
#endif

}  // namespace poolscope::detail
