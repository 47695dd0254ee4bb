// What any libpq client pays before poolscope does anything: the time to
// open one connection (process start to first healthy /health cannot be
// shorter) and the resident memory of a process that has opened one (the
// exporter's RSS cannot be lower: libpq and the libraries it loads).
//
//   DATABASE_URL=... libpq_floor [connections]
//
// Opens `connections` (default 5) connections one after another, then
// prints one JSON object: the median connect time in milliseconds and the
// process's peak RSS (VmHWM) in KiB, with the share of the biggest
// libraries.

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

long status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

// Resident KiB per mapped file (anonymous memory under "[anon]").
std::map<std::string, long> rss_by_mapping() {
  std::map<std::string, long> by_name;
  std::ifstream smaps("/proc/self/smaps");
  std::string name;
  for (std::string line; std::getline(smaps, line);) {
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    if (dash != std::string::npos && space != std::string::npos && dash < space &&
        line.find_first_not_of("0123456789abcdef") == dash) {
      // "address perms offset device inode [path]": no sixth field means anonymous.
      std::vector<std::string> fields;
      for (std::size_t at = 0; at < line.size();) {
        const auto from = line.find_first_not_of(' ', at);
        if (from == std::string::npos) break;
        const auto to = line.find(' ', from);
        fields.push_back(
            line.substr(from, to == std::string::npos ? std::string::npos : to - from));
        at = to == std::string::npos ? line.size() : to;
      }
      name = fields.size() >= 6 ? fields[5] : "[anon]";
      if (const auto slash = name.find_last_of('/'); slash != std::string::npos)
        name = name.substr(slash + 1);
    } else if (line.rfind("Rss:", 0) == 0) {
      by_name[name] += std::stol(line.substr(4));
    }
  }
  return by_name;
}

int run(int argc, char** argv) {
  const char* url = std::getenv("DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    std::fprintf(stderr, "libpq_floor: DATABASE_URL is not set\n");
    return 2;
  }
  const int connections = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const long loaded_kib = status_kib("VmRSS");
  std::vector<double> connect_ms;
  for (int i = 0; i < connections; ++i) {
    const auto started = std::chrono::steady_clock::now();
    PGconn* connection = PQconnectdb(url);
    const auto took = std::chrono::steady_clock::now() - started;
    if (PQstatus(connection) != CONNECTION_OK) {
      std::fprintf(stderr, "libpq_floor: %s", PQerrorMessage(connection));
      PQfinish(connection);
      return 1;
    }
    connect_ms.push_back(std::chrono::duration<double, std::milli>(took).count());
    PQfinish(connection);
  }
  std::sort(connect_ms.begin(), connect_ms.end());
  auto mappings = rss_by_mapping();
  std::vector<std::pair<long, std::string>> biggest;
  biggest.reserve(mappings.size());
  for (const auto& [name, kib] : mappings) biggest.emplace_back(kib, name);
  std::sort(biggest.rbegin(), biggest.rend());
  nlohmann::json top = nlohmann::json::object();
  for (std::size_t i = 0; i < biggest.size() && i < 6; ++i)
    top[biggest[i].second] = biggest[i].first;
  const nlohmann::json report = {
      {"connect_ms_median", connect_ms[connect_ms.size() / 2]},
      {"connect_ms_min", connect_ms.front()},
      {"rss_kib_loaded", loaded_kib},
      {"rss_kib_peak", status_kib("VmHWM")},
      {"rss_kib_biggest", top},
  };
  std::printf("%s\n", report.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "libpq_floor: %s\n", error.what());
    return 1;
  }
}
