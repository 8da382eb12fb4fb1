// The real podtrain-coordinator binary on loopback with fake workers
// speaking the worker protocol over gRPC: a job runs to completion through a
// coordinator kill -9 and restart without losing anything or restarting its
// world; a worker that vanishes is noticed through its lease and the world
// re-forms; every step of the committed lineage covers exactly the examples
// sampler/ assigns, so every epoch holds every example once.

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "proto/health.grpc.pb.h"
#include "proto/job.grpc.pb.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"
#include "services/channel.h"
#include "tests/fake_worker.h"
#include "tests/subprocess.h"

namespace podtrain::testing {
namespace {

// A plain HTTP/1.0 GET on loopback (what a Prometheus scrape does).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
      0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
    (void)!write(fd, request.data(), request.size());
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
      response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

std::string coordinator_binary;  // argv[1]

constexpr int64_t kExamples = 2000;
constexpr int64_t kShards = 10;
constexpr int64_t kBatch = 50;
constexpr int64_t kSteps = 120;  // 3 epochs

class CoordinatorIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshTempDir(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    dataset_ = dir_ + "/data";
    dataset::Schema schema;
    schema.height = 28;
    schema.width = 28;
    schema.channels = 1;
    schema.num_classes = 10;
    ASSERT_TRUE(dataset::CreateDirectories(dataset_).ok());
    ASSERT_TRUE(dataset::WriteManifest(
                    dataset_, dataset::MakeSyntheticManifest("data", kExamples,
                                                             kShards, schema))
                    .ok());
    StartCoordinator("127.0.0.1:0");
  }

  void TearDown() override {
    if (HasFailure()) {
      // The coordinator's own account of what happened.
      std::system(("tail -n 60 '" + dir_ + "/coordinator.log' >&2").c_str());
    }
  }

  void StartCoordinator(const std::string& address) {
    const std::string port_file = dir_ + "/port";
    std::remove(port_file.c_str());
    auto process = Subprocess::Start(
        {coordinator_binary, "--address=" + address,
         "--journal=" + dir_ + "/journal.db", "--port_file=" + port_file,
         "--heartbeat_ms=100", "--lease_ms=1500", "--last_call_ms=300",
         "--restart_backoff_ms=200", "--metrics_address=127.0.0.1:0",
         "--metrics_port_file=" + dir_ + "/metrics_port"},
        dir_ + "/coordinator.log");
    ASSERT_TRUE(process.ok()) << process.status();
    coordinator_ = std::move(*process);
    auto port = WaitForPortFile(port_file, absl::Seconds(20));
    ASSERT_TRUE(port.ok()) << port.status();
    auto metrics_port =
        WaitForPortFile(dir_ + "/metrics_port", absl::Seconds(1));
    ASSERT_TRUE(metrics_port.ok()) << metrics_port.status();
    metrics_port_ = *metrics_port;
    address_ = absl::StrCat("127.0.0.1:", *port);
    jobs_ = v1::JobService::NewStub(services::MakeCoordinatorChannel(address_));
  }

  std::string CreateJob(int min_workers, int max_workers) {
    v1::CreateJobRequest request;
    v1::JobSpec* spec = request.mutable_spec();
    spec->set_dataset(dataset_);
    spec->mutable_model()->set_name("mlp");
    spec->mutable_model()->add_hidden(16);
    spec->mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
    spec->mutable_schedule()->set_base_learning_rate(0.1);
    spec->set_global_batch(kBatch);
    spec->set_steps(kSteps);
    spec->set_seed(99);
    spec->set_shuffle_window_shards(3);
    spec->set_min_workers(min_workers);
    spec->set_max_workers(max_workers);
    spec->mutable_checkpoint()->set_directory(dir_ + "/ckpt");
    spec->set_restart_budget(5);
    request.set_request_id("integration");
    v1::Job job;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    const grpc::Status status = jobs_->CreateJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job.name();
  }

