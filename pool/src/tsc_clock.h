#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace poolscope::detail {

// 128-bit intermediates for the tick-to-nanosecond products (GCC and Clang).
__extension__ using Int128 = __int128;
__extension__ using UInt128 = unsigned __int128;

/// steady_clock time computed from a cheaper tick counter (the CPU's
/// time-stamp counter): on a KVM guest reading it costs about 12 ns, where
/// clock_gettime(CLOCK_MONOTONIC) costs about 33 ns, and the pool reads the
/// clock twice per acquire/release cycle.
///
/// The conversion is a straight line through an anchor, a (ticks, ns) pair.
/// Until the first slope is known (kCalibration after the first call), and
/// for good once the counter is found wrong, every call returns the steady
/// clock itself. A call that finds the anchor older than kAnchorPeriod, or
/// the counter behind it, reads the steady clock and checks the line
/// against it. Off by more than kMaxError (a counter that jumped, as when a
/// virtual machine is restored), the counter is not trusted again: from
/// then on time is the steady clock's, which may be up to kMaxError behind
/// the last line. Otherwise a new line starts where the old one ends, with
/// the slope measured since the last anchor, steered to meet the steady
/// clock one period later: the line never steps, so time read on one
/// thread does not go back, and errors do not build up.
///
/// `Source` provides `static std::uint64_t ticks() noexcept` and
/// `static std::int64_t steady_ns() noexcept`; tests substitute their own.
/// Thread-safe: readers use a sequence lock, one caller at a time re-anchors.
template <class Source>
class TickClock {
 public:
  static constexpr std::int64_t kCalibration = 10'000'000;    // ns
  static constexpr std::int64_t kAnchorPeriod = 100'000'000;  // ns
  static constexpr std::int64_t kMaxError = 1'000'000;        // ns
  static constexpr std::int64_t kMaxSkew = 1'000;             // ns behind the anchor

  /// `usable`: whether ticks() is a counter all CPUs share at a constant rate.
  explicit TickClock(bool usable) : state_(usable ? kCalibrating : kSteady) {}

