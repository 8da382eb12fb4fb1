// Proves that every system library declared in third_party/system.BUILD is
// installed, links, and does real work: a test that fails on a machine where
// deploy/install_deps.sh missed something. Also guards the libtorch/BLAS trap:
// libtorch must run its matmuls on OpenBLAS, not the reference BLAS.

#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/device.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sqlite3.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace podtrain {
namespace {

TEST(SystemLibsTest, TorchMultipliesMatricesOnOpenBlas) {
  torch::manual_seed(0);
  const torch::Tensor a = torch::randn({64, 32});
  const torch::Tensor b = torch::randn({32, 16});
  const torch::Tensor product = torch::mm(a, b);
  // Compare against a hand-rolled product.
  const auto pa = a.accessor<float, 2>();
  const auto pb = b.accessor<float, 2>();
  const auto pc = product.accessor<float, 2>();
  for (int i = 0; i < 64; i += 7) {
    for (int j = 0; j < 16; j += 3) {
      double expected = 0;
      for (int k = 0; k < 32; ++k) expected += pa[i][k] * pb[k][j];
      EXPECT_NEAR(pc[i][j], expected, 1e-4);
    }
  }
  // The BLAS actually mapped into this process must be OpenBLAS.
  std::ifstream maps("/proc/self/maps");
  std::stringstream contents;
  contents << maps.rdbuf();
  EXPECT_NE(contents.str().find("openblas"), std::string::npos)
      << "libtorch is not using OpenBLAS: install libopenblas0-pthread "
         "(deploy/install_deps.sh) or training runs ~24x slower";
}

TEST(SystemLibsTest, GlooAllReducesBetweenTwoRanksOnLoopback) {
  constexpr int kWorld = 2;
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  std::vector<std::vector<float>> data(kWorld);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kWorld; ++rank) {
    data[rank] = {1.0f * (rank + 1), 10.0f * (rank + 1)};
    ranks.emplace_back([&, rank] {
      gloo::transport::tcp::attr attr;
      attr.hostname = "127.0.0.1";
      auto device = gloo::transport::tcp::CreateDevice(attr);
      auto context = std::make_shared<gloo::rendezvous::Context>(rank, kWorld);
      context->setTimeout(std::chrono::seconds(30));
      context->connectFullMesh(*store, device);
      gloo::AllreduceOptions options(context);
      options.setOutput(data[rank].data(), data[rank].size());
      options.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(
              &::gloo::sum<float>));
      gloo::allreduce(options);
    });
  }
  for (auto& rank : ranks) rank.join();
  for (int rank = 0; rank < kWorld; ++rank) {
    EXPECT_EQ(data[rank][0], 3.0f);
    EXPECT_EQ(data[rank][1], 30.0f);
  }
}

TEST(SystemLibsTest, PrometheusSerializesACounter) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildCounter()
                     .Name("podtrain_test_events_total")
                     .Help("Events seen by the test.")
                     .Register(registry);
  family.Add({{"kind", "probe"}}).Increment(3);
  const std::string text =
      prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_NE(text.find("podtrain_test_events_total{kind=\"probe\"} 3"),
            std::string::npos)
      << text;
}

TEST(SystemLibsTest, SqliteStoresAndReadsBack) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  char* error = nullptr;
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER);"
                         "INSERT INTO t VALUES('step', 42);",
                         nullptr, nullptr, &error),
            SQLITE_OK)
      << error;
  sqlite3_stmt* statement = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT v FROM t WHERE k='step'", -1,
                               &statement, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(statement), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(statement, 0), 42);
  sqlite3_finalize(statement);
  sqlite3_close(db);
}

}  // namespace
}  // namespace podtrain
