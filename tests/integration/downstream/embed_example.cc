// Embedding poolscope in a C++ service: the example from the README.
#include <iostream>
#include <pqxx/pqxx>
#include <poolscope/pool.h>
#include <poolscope/pool_metrics.h>
#include <prometheus/registry.h>

int main() try {
  // DATABASE_URL, POOL_MAX_SIZE, … from the environment; strict: bad values throw.
  poolscope::Pool pool(poolscope::PoolConfig::from_env());

  // Optional: publish the pool's metrics next to the service's own.
  auto registry = std::make_shared<prometheus::Registry>();
  auto metrics = std::make_shared<poolscope::PoolMetrics>(registry);
  metrics->add(pool);

  {
    auto connection = pool.acquire();  // waits up to POOL_ACQUIRE_TIMEOUT
    pqxx::work tx(*connection);
    std::cout << "answer: " << tx.exec("SELECT 42")[0][0].as<int>() << "\n";
    tx.commit();
  }  // back in the pool here, also if an exception is thrown

  const auto stats = pool.get_statistics();
  std::cout << "acquisitions: " << stats.total_acquisitions << ", state: "
            << poolscope::to_string(stats.state) << "\n";
  return 0;
} catch (const poolscope::Error& error) {
  std::cerr << "poolscope: " << error.what() << "\n";
  return 1;
}
