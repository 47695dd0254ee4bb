#include "poolscope/pooled_connection.h"

#include <stdexcept>
#include <utility>

#include "pool_core.h"

namespace poolscope {

PooledConnection::PooledConnection(PooledConnection&& other) noexcept
    : core_(std::exchange(other.core_, nullptr)), slot_(std::exchange(other.slot_, nullptr)) {}

PooledConnection& PooledConnection::operator=(PooledConnection&& other) noexcept {
  if (this != &other) {
    release();
    core_ = std::exchange(other.core_, nullptr);
    slot_ = std::exchange(other.slot_, nullptr);
  }
  return *this;
}

PooledConnection::~PooledConnection() { release(); }

pqxx::connection& PooledConnection::operator*() const { return connection().native(); }

pqxx::connection* PooledConnection::operator->() const { return &connection().native(); }

Connection& PooledConnection::connection() const {
  if (slot_ == nullptr) throw std::logic_error("poolscope::PooledConnection is empty");
  return *slot_->connection;
}

std::uint64_t PooledConnection::id() const noexcept { return slot_ != nullptr ? slot_->id : 0; }

void PooledConnection::release() noexcept {
  if (slot_ == nullptr) return;
  detail::Slot* slot = std::exchange(slot_, nullptr);
  std::exchange(core_, nullptr)->release(slot);
}

void PooledConnection::mark_broken() noexcept {
  if (slot_ != nullptr) slot_->marked_broken.store(true, std::memory_order_relaxed);
}

}  // namespace poolscope
