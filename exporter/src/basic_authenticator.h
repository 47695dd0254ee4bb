#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace poolscope::exporter {

/// HTTP basic authentication against bcrypt hashes (the web configuration's
/// `basic_auth_users`), checked in-process with libxcrypt's crypt_r.
///
/// Successful checks are cached (bounded; keyed by an HMAC-SHA-256 of user
/// and password under a per-process random key, so the cache holds no
/// password), because bcrypt costs tens of milliseconds by design. An unknown
/// user costs a bcrypt comparison against a dummy hash of the same cost, so
/// response time does not reveal which user names exist. At most
/// `max_concurrent_checks` bcrypt comparisons run at once; a request that
/// finds them all busy is answered kBusy at once instead of waiting, so a
/// flood of bad credentials holds neither every core nor every HTTP worker,
/// and credentials found in the cache never wait behind it.
///
/// Thread-safe: authorize() may be called from any number of threads.
class BasicAuthenticator {
 public:
  /// Realm sent in WWW-Authenticate.
  static constexpr std::string_view kRealm = "poolscope";
  /// The WWW-Authenticate header value of a 401 response.
  static constexpr std::string_view kChallenge = "Basic realm=\"poolscope\"";

  /// Outcome of verify().
  enum class Verdict {
    kAuthorized,  ///< valid credentials (or auth disabled)
    kRefused,     ///< missing, malformed or wrong credentials
    kBusy,        ///< not checked: every bcrypt slot was in use; retry later
  };

  /// `users` maps user names to bcrypt hashes (validated by WebConfig). At most
  /// `cache_capacity` successful checks are remembered (oldest evicted first),
  /// and at most `max_concurrent_checks` (at least 1) bcrypt comparisons run
  /// at once.
  explicit BasicAuthenticator(std::map<std::string, std::string> users,
                              std::size_t cache_capacity = 1024,
                              std::size_t max_concurrent_checks = 2);
  ~BasicAuthenticator();

  BasicAuthenticator(const BasicAuthenticator&) = delete;
  BasicAuthenticator& operator=(const BasicAuthenticator&) = delete;

  /// True when users are configured (otherwise every request is authorized).
  bool enabled() const noexcept { return !users_.empty(); }

  /// True when `authorization` (the Authorization header value, "" when
  /// absent) carries valid Basic credentials, or when auth is disabled.
  /// Same as verify() == kAuthorized.
  bool authorize(std::string_view authorization);

  /// Checks the Authorization header value: the cache first, then bcrypt
  /// when a slot is free (kBusy when none is).
  Verdict verify(std::string_view authorization);

  /// True when auth is disabled or `authorization` carries credentials that
  /// an earlier check found valid and that are still cached. Never runs
  /// bcrypt: costs one HMAC.
  bool is_cached(std::string_view authorization) const;

  /// True when `password` is `user`'s password. kBusy counts as false.
  bool check(std::string_view user, std::string_view password);

  /// Checks `user`'s `password`, bcrypt only when a slot is free.
  Verdict verify(std::string_view user, std::string_view password);

  /// Number of cached successful checks (for tests).
  std::size_t cached() const;

 private:
  std::string cache_key(std::string_view user, std::string_view password) const;
  bool in_cache(const std::string& key) const;
  static bool bcrypt_matches(std::string_view password, const std::string& hash);

  const std::map<std::string, std::string, std::less<>> users_;
  const std::size_t cache_capacity_;
  std::string hmac_key_;    // immutable after construction
  std::string dummy_hash_;  // immutable after construction; same cost as the users' hashes

  const std::size_t max_concurrent_checks_;
  std::atomic<std::size_t> checks_in_progress_{0};
  mutable std::mutex cache_mutex_;
  std::set<std::string> cache_;          // guarded by cache_mutex_
  std::deque<std::string> evict_order_;  // guarded by cache_mutex_; oldest first
};

/// Decodes the credentials of an Authorization header value ("Basic <base64
/// of user:password>", scheme case-insensitive). Returns false when the value
/// is not well-formed Basic credentials. Pure function.
bool parse_basic_credentials(std::string_view authorization, std::string& user,
                             std::string& password);

}  // namespace poolscope::exporter
