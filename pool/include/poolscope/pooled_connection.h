#pragma once

#include <cstdint>
#include <memory>
#include <pqxx/connection>

namespace poolscope {

class Connection;
namespace detail {
class PoolCore;
struct Slot;
}  // namespace detail

/// A connection borrowed from a Pool; gives it back when destroyed.
///
/// Move-only. The connection returns to the pool on destruction (also while an
/// exception unwinds) or on release(). A connection returned broken or inside
/// an open transaction is closed and replaced, never handed out again. The
/// handle keeps the pool's internals alive, so it may outlive the Pool object.
/// Not thread-safe: one handle, one thread at a time (libpqxx's rule).
class PooledConnection {
 public:
  PooledConnection() noexcept = default;
  PooledConnection(PooledConnection&& other) noexcept;
  PooledConnection& operator=(PooledConnection&& other) noexcept;
  PooledConnection(const PooledConnection&) = delete;
  PooledConnection& operator=(const PooledConnection&) = delete;
  ~PooledConnection();

  /// The libpqxx connection. Precondition: the handle holds a connection.
  pqxx::connection& operator*() const;
  pqxx::connection* operator->() const;

  /// The pool's view of the connection (for tests and custom factories).
  Connection& connection() const;

  /// The pool-wide id of this connection ("conn_<id>" in logs).
  std::uint64_t id() const noexcept;

  /// Gives the connection back now; the handle becomes empty. Idempotent.
  void release() noexcept;

  /// Tells the pool to close this connection instead of reusing it (for
  /// example after an error that left its session state unknown).
  void mark_broken() noexcept;

  /// True while the handle holds a connection.
  explicit operator bool() const noexcept { return slot_ != nullptr; }

 private:
  friend class Pool;
  PooledConnection(detail::PoolCore* core, detail::Slot* slot) noexcept
      : core_(core), slot_(slot) {}

  detail::PoolCore* core_ = nullptr;  // alive while slot_ is set (see PoolCore)
  detail::Slot* slot_ = nullptr;
};

}  // namespace poolscope
