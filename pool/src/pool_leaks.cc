#include <cxxabi.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "log.h"
#include "pool_core.h"
#include "pool_support.h"

// Leak reporting: the log lines and the leak part of a statistics snapshot.

namespace poolscope::detail {

namespace {

std::string describe_caller(void* address) {
  if (address == nullptr) return "";
  Dl_info info{};
  if (dladdr(address, &info) == 0) return fmt::format("{}", address);
  const char* object = info.dli_fname != nullptr ? info.dli_fname : "?";
  if (info.dli_sname == nullptr) {
    const auto offset = reinterpret_cast<std::uintptr_t>(address) -
                        reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    return fmt::format("{}+{:#x}", object, offset);
  }
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  std::free(demangled);
  const auto offset =
      reinterpret_cast<std::uintptr_t>(address) - reinterpret_cast<std::uintptr_t>(info.dli_saddr);
  return fmt::format("{}+{:#x} ({})", name, offset, object);
}

}  // namespace

void log_leak(const std::string& pool, const LeakReport& leak, bool returned) {
  nlohmann::json stack = nlohmann::json::array();
  stack.push_back(fmt::format("{} at {}:{}", leak.site.function_name(), leak.site.file_name(),
                              leak.site.line()));
  if (const auto caller = describe_caller(leak.caller); !caller.empty()) stack.push_back(caller);
  const std::string id = fmt::format("conn_{}", leak.id);
  nlohmann::json context = {{"pool", pool},
                            {"connection_id", id},
                            {"held_duration_seconds", leak.held_seconds},
                            {"backend_pid", leak.backend_pid},
                            {"stack_trace", stack}};
  if (returned) {
    log(LogLevel::kInfo, fmt::format("Leaked connection returned: {}", id), context);
  } else {
    log(LogLevel::kWarning, fmt::format("Potential connection leak detected: {}", id), context);
  }
}

void PoolCore::fill_leak_snapshot_locked(PoolStatistics& s, Clock::time_point now) const {
  std::optional<Clock::time_point> oldest_lent;
  for (const auto& slot : slots_) {
    if (!slot->lent) continue;
    if (!oldest_lent || slot->lent_at < *oldest_lent) oldest_lent = slot->lent_at;
    if (!slot->leak_reported) continue;
    ++s.leaked_connections;
    const double held = to_seconds(now - slot->lent_at);
    const std::string_view file = slot->site.file_name();
    const std::uint32_t line = slot->site.line();
    const std::string_view function = slot->site.function_name();
    s.leaked.push_back(
        LeakedConnection{slot->id, held, std::string(file), line, std::string(function)});
    auto site = std::find_if(s.leak_sites.begin(), s.leak_sites.end(), [&](const LeakSite& known) {
      return known.line == line && known.file == file && known.function == function;
    });
    if (site == s.leak_sites.end()) {
      s.leak_sites.push_back(LeakSite{std::string(file), line, std::string(function), 0, 0.0});
      site = s.leak_sites.end() - 1;
    }
    ++site->connections;
    site->oldest_held_seconds = std::max(site->oldest_held_seconds, held);
  }
  if (oldest_lent) s.oldest_held_seconds = to_seconds(now - *oldest_lent);
  // Leaks are rare, so the lists are short before they are cut; when they are
  // not, the oldest leaks and the busiest sites are the ones worth reading.
  std::sort(s.leaked.begin(), s.leaked.end(),
            [](const auto& a, const auto& b) { return a.held_seconds > b.held_seconds; });
  if (s.leaked.size() > kMaxLeakedConnectionsReported)
    s.leaked.resize(kMaxLeakedConnectionsReported);
  std::sort(s.leak_sites.begin(), s.leak_sites.end(), [](const auto& a, const auto& b) {
    return a.connections != b.connections ? a.connections > b.connections
                                          : a.oldest_held_seconds > b.oldest_held_seconds;
  });
  if (s.leak_sites.size() > kMaxLeakSitesReported) s.leak_sites.resize(kMaxLeakSitesReported);
}

}  // namespace poolscope::detail
