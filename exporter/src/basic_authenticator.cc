#include "basic_authenticator.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <memory>
#include <stdexcept>

namespace poolscope::exporter {
namespace {

int bcrypt_cost(std::string_view hash) {
  if (hash.size() < 7) return 10;
  return (hash[4] - '0') * 10 + (hash[5] - '0');
}

// bcrypt with a random salt; used once, for the dummy hash.
std::string make_bcrypt_hash(std::string_view password, int cost) {
  std::array<char, CRYPT_GENSALT_OUTPUT_SIZE> setting{};
  if (crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost), nullptr, 0, setting.data(),
                       static_cast<int>(setting.size())) == nullptr) {
    throw std::runtime_error("crypt_gensalt_rn failed for bcrypt");
  }
  auto data = std::make_unique<crypt_data>();
  const std::string input(password);
  const char* hash = crypt_r(input.c_str(), setting.data(), data.get());
  if (hash == nullptr || hash[0] == '*') throw std::runtime_error("crypt_r failed for bcrypt");
  return hash;
}

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with padding (RFC 4648 section 4), as RFC 7617 requires.
bool base64_decode(std::string_view text, std::string& out) {
  if (text.size() % 4 != 0) return false;
  out.clear();
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    std::array<int, 4> values{};
    int padding = 0;
    for (std::size_t j = 0; j < values.size(); ++j) {
      const auto c = static_cast<unsigned char>(text[i + j]);
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        values[j] = 0;
        ++padding;
        continue;
      }
      if (padding > 0) return false;  // data after '='
      values[j] = base64_value(c);
      if (values[j] < 0) return false;
    }
    const std::uint32_t group = (static_cast<std::uint32_t>(values[0]) << 18) |
                                (static_cast<std::uint32_t>(values[1]) << 12) |
                                (static_cast<std::uint32_t>(values[2]) << 6) |
                                static_cast<std::uint32_t>(values[3]);
    out.push_back(static_cast<char>((group >> 16) & 0xff));
    if (padding < 2) out.push_back(static_cast<char>((group >> 8) & 0xff));
    if (padding < 1) out.push_back(static_cast<char>(group & 0xff));
  }
  return true;
}

}  // namespace

bool parse_basic_credentials(std::string_view authorization, std::string& user,
                             std::string& password) {
  while (!authorization.empty() && authorization.front() == ' ') authorization.remove_prefix(1);
  while (!authorization.empty() && authorization.back() == ' ') authorization.remove_suffix(1);
  constexpr std::string_view kScheme = "basic";
  if (authorization.size() <= kScheme.size() || authorization[kScheme.size()] != ' ') return false;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return false;
  }
  std::string_view encoded = authorization.substr(kScheme.size());
  while (!encoded.empty() && encoded.front() == ' ') encoded.remove_prefix(1);
  std::string decoded;
  if (!base64_decode(encoded, decoded)) return false;
  const std::size_t colon = decoded.find(':');
  if (colon == std::string::npos) return false;
  user = decoded.substr(0, colon);
  password = decoded.substr(colon + 1);
  return true;
}

BasicAuthenticator::BasicAuthenticator(std::map<std::string, std::string> users,
                                       std::size_t cache_capacity,
                                       std::size_t max_concurrent_checks)
    : users_(users.begin(), users.end()),
      cache_capacity_(cache_capacity),
      max_concurrent_checks_(std::max<std::size_t>(max_concurrent_checks, 1)) {
  hmac_key_.resize(32);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(hmac_key_.data()),
                 static_cast<int>(hmac_key_.size())) != 1) {
    throw std::runtime_error("cannot get random bytes for the authentication cache key");
  }
  if (users_.empty()) return;
  int cost = 4;
  for (const auto& [user, hash] : users_) cost = std::max(cost, bcrypt_cost(hash));
  dummy_hash_ = make_bcrypt_hash("poolscope-unknown-user", cost);
}

BasicAuthenticator::~BasicAuthenticator() { OPENSSL_cleanse(hmac_key_.data(), hmac_key_.size()); }

bool BasicAuthenticator::authorize(std::string_view authorization) {
  return verify(authorization) == Verdict::kAuthorized;
}