  std::int64_t now_ns() noexcept {
    if (state_.load(std::memory_order_acquire) != kTicking) return slow_now();
    std::uint64_t ticks = 0;
    Line line;
    std::uint32_t before = 0;
    do {
      before = sequence_.load(std::memory_order_acquire);
      // Read with the line it is converted by: a thread preempted here
      // while another re-anchors reads the counter again.
      ticks = Source::ticks();
      // Acquire loads keep the second look at the sequence after them (no
      // stand-alone fence: ThreadSanitizer does not model those).
      line.base_ns = base_ns_.load(std::memory_order_acquire);
      line.base_ticks = base_ticks_.load(std::memory_order_acquire);
      line.ns_per_tick = ns_per_tick_.load(std::memory_order_acquire);
    } while ((before & 1U) != 0 || before != sequence_.load(std::memory_order_relaxed));
    const auto elapsed = static_cast<std::int64_t>(ticks - line.base_ticks);
    // A little behind the anchor is another CPU's counter, or this read
    // executed a few cycles early; further behind, the counter jumped back.
    if (elapsed >= -skew_ticks_.load(std::memory_order_relaxed) &&
        elapsed <= period_ticks_.load(std::memory_order_relaxed)) {
      return line.at(elapsed);
    }
    // Time for a check and a new anchor. While another thread does that, the
    // old line stands.
    std::unique_lock lock(anchor_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return line.at(elapsed);
    return reanchor_locked(read_pair());
  }

  /// True once readings come from the tick counter.
  bool ticking() const noexcept { return state_.load(std::memory_order_acquire) == kTicking; }
  /// True once the counter was found off the steady clock and given up.
  bool gave_up() const noexcept { return gave_up_.load(std::memory_order_acquire); }

 private:
  enum State : int { kCalibrating, kTicking, kSteady };

  // ns = base_ns + elapsed ticks * ns_per_tick, the slope in 32.32 fixed point.
  struct Line {
    std::int64_t base_ns = 0;
    std::uint64_t base_ticks = 0;
    std::uint64_t ns_per_tick = 0;
    std::int64_t at(std::int64_t elapsed) const noexcept {
      const Int128 scaled = static_cast<Int128>(elapsed) * static_cast<Int128>(ns_per_tick);
      return base_ns + static_cast<std::int64_t>(scaled >> 32);
    }
  };

  struct Pair {
    std::uint64_t ticks = 0;
    std::int64_t ns = 0;
  };

  // The steady clock with the counter read on both sides; the counter's
  // midpoint stands for the moment of the steady reading.
  static Pair read_pair() noexcept {
    Pair best;
    std::uint64_t best_spread = UINT64_MAX;
    for (int attempt = 0; attempt < 3; ++attempt) {
      const std::uint64_t first = Source::ticks();
      const std::int64_t ns = Source::steady_ns();
      const std::uint64_t second = Source::ticks();
      const std::uint64_t spread = second - first;
      if (spread < best_spread) {
        best_spread = spread;
        best = Pair{first + spread / 2, ns};
      }
    }
    return best;
  }

  // Before the first line and after giving up: the steady clock.
  std::int64_t slow_now() noexcept {
    if (state_.load(std::memory_order_acquire) == kSteady) return Source::steady_ns();
    std::unique_lock lock(anchor_mutex_, std::try_to_lock);
    if (!lock.owns_lock() || state_.load(std::memory_order_relaxed) != kCalibrating) {
      return Source::steady_ns();
    }
    return calibrate_locked(read_pair());
  }

  std::int64_t calibrate_locked(const Pair& pair) noexcept {
    if (!have_anchor_) {
      have_anchor_ = true;
      last_ = pair;
      return pair.ns;
    }
    const std::int64_t span_ns = pair.ns - last_.ns;
    if (span_ns < kCalibration) return pair.ns;
    if (pair.ticks <= last_.ticks) return give_up(pair.ns);
    const std::uint64_t span_ticks = pair.ticks - last_.ticks;
    const auto period =
        static_cast<std::int64_t>(static_cast<Int128>(span_ticks) * kAnchorPeriod / span_ns);
    period_ticks_.store(period, std::memory_order_relaxed);
    skew_ticks_.store(period / (kAnchorPeriod / kMaxSkew), std::memory_order_relaxed);
    publish(Line{pair.ns, pair.ticks, rate(span_ns, span_ticks)});
    last_ = pair;
    state_.store(kTicking, std::memory_order_release);
    return pair.ns;
  }

  std::int64_t reanchor_locked(const Pair& pair) noexcept {
    const Line old{base_ns_.load(std::memory_order_relaxed),
                   base_ticks_.load(std::memory_order_relaxed),
                   ns_per_tick_.load(std::memory_order_relaxed)};
    const auto elapsed = static_cast<std::int64_t>(pair.ticks - old.base_ticks);
    const std::int64_t predicted = old.at(elapsed);
    const std::int64_t error = predicted - pair.ns;
    if (error > kMaxError || error < -kMaxError) return give_up(pair.ns);
    // Another thread set a new anchor since this one looked.
    if (elapsed <= period_ticks_.load(std::memory_order_relaxed)) return predicted;
    if (pair.ns <= last_.ns || pair.ticks <= last_.ticks) return give_up(pair.ns);
    // The new line starts where the old one is, at the rate measured since
    // the last anchor, less the error spread over the next period.
    const Int128 correction =
        (static_cast<Int128>(error) << 32) / period_ticks_.load(std::memory_order_relaxed);
    const Int128 slope =
        static_cast<Int128>(rate(pair.ns - last_.ns, pair.ticks - last_.ticks)) - correction;
    if (slope <= 0) return give_up(pair.ns);
    publish(Line{predicted, pair.ticks, static_cast<std::uint64_t>(slope)});
    last_ = pair;
    return predicted;
  }

  // Nanoseconds per tick in 32.32 fixed point.
  static std::uint64_t rate(std::int64_t span_ns, std::uint64_t span_ticks) noexcept {
    return static_cast<std::uint64_t>((static_cast<UInt128>(span_ns) << 32) / span_ticks);
  }

  std::int64_t give_up(std::int64_t ns) noexcept {
    gave_up_.store(true, std::memory_order_release);
    state_.store(kSteady, std::memory_order_release);
    return ns;
  }

  void publish(const Line& line) noexcept {
    const std::uint32_t sequence = sequence_.load(std::memory_order_relaxed);
    sequence_.store(sequence + 1, std::memory_order_relaxed);
    // Release stores: a reader that sees any new field also sees the odd
    // sequence number stored before it.
    base_ns_.store(line.base_ns, std::memory_order_release);
    base_ticks_.store(line.base_ticks, std::memory_order_release);
    ns_per_tick_.store(line.ns_per_tick, std::memory_order_release);
    sequence_.store(sequence + 2, std::memory_order_release);
  }

  std::atomic<int> state_;
  std::atomic<bool> gave_up_{false};
  std::atomic<std::uint32_t> sequence_{0};
  std::atomic<std::int64_t> base_ns_{0};
  std::atomic<std::uint64_t> base_ticks_{0};
  std::atomic<std::uint64_t> ns_per_tick_{0};
  std::atomic<std::int64_t> period_ticks_{0};
  std::atomic<std::int64_t> skew_ticks_{0};
  std::mutex anchor_mutex_;
  // The last steady reading the line was measured from (anchor_mutex_).
  Pair last_;
  bool have_anchor_ = false;
};

/// The process's clock behind Clock::system(): the time-stamp counter on
/// x86-64 when the kernel itself keeps time with it (its clocksource is
/// "tsc", so the counter is synchronised across CPUs and runs at a constant
/// rate), std::chrono::steady_clock otherwise.
std::chrono::steady_clock::time_point fast_steady_now() noexcept;

}  // namespace poolscope::detail