  absl::StatusOr<v1::Job> GetJob(const std::string& name) {
    v1::GetJobRequest request;
    request.set_name(name);
    v1::Job job;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    const grpc::Status status = jobs_->GetJob(&context, request, &job);
    if (!status.ok()) return absl::UnavailableError(status.error_message());
    return job;
  }

  // Polls until `done(job)` or the timeout.
  template <typename Predicate>
  v1::Job WaitForJob(const std::string& name, Predicate done,
                     absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::Job job;
    while (absl::Now() < deadline) {
      auto current = GetJob(name);
      if (current.ok()) {
        job = *current;
        if (done(job)) break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return job;
  }

  std::unique_ptr<FakeWorker> StartWorker(const std::string& id,
                                          uint64_t incarnation) {
    FakeWorker::Options options;
    options.worker_id = id;
    options.address = address_;
    options.incarnation = incarnation;
    options.checkpoint_every = 10;
    auto worker = std::make_unique<FakeWorker>(options);
    worker->Start();
    return worker;
  }

  // The committed lineage's steps, reconstructed from what the workers
  // trained: for each step, the ids of every rank in the newest generation
  // that trained it (steps redone after a failure replace the lost ones).
  // Checks each step against sampler/ and every epoch for exactly-once.
  void AuditLineage(const std::vector<FakeWorker*>& workers) {
    std::map<int64_t, std::map<int64_t, std::vector<int64_t>>> by_step;
    for (FakeWorker* worker : workers) {
      for (const auto& [generation, steps] : worker->trained()) {
        for (const auto& [step, ids] : steps) {
          auto& slot = by_step[step][generation];
          slot.insert(slot.end(), ids.begin(), ids.end());
        }
      }
    }
    auto sampler = *sampler::StreamSampler::Create(
        std::vector<int64_t>(kShards, kExamples / kShards),
        {.seed = 99, .window_shards = 3});
    std::map<int64_t, std::vector<int>> seen;  // epoch -> count per id
    ASSERT_EQ(static_cast<int64_t>(by_step.size()), kSteps);
    for (const auto& [step, generations] : by_step) {
      std::vector<int64_t> ids = generations.rbegin()->second;
      std::vector<int64_t> expected;
      ASSERT_TRUE(sampler->Fill(step * kBatch, kBatch, &expected).ok());
      std::vector<int64_t> sorted_ids = ids, sorted_expected = expected;
      std::sort(sorted_ids.begin(), sorted_ids.end());
      std::sort(sorted_expected.begin(), sorted_expected.end());
      ASSERT_EQ(sorted_ids, sorted_expected) << "step " << step;
      for (int64_t k = 0; k < kBatch; ++k) {
        auto& counts = seen[(step * kBatch + k) / kExamples];
        if (counts.empty()) counts.assign(kExamples, 0);
        counts[expected[k]]++;
      }
    }
    for (const auto& [epoch, counts] : seen) {
      for (int64_t id = 0; id < kExamples; ++id) {
        ASSERT_EQ(counts[id], 1) << "epoch " << epoch << " id " << id;
      }
    }
  }

  std::string dir_;
  std::string dataset_;
  std::string address_;
  int metrics_port_ = 0;
  std::unique_ptr<Subprocess> coordinator_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
};

TEST_F(CoordinatorIntegrationTest, HealthIsServingAndSigtermExitsCleanly) {
  auto health = grpc::health::v1::Health::NewStub(
      services::MakeCoordinatorChannel(address_));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  coordinator_->Signal(SIGTERM);
  const auto status = coordinator_->Wait(absl::Seconds(10));
  ASSERT_TRUE(status.has_value()) << "did not exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

TEST_F(CoordinatorIntegrationTest, JobSurvivesCoordinatorKillAndRestart) {
  const std::string job = CreateJob(2, 2);
  auto w0 = StartWorker("w0", 1000);
  auto w1 = StartWorker("w1", 2000);
  const v1::Job midway = WaitForJob(
      job, [](const v1::Job& j) { return j.committed_step() >= 39; },
      absl::Seconds(60));
  ASSERT_GE(midway.committed_step(), 39) << midway.DebugString();

  coordinator_->Signal(SIGKILL);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(10)).has_value());
  StartCoordinator(address_);  // same port, same journal

  ASSERT_TRUE(w0->WaitUntilFinished(absl::Seconds(60)));
  ASSERT_TRUE(w1->WaitUntilFinished(absl::Seconds(60)));
  const v1::Job done = *GetJob(job);
  EXPECT_EQ(done.state(), v1::SUCCEEDED) << done.DebugString();
  EXPECT_EQ(done.committed_step(), kSteps - 1);
  // The world never re-formed: the restart was invisible to training.
  EXPECT_EQ(done.generation(), 1);
  EXPECT_EQ(done.restarts(), 0);
  EXPECT_EQ(w0->generations(), std::vector<int64_t>{1});
  EXPECT_TRUE(w0->unexpected_errors().empty()) << w0->unexpected_errors()[0];
  EXPECT_TRUE(w1->unexpected_errors().empty()) << w1->unexpected_errors()[0];
  AuditLineage({w0.get(), w1.get()});

  // The restarted coordinator's /metrics, as Prometheus scrapes it, passes
  // promtool's lint and counts the job and what it committed after restart.
  const std::string metrics = HttpGet(metrics_port_, "/metrics");
  EXPECT_NE(metrics.find("podtrain_coordinator_jobs{state=\"SUCCEEDED\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("podtrain_coordinator_rpc_duration_seconds_count{"
                         "method=\"ReportStep\"}"),
            std::string::npos);
  const std::string body = metrics.substr(metrics.find("\r\n\r\n") + 4);
  const std::string file = dir_ + "/metrics.txt";
  std::ofstream(file) << body;
  EXPECT_EQ(std::system(("promtool check metrics < '" + file + "'").c_str()), 0)
      << body;
}

TEST_F(CoordinatorIntegrationTest, VanishedWorkerIsReplacedThroughItsLease) {
  const std::string job = CreateJob(2, 3);
  auto w0 = StartWorker("w0", 1000);
  auto w1 = StartWorker("w1", 2000);
  auto w2 = StartWorker("w2", 3000);
  const v1::Job running = WaitForJob(
      job,
      [](const v1::Job& j) {
        return j.world_size() == 3 && j.committed_step() >= 19;
      },
      absl::Seconds(60));
  ASSERT_EQ(running.world_size(), 3) << running.DebugString();
  const int64_t generation = running.generation();

  const absl::Time killed = absl::Now();
  w2->Kill();
  ASSERT_TRUE(w0->WaitUntilFinished(absl::Seconds(60)));
  ASSERT_TRUE(w1->WaitUntilFinished(absl::Seconds(60)));
  const v1::Job done = *GetJob(job);
  EXPECT_EQ(done.state(), v1::SUCCEEDED) << done.DebugString();
  EXPECT_EQ(done.generation(), generation + 1);
  EXPECT_EQ(done.world_size(), 0);  // members are released at the end
  EXPECT_EQ(done.restarts(), 1);
  // Both survivors heard within the lease (1.5 s) plus a heartbeat or two,
  // not after a collective timeout.
  for (FakeWorker* survivor : {w0.get(), w1.get()}) {
    const absl::Duration heard =
        survivor->heard_of_newer_generation(generation) - killed;
    EXPECT_LT(heard, absl::Milliseconds(2500)) << heard;
  }
  EXPECT_TRUE(w0->unexpected_errors().empty()) << w0->unexpected_errors()[0];
  AuditLineage({w0.get(), w1.get(), w2.get()});
}

}  // namespace
}  // namespace podtrain::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH_TO_podtrain-coordinator\n", argv[0]);
    return 2;
  }
  podtrain::testing::coordinator_binary = argv[1];
  return RUN_ALL_TESTS();
}
