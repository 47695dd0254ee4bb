#pragma once

// A throwaway PostgreSQL cluster of the test's own (tests/support/pgctl), for
// tests that stop, kill or reconfigure the server. Destroyed with the object.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

namespace poolscope::testing {

inline std::string pgctl_path() {
  const char* path = std::getenv("POOLSCOPE_PGCTL");
  return path != nullptr ? path : POOLSCOPE_PGCTL_DEFAULT;
}

/// Runs a shell command; returns its exit status.
inline int run(const std::string& command) { return std::system(command.c_str()); }

class ScopedCluster {
 public:
  explicit ScopedCluster(int max_connections = 100) {
    char pattern[] = "/tmp/poolscope-cluster.XXXXXX";
    if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    // The server runs as postgres and must reach its data directory below.
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all |
                                           std::filesystem::perms::group_read |
                                           std::filesystem::perms::group_exec |
                                           std::filesystem::perms::others_read |
                                           std::filesystem::perms::others_exec);
    if (pgctl("create", std::to_string(max_connections) + " >/dev/null") != 0) {
      throw std::runtime_error("pgctl create failed in " + dir_);
    }
    std::ifstream env(dir_ + "/env");
    for (std::string line; std::getline(env, line);) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) env_[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  ~ScopedCluster() {
    pgctl("destroy", ">/dev/null 2>&1");
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  ScopedCluster(const ScopedCluster&) = delete;
  ScopedCluster& operator=(const ScopedCluster&) = delete;

  const std::string& url() const { return env_.at("DATABASE_URL"); }
  const std::string& password() const { return env_.at("POOLSCOPE_DB_PASSWORD"); }
  const std::string& dir() const { return dir_; }

  void stop_immediately() { check(pgctl("stop", "immediate >/dev/null"), "stop"); }
  void start() { check(pgctl("start", ">/dev/null"), "start"); }
  void freeze() { check(pgctl("kill-stop", ""), "kill-stop"); }
  void thaw() { check(pgctl("kill-cont", ""), "kill-cont"); }
  /// Runs SQL as the superuser over the socket.
  int psql(const std::string& sql) { return pgctl("psql", "-c \"" + sql + "\" >/dev/null"); }

 private:
  int pgctl(const std::string& verb, const std::string& rest) {
    return run(pgctl_path() + " " + verb + " " + dir_ + " " + rest);
  }
  static void check(int status, const std::string& what) {
    if (status != 0) throw std::runtime_error("pgctl " + what + " failed");
  }

  std::string dir_;
  std::map<std::string, std::string> env_;
};

/// The shared test database from scripts/test; fails loudly when unset.
inline std::string shared_database_url() {
  const char* url = std::getenv("POOLSCOPE_TEST_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    throw std::runtime_error(
        "POOLSCOPE_TEST_DATABASE_URL is not set: run the suite through scripts/test, which starts "
        "a throwaway PostgreSQL");
  }
  return url;
}

}  // namespace poolscope::testing
