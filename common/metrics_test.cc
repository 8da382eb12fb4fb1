#include "common/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace podtrain {
namespace {

// A plain HTTP/1.0 GET over loopback: what a Prometheus scrape does.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  return response;
}

TEST(MetricsTest, ServesTheRegistryOverHttp) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& counter = prometheus::BuildCounter()
                      .Name("podtrain_test_scrapes_total")
                      .Help("Scrapes seen by the test.")
                      .Register(*registry)
                      .Add({});
  counter.Increment(7);
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const std::string body = HttpGet((*server)->port(), "/metrics");
  EXPECT_NE(body.find("200 OK"), std::string::npos) << body;
  EXPECT_NE(body.find("podtrain_test_scrapes_total 7"), std::string::npos)
      << body;
}

TEST(MetricsTest, OtherPathsAreNotFound) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_NE(HttpGet((*server)->port(), "/other").find("404"),
            std::string::npos);
}

TEST(MetricsTest, ABadAddressIsAClearError) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto bad = MetricsServer::Start("localhost-ish", registry);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("host:port"), std::string::npos);
}

TEST(MetricsTest, ABusyPortIsAClearError) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Start(
      "127.0.0.1:" + std::to_string((*first)->port()), registry);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot serve metrics"),
            std::string::npos);
}

TEST(MetricsTest, ScopedTimerObservesIntoTheHistogram) {
  prometheus::Registry registry;
  auto& histogram = prometheus::BuildHistogram()
                        .Name("podtrain_test_duration_seconds")
                        .Help("Test durations.")
                        .Register(registry)
                        .Add({}, LatencyBuckets());
  { ScopedTimer timer(&histogram); }
  const std::string text = SerializeMetrics(registry);
  EXPECT_NE(text.find("podtrain_test_duration_seconds_count 1"),
            std::string::npos)
      << text;
  EXPECT_GT(LatencyBuckets().size(), 10u);
}

}  // namespace
}  // namespace podtrain