BasicAuthenticator::Verdict BasicAuthenticator::verify(std::string_view authorization) {
  if (!enabled()) return Verdict::kAuthorized;
  std::string user;
  std::string password;
  if (!parse_basic_credentials(authorization, user, password)) return Verdict::kRefused;
  const Verdict verdict = verify(user, password);
  OPENSSL_cleanse(password.data(), password.size());
  return verdict;
}

bool BasicAuthenticator::is_cached(std::string_view authorization) const {
  if (!enabled()) return true;
  std::string user;
  std::string password;
  if (!parse_basic_credentials(authorization, user, password)) return false;
  const bool cached =
      password.find('\0') == std::string::npos && in_cache(cache_key(user, password));
  OPENSSL_cleanse(password.data(), password.size());
  return cached;
}

bool BasicAuthenticator::check(std::string_view user, std::string_view password) {
  return verify(user, password) == Verdict::kAuthorized;
}

BasicAuthenticator::Verdict BasicAuthenticator::verify(std::string_view user,
                                                       std::string_view password) {
  // crypt_r reads a C string: a password with a NUL byte would be cut short
  // and could match a prefix of itself.
  if (password.find('\0') != std::string_view::npos) return Verdict::kRefused;
  const std::string key = cache_key(user, password);
  if (in_cache(key)) return Verdict::kAuthorized;

  // Take a bcrypt slot or give up at once: waiting would hold an HTTP worker
  // for as long as the flood lasts.
  std::size_t busy = checks_in_progress_.load();
  do {
    if (busy >= max_concurrent_checks_) return Verdict::kBusy;
  } while (!checks_in_progress_.compare_exchange_weak(busy, busy + 1));
  const auto found = users_.find(user);
  const bool user_known = found != users_.end();
  bool matches = false;
  try {
    matches = bcrypt_matches(password, user_known ? found->second : dummy_hash_);
  } catch (...) {
    checks_in_progress_.fetch_sub(1);
    throw;
  }
  checks_in_progress_.fetch_sub(1);
  if (!(user_known && matches)) return Verdict::kRefused;

  std::lock_guard lock(cache_mutex_);
  if (cache_capacity_ == 0) return Verdict::kAuthorized;
  if (cache_.insert(key).second) {
    evict_order_.push_back(key);
    while (evict_order_.size() > cache_capacity_) {
      cache_.erase(evict_order_.front());
      evict_order_.pop_front();
    }
  }
  return Verdict::kAuthorized;
}

bool BasicAuthenticator::in_cache(const std::string& key) const {
  std::lock_guard lock(cache_mutex_);
  return cache_.count(key) != 0;
}

std::size_t BasicAuthenticator::cached() const {
  std::lock_guard lock(cache_mutex_);
  return cache_.size();
}

std::string BasicAuthenticator::cache_key(std::string_view user, std::string_view password) const {
  // Length-prefixed so that ("a:b", "c") and ("a", "b:c") differ.
  std::string message;
  const std::uint64_t user_size = user.size();
  message.append(reinterpret_cast<const char*>(&user_size), sizeof user_size);
  message.append(user);
  message.append(password);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_size = 0;
  HMAC(EVP_sha256(), hmac_key_.data(), static_cast<int>(hmac_key_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest.data(),
       &digest_size);
  OPENSSL_cleanse(message.data(), message.size());
  return {reinterpret_cast<const char*>(digest.data()), digest_size};
}

bool BasicAuthenticator::bcrypt_matches(std::string_view password, const std::string& hash) {
  std::string input(password);
  // ~32 KiB of scratch space per check in progress; their number is bounded.
  const auto data = std::make_unique<crypt_data>();
  const char* computed = crypt_r(input.c_str(), hash.c_str(), data.get());
  bool equal = false;
  if (computed != nullptr && computed[0] != '*') {
    const std::string_view result(computed);
    equal =
        result.size() == hash.size() && CRYPTO_memcmp(result.data(), hash.data(), hash.size()) == 0;
  }
  OPENSSL_cleanse(input.data(), input.size());
  OPENSSL_cleanse(data.get(), sizeof(crypt_data));
  return equal;
}

}  // namespace poolscope::exporter
