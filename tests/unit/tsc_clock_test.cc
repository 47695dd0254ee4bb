#include "tsc_clock.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace poolscope::detail {
namespace {

// A counter and a steady clock the test moves by hand: the counter runs at
// `ticks_per_10k_ns` ticks per 10 µs of steady time unless a test makes it
// jump or change rate.
struct FakeSource {
  static inline std::atomic<std::int64_t> steady{1'000'000'000};
  static inline std::atomic<std::uint64_t> ticks_offset{5'000};
  static inline std::atomic<std::uint64_t> ticks_per_10k_ns{30'000};
  static std::uint64_t ticks() noexcept {
    return ticks_offset.load() +
           static_cast<std::uint64_t>(steady.load()) * ticks_per_10k_ns.load() / 10'000;
  }
  // steady_ns() is off by up to ± jitter ns, as a real reading taken
  // between two counter reads is.
  static inline std::atomic<std::int64_t> jitter{0};
  static inline std::atomic<std::uint64_t> noise{1};
  static std::int64_t steady_ns() noexcept {
    const std::int64_t amplitude = jitter.load();
    if (amplitude == 0) return steady.load();
    const std::uint64_t next = noise.load() * 6364136223846793005ULL + 1442695040888963407ULL;
    noise.store(next);
    const auto offset = static_cast<std::int64_t>((next >> 33) % (2 * amplitude + 1)) - amplitude;
    return steady.load() + offset;
  }
  static void reset() {
    steady = 1'000'000'000;
    ticks_offset = 5'000;
    ticks_per_10k_ns = 30'000;
    jitter = 0;
  }
  static void advance(std::int64_t ns) { steady += ns; }
};

using FakeClock = TickClock<FakeSource>;

class TickClockTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeSource::reset(); }
  // Takes `clock` through its calibration: from here on it reads the counter.
  static void calibrate(FakeClock& clock) {
    clock.now_ns();
    FakeSource::advance(FakeClock::kCalibration);
    clock.now_ns();
    ASSERT_TRUE(clock.ticking());
  }
};

TEST_F(TickClockTest, ReadsTheSteadyClockUntilCalibrated) {
  FakeClock clock(true);
  EXPECT_EQ(clock.now_ns(), FakeSource::steady.load());
  FakeSource::advance(FakeClock::kCalibration / 2);
  EXPECT_EQ(clock.now_ns(), FakeSource::steady.load());
  EXPECT_FALSE(clock.ticking());
  FakeSource::advance(FakeClock::kCalibration / 2);
  EXPECT_EQ(clock.now_ns(), FakeSource::steady.load());
  EXPECT_TRUE(clock.ticking());
}

TEST_F(TickClockTest, ComputesTheSteadyClockFromTicks) {
  FakeClock clock(true);
  ASSERT_NO_FATAL_FAILURE(calibrate(clock));
  // Between anchors the steady clock is not read: move only the counter
  // (through a steady value the clock cannot see) and compare.
  for (std::int64_t step : {1, 999, 123'457, 50'000'000}) {
    FakeSource::advance(step);
    EXPECT_NEAR(static_cast<double>(clock.now_ns()), static_cast<double>(FakeSource::steady.load()),
                2.0)
        << "after " << step << " ns";
  }
}

TEST_F(TickClockTest, FollowsARateChangeAtTheNextAnchor) {
  FakeClock clock(true);
  ASSERT_NO_FATAL_FAILURE(calibrate(clock));
  // The counter slows by 0.05 % without a jump: each anchor corrects the line.
  const auto now = static_cast<std::uint64_t>(FakeSource::steady.load());
  FakeSource::ticks_offset = FakeSource::ticks() - now * 29'985 / 10'000;
  FakeSource::ticks_per_10k_ns = 29'985;
  std::int64_t worst = 0;
  std::int64_t previous = clock.now_ns();
  for (int i = 0; i < 50; ++i) {
    FakeSource::advance(FakeClock::kAnchorPeriod / 7);
    const std::int64_t read = clock.now_ns();
    EXPECT_GE(read, previous);
    previous = read;
    worst = std::max(worst, std::abs(read - FakeSource::steady.load()));
  }
  EXPECT_TRUE(clock.ticking());
  EXPECT_FALSE(clock.gave_up());
  EXPECT_LT(worst, FakeClock::kMaxError);
}

TEST_F(TickClockTest, GivesUpOnACounterThatJumps) {
  FakeClock clock(true);
  ASSERT_NO_FATAL_FAILURE(calibrate(clock));
  // A migration to a host whose counter is 10 ms ahead.
  FakeSource::ticks_offset += 10'000'000 * FakeSource::ticks_per_10k_ns.load() / 10'000;
  FakeSource::advance(FakeClock::kAnchorPeriod + 1);
  clock.now_ns();
  EXPECT_TRUE(clock.gave_up());
  EXPECT_FALSE(clock.ticking());
  FakeSource::advance(12'345);
  EXPECT_EQ(clock.now_ns(), FakeSource::steady.load());
}

TEST_F(TickClockTest, GivesUpOnACounterThatJumpsBack) {
  FakeClock clock(true);
  ASSERT_NO_FATAL_FAILURE(calibrate(clock));
  // A virtual machine restored from a snapshot: the counter is 10 s behind.
  FakeSource::ticks_offset -= 10'000'000'000 * FakeSource::ticks_per_10k_ns.load() / 10'000;
  FakeSource::advance(1'000);
  EXPECT_EQ(clock.now_ns(), FakeSource::steady.load());
  EXPECT_TRUE(clock.gave_up());
}

// Noisy steady readings at every anchor for ten simulated hours, with a
// counter rate that is no whole number of ticks per nanosecond: the line must
// neither drift away from the steady clock nor step back.
TEST_F(TickClockTest, StaysWithinAMicrosecondOfANoisySteadyClockForTenHours) {
  FakeSource::ticks_per_10k_ns = 29'973;
  FakeClock clock(true);
  ASSERT_NO_FATAL_FAILURE(calibrate(clock));
  FakeSource::jitter = 20;
  std::int64_t previous = clock.now_ns();
  std::int64_t worst = 0;
  int went_back = 0;
  for (int i = 0; i < 360'000; ++i) {
    FakeSource::advance(FakeClock::kAnchorPeriod + 1'234);
    const std::int64_t read = clock.now_ns();
    if (read < previous) ++went_back;
    previous = read;
    worst = std::max(worst, std::abs(read - FakeSource::steady.load()));
  }
  EXPECT_EQ(went_back, 0);
  EXPECT_FALSE(clock.gave_up());
  EXPECT_LT(worst, 1'000) << "ns off the steady clock";
}

TEST_F(TickClockTest, UnusableCounterMeansTheSteadyClock) {
  FakeClock clock(false);
  for (int i = 0; i < 3; ++i) {
    FakeSource::advance(FakeClock::kCalibration);
    EXPECT_EQ(clock.now_ns(), FakeSource::steady.load());
  }
  EXPECT_FALSE(clock.ticking());
  EXPECT_FALSE(clock.gave_up());
}

// The real clock against steady_clock, across several anchors and threads.
TEST(FastSteadyNow, StaysWithSteadyClockAndNeverGoesBack) {
  std::vector<std::thread> threads;
  std::atomic<int> went_back{0};
  std::atomic<std::int64_t> worst_ns{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto previous = fast_steady_now();
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(350);
      while (std::chrono::steady_clock::now() < until) {
        const auto before = std::chrono::steady_clock::now();
        const auto read = fast_steady_now();
        const auto after = std::chrono::steady_clock::now();
        if (read < previous) ++went_back;
        previous = read;
        // Outside [before, after] only by the line's error.
        const auto off = read < before  ? before - read
                         : read > after ? read - after
                                        : std::chrono::nanoseconds(0);
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(off).count();
        std::int64_t seen = worst_ns.load();
        while (ns > seen && !worst_ns.compare_exchange_weak(seen, ns)) {
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(went_back.load(), 0);
  EXPECT_LT(worst_ns.load(), 1'000'000) << "ns off steady_clock";
}

}  // namespace
}  // namespace poolscope::detail
