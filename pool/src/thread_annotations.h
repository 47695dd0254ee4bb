#pragma once

// A mutex and lock that clang's -Wthread-safety analysis understands, so that
// every field marked POOLSCOPE_GUARDED_BY is only touched with its mutex held
// and every *_locked function is only called with it held. Other compilers
// see plain std::mutex and std::unique_lock. scripts/test builds the pool once
// with clang and -Wthread-safety -Werror.

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define POOLSCOPE_TSA(x) __attribute__((x))
#else
#define POOLSCOPE_TSA(x)
#endif

#define POOLSCOPE_CAPABILITY(name) POOLSCOPE_TSA(capability(name))
#define POOLSCOPE_SCOPED_CAPABILITY POOLSCOPE_TSA(scoped_lockable)
#define POOLSCOPE_GUARDED_BY(mutex) POOLSCOPE_TSA(guarded_by(mutex))
#define POOLSCOPE_REQUIRES(...) POOLSCOPE_TSA(requires_capability(__VA_ARGS__))
#define POOLSCOPE_ACQUIRE(...) POOLSCOPE_TSA(acquire_capability(__VA_ARGS__))
#define POOLSCOPE_RELEASE(...) POOLSCOPE_TSA(release_capability(__VA_ARGS__))
#define POOLSCOPE_TRY_ACQUIRE(...) POOLSCOPE_TSA(try_acquire_capability(__VA_ARGS__))
#define POOLSCOPE_EXCLUDES(...) POOLSCOPE_TSA(locks_excluded(__VA_ARGS__))
#define POOLSCOPE_NO_THREAD_SAFETY_ANALYSIS POOLSCOPE_TSA(no_thread_safety_analysis)

namespace poolscope::detail {

/// std::mutex as a capability the analysis tracks.
class POOLSCOPE_CAPABILITY("mutex") Mutex {
 public:
  void lock() POOLSCOPE_ACQUIRE() { mutex_.lock(); }
  void unlock() POOLSCOPE_RELEASE() { mutex_.unlock(); }
  bool try_lock() POOLSCOPE_TRY_ACQUIRE(true) { return mutex_.try_lock(); }
  std::mutex& native() noexcept { return mutex_; }

 private:
  std::mutex mutex_;
};

/// std::unique_lock over a Mutex: held from construction (or from a
/// successful try_lock()/lock() after std::defer_lock) to destruction or
/// unlock(). Converts to std::unique_lock<std::mutex>& for condition
/// variable waits, which give the mutex back before they return.
class POOLSCOPE_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mutex) POOLSCOPE_ACQUIRE(mutex) : lock_(mutex.native()) {}
  UniqueLock(Mutex& mutex, std::defer_lock_t) POOLSCOPE_EXCLUDES(mutex)
      : lock_(mutex.native(), std::defer_lock) {}
  ~UniqueLock() POOLSCOPE_RELEASE() = default;

  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;

  void lock() POOLSCOPE_ACQUIRE() { lock_.lock(); }
  void unlock() POOLSCOPE_RELEASE() { lock_.unlock(); }
  bool try_lock() POOLSCOPE_TRY_ACQUIRE(true) { return lock_.try_lock(); }

  operator std::unique_lock<std::mutex>&() noexcept { return lock_; }  // NOLINT: for waits

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace poolscope::detail
