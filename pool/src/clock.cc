#include "poolscope/clock.h"

#include "tsc_clock.h"

namespace poolscope {
namespace {

class SystemClock final : public Clock {
 public:
  time_point now() const noexcept override { return detail::fast_steady_now(); }
  std::chrono::system_clock::time_point wall_now() const noexcept override {
    return std::chrono::system_clock::now();
  }
  std::cv_status wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                            time_point deadline) override {
    return cv.wait_until(lock, deadline);
  }
};

}  // namespace

std::shared_ptr<Clock> Clock::system() {
  static const std::shared_ptr<Clock> clock = std::make_shared<SystemClock>();
  return clock;
}

}  // namespace poolscope
