// The `podtrain` commands against a real in-process coordinator server on
// 127.0.0.1 (an OS-chosen port, a journal under TEST_TMPDIR, a synthetic
// dataset manifest), plus the spec-file parsers, name normalization, the
// retry policy and the event lines on their own. No workers run: jobs stay
// QUEUED unless cancelled, except in the watch-to-success test, where the
// test plays one worker through the Coordinator's API.

#include "cli/job_commands.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "proto/worker.pb.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"
#include "services/channel.h"
#include "services/coordinator_server.h"

namespace podtrain::cli {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

std::string WriteFile(const std::string& name, const std::string& contents) {
  const std::string path = TempPath(name);
  std::ofstream(path) << contents;
  return path;
}

// 1000 synthetic 28x28x1 examples of 10 classes in 10 shards: a MANIFEST
// only, which is all CreateJob reads.
std::string MakeDataset() {
  const std::string dir = TempPath("dataset");
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  EXPECT_TRUE(dataset::CreateDirectories(dir).ok());
  const absl::Status written = dataset::WriteManifest(
      dir, dataset::MakeSyntheticManifest("d", 1000, 10, schema));
  EXPECT_TRUE(written.ok()) << written;
  return dir;
}

// The same spec in the three formats a spec file may have.
std::string YamlSpec(const std::string& dataset) {
  return absl::StrCat(
      "# A small CNN on the synthetic set.\n"
      "display_name: yaml job\n"
      "dataset: ",
      dataset,
      "\n"
      "model:\n"
      "  name: cnn\n"
      "  hidden: [8, 16]\n"
      "optimizer:\n"
      "  sgd: {momentum: 0.9, nesterov: true}\n"
      "schedule:\n"
      "  baseLearningRate: 0.05\n"
      "  decay: RSQRT\n"
      "global_batch: 100\n"
      "epochs: 1.5\n"
      "seed: 18446744073709551615\n"
      "eval:\n"
      "checkpoint: {directory: ",
      TempPath("ckpt"), "}\n");
}

std::string TextSpec(const std::string& dataset) {
  return absl::StrCat(
      "display_name: \"text job\"\n"
      "dataset: \"",
      dataset,
      "\"\n"
      "model { name: \"cnn\" hidden: [8, 16] }\n"
      "optimizer { sgd { momentum: 0.9 nesterov: true } }\n"
      "schedule { base_learning_rate: 0.05 decay: RSQRT }\n"
      "global_batch: 100\n"
      "epochs: 1.5\n"
      "seed: 18446744073709551615\n"
      "checkpoint { directory: \"",
      TempPath("ckpt"), "\" }\n");
}

std::string JsonSpec(const std::string& dataset) {
  return absl::StrCat(
      "{\n"
      "  \"displayName\": \"json job\",\n"
      "  \"dataset\": \"",
      dataset,
      "\",\n"
      "  \"model\": {\"name\": \"cnn\", \"hidden\": [8, 16]},\n"
      "  \"optimizer\": {\"sgd\": {\"momentum\": 0.9, \"nesterov\": true}},\n"
      "  \"schedule\": {\"baseLearningRate\": 0.05, \"decay\": \"RSQRT\"},\n"
      "  \"globalBatch\": 100,\n"
      "  \"epochs\": 1.5,\n"
      "  \"seed\": \"18446744073709551615\",\n"
      "  \"checkpoint\": {\"directory\": \"",
      TempPath("ckpt"),
      "\"}\n"
      "}\n");
}

v1::Job ParseJobJson(const std::string& line) {
  v1::Job job;
  const auto status = google::protobuf::util::JsonStringToMessage(line, &job);
  EXPECT_TRUE(status.ok()) << status.ToString() << " in: " << line;
  return job;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// A port on 127.0.0.1 that nothing listens on (bound, then closed).
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), length), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  close(fd);
  return ntohs(address.sin_port);
}

class JobCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dataset_ = MakeDataset();
    StartServer(/*bearer_token=*/"");
  }

  void StartServer(const std::string& bearer_token) {
    server_.reset();
    services::CoordinatorServerOptions options;
    options.address = "127.0.0.1:0";
    options.bearer_token = bearer_token;
    options.coordinator.journal_path = TempPath(absl::StrCat(
        ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        ".journal"));
    std::remove(options.coordinator.journal_path.c_str());
    auto server = services::CoordinatorServer::Start(options, RealClock());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    client_.coordinator = absl::StrCat("127.0.0.1:", server_->port());
    client_.bearer_token = bearer_token;
    client_.timeout = absl::Seconds(20);
    client_.watch_timeout = absl::Seconds(20);
    client_.initial_backoff = absl::Milliseconds(1);
    stub_ = v1::JobService::NewStub(
        services::MakeCoordinatorChannel(client_.coordinator));
  }

  // Submits `spec_path`; returns the job as printed in JSON.
  absl::StatusOr<v1::Job> Submit(const std::string& spec_path,
                                 const std::string& request_id = "") {
    ClientOptions json = client_;
    json.output = OutputFormat::kJson;
    std::ostringstream out;
    const absl::Status status =
        RunSubmit({.spec_file = spec_path, .request_id = request_id}, json,
                  stub_.get(), out);
    if (!status.ok()) return status;
    EXPECT_EQ(Lines(out.str()).size(), 1u) << out.str();
    return ParseJobJson(out.str());
  }

  std::string SubmitYaml() {
    auto job = Submit(WriteFile("job.yaml", YamlSpec(dataset_)));
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->name() : "";
  }

  absl::Status Cancel(const std::string& job) {
    std::ostringstream out;
    return RunCancel({.job = job}, client_, stub_.get(), out);
  }

  std::string dataset_;
  std::unique_ptr<services::CoordinatorServer> server_;
  ClientOptions client_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// --- submit -----------------------------------------------------------------

TEST_F(JobCommandsTest, SubmitsTextJsonAndYamlSpecsAlike) {
  std::vector<v1::Job> jobs;
  for (const auto& [name, contents] :
       std::vector<std::pair<std::string, std::string>>{
           {"job.textproto", TextSpec(dataset_)},
           {"job.json", JsonSpec(dataset_)},
           {"job.yaml", YamlSpec(dataset_)}}) {
    auto job = Submit(WriteFile(name, contents));
    ASSERT_TRUE(job.ok()) << name << ": " << job.status();
    jobs.push_back(*job);
  }
  EXPECT_EQ(jobs[0].name(), "jobs/000001");
  EXPECT_EQ(jobs[1].name(), "jobs/000002");
  EXPECT_EQ(jobs[2].name(), "jobs/000003");
  EXPECT_EQ(jobs[2].spec().display_name(), "yaml job");
  for (const v1::Job& job : jobs) {
    const v1::JobSpec& spec = job.spec();
    EXPECT_EQ(job.state(), v1::QUEUED);
    EXPECT_EQ(spec.dataset(), dataset_);
    EXPECT_EQ(spec.model().name(), "cnn");
    ASSERT_EQ(spec.model().hidden_size(), 2);
    EXPECT_EQ(spec.model().hidden(1), 16);
    EXPECT_DOUBLE_EQ(spec.optimizer().sgd().momentum(), 0.9);
    EXPECT_TRUE(spec.optimizer().sgd().nesterov());
    EXPECT_DOUBLE_EQ(spec.schedule().base_learning_rate(), 0.05);
    EXPECT_EQ(spec.schedule().decay(), v1::ScheduleSpec::RSQRT);
    EXPECT_EQ(spec.global_batch(), 100);
    EXPECT_DOUBLE_EQ(spec.epochs(), 1.5);
    EXPECT_EQ(spec.seed(), 18446744073709551615u);
    EXPECT_EQ(spec.checkpoint().directory(), TempPath("ckpt"));
  }
}

TEST_F(JobCommandsTest, SubmitPrintsTheJobAsText) {
  std::ostringstream out;
  ASSERT_TRUE(
      RunSubmit({.spec_file = WriteFile("job.yaml", YamlSpec(dataset_))},
                client_, stub_.get(), out)
          .ok());
  EXPECT_THAT(out.str(), HasSubstr("name:           jobs/000001\n"));
  EXPECT_THAT(out.str(), HasSubstr("state:          QUEUED\n"));
  EXPECT_THAT(out.str(), HasSubstr("1.5 epochs, global batch 100"));
}

TEST_F(JobCommandsTest, ResubmitWithTheSameRequestIdReturnsTheSameJob) {
  const std::string spec = WriteFile("job.yaml", YamlSpec(dataset_));
  auto first = Submit(spec, "request-1");
  auto replay = Submit(spec, "request-1");
  ASSERT_TRUE(first.ok() && replay.ok());
  EXPECT_EQ(replay->name(), first->name());
  // Without --request_id every submit is a new request.
  auto second = Submit(spec);
  auto third = Submit(spec);
  ASSERT_TRUE(second.ok() && third.ok());
  EXPECT_EQ(second->name(), "jobs/000002");
  EXPECT_EQ(third->name(), "jobs/000003");
}

TEST_F(JobCommandsTest, ABadSpecIsInvalidArgumentNamingTheField) {
  const std::string spec = WriteFile(
      "bad.yaml", absl::StrCat(YamlSpec(dataset_), "max_workers: 200\n"));
  auto job = Submit(spec);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("spec.max_workers"));
}

TEST_F(JobCommandsTest, AMissingDatasetIsNotFound) {
  std::string yaml = YamlSpec(dataset_);
  yaml.replace(yaml.find(dataset_), dataset_.size(), TempPath("no-such-set"));
  auto job = Submit(WriteFile("missing.yaml", yaml));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(job.status().message(), HasSubstr("spec.dataset"));
  EXPECT_THAT(job.status().message(), HasSubstr("no-such-set"));
}

TEST_F(JobCommandsTest, AnUnparsableSpecFailsBeforeAnyCall) {
  auto job = Submit(WriteFile("broken.yaml", "model: {name: cnn\n"));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(job.status().message(), HasSubstr("broken.yaml:"));
  // Nothing was created.
  std::ostringstream out;
  ASSERT_TRUE(RunGet({.job = "1"}, client_, stub_.get(), out).code() ==
              absl::StatusCode::kNotFound);
}

// --- get, list, cancel ------------------------------------------------------

TEST_F(JobCommandsTest, GetAcceptsEveryFormOfAJobName) {
  SubmitYaml();
  ClientOptions json = client_;
  json.output = OutputFormat::kJson;
  for (const std::string name : {"1", "000001", "jobs/000001"}) {
    std::ostringstream out;
    ASSERT_TRUE(RunGet({.job = name}, json, stub_.get(), out).ok()) << name;
    EXPECT_EQ(ParseJobJson(out.str()).name(), "jobs/000001") << name;
  }
  std::ostringstream out;
  const absl::Status missing = RunGet({.job = "9"}, client_, stub_.get(), out);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "no job named 'jobs/000009'");
}

TEST_F(JobCommandsTest, ListPagesNewestFirstAndFollowsTokensWithAll) {
  for (int i = 0; i < 5; ++i) SubmitYaml();
  std::ostringstream page;
  ASSERT_TRUE(RunList({.page_size = 2}, client_, stub_.get(), page).ok());
  const std::vector<std::string> rows = Lines(page.str());
  ASSERT_EQ(rows.size(), 4u) << page.str();  // header, 2 jobs, a note
  EXPECT_TRUE(absl::StartsWith(rows[0], "NAME"));
  EXPECT_TRUE(absl::StartsWith(rows[1], "jobs/000005  QUEUED"));
  EXPECT_TRUE(absl::StartsWith(rows[2], "jobs/000004"));
  EXPECT_THAT(rows[3], HasSubstr("--all"));

  ClientOptions json = client_;
  json.output = OutputFormat::kJson;
  std::ostringstream all;
  ASSERT_TRUE(
      RunList({.page_size = 2, .all = true}, json, stub_.get(), all).ok());
  std::vector<std::string> names;
  for (const std::string& line : Lines(all.str())) {
    names.push_back(ParseJobJson(line).name());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"jobs/000005", "jobs/000004",
                                             "jobs/000003", "jobs/000002",
                                             "jobs/000001"}));
}

TEST_F(JobCommandsTest, ListOfNoJobsSaysSo) {
  std::ostringstream out;
  ASSERT_TRUE(RunList({}, client_, stub_.get(), out).ok());
  EXPECT_THAT(out.str(), HasSubstr("(no jobs)"));
}

TEST_F(JobCommandsTest, CancelThenCancelAgainIsAFailedPrecondition) {
  const std::string job = SubmitYaml();
  std::ostringstream out;
  ASSERT_TRUE(RunCancel({.job = job}, client_, stub_.get(), out).ok());
  EXPECT_THAT(out.str(),
              HasSubstr("state:          CANCELLED: cancelled by request"));
  EXPECT_THAT(out.str(), HasSubstr("ended:"));
  const absl::Status again = Cancel(job);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.message(), HasSubstr("already ended"));
}

// --- authentication ---------------------------------------------------------

TEST_F(JobCommandsTest, ABearerTokenIsSentAndChecked) {
  StartServer("s3cret");
  const std::string spec = WriteFile("job.yaml", YamlSpec(dataset_));

  client_.bearer_token = "";
  auto anonymous = Submit(spec);
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(anonymous.status().message(), HasSubstr("--token_file"));

  client_.bearer_token = "wrong";
  EXPECT_EQ(Submit(spec).status().code(), absl::StatusCode::kUnauthenticated);

  auto token = ReadBearerToken(WriteFile("token", "  s3cret\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  client_.bearer_token = *token;
  auto job = Submit(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  std::ostringstream out;
  EXPECT_TRUE(RunList({}, client_, stub_.get(), out).ok());
  EXPECT_TRUE(Cancel(job->name()).ok());
}

TEST(ReadBearerTokenTest, AMissingOrEmptyFileIsAnError) {
  EXPECT_EQ(ReadBearerToken(TempPath("no-token")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadBearerToken(WriteFile("empty-token", " \n")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- watch ------------------------------------------------------------------

TEST_F(JobCommandsTest, WatchOfACancelledJobEndsWithExitCode1) {
  const std::string job = SubmitYaml();
  ASSERT_TRUE(Cancel(job).ok());
  std::ostringstream out;
  auto ended = RunWatch({.job = "1"}, client_, stub_.get(), out);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), v1::CANCELLED);
  EXPECT_EQ(WatchExitCode(*ended), 1);
  EXPECT_THAT(out.str(),
              HasSubstr("state QUEUED -> CANCELLED: cancelled by request"));
  EXPECT_THAT(out.str(),
              HasSubstr("jobs/000001 ended CANCELLED: cancelled by request\n"));
}

TEST_F(JobCommandsTest, WatchEndsWhenTheJobIsCancelledMeanwhile) {
  const std::string job = SubmitYaml();
  ClientOptions json = client_;
  json.output = OutputFormat::kJson;
  std::ostringstream out;
  absl::StatusOr<v1::Job> ended;
  std::thread watcher(
      [&] { ended = RunWatch({.job = job}, json, stub_.get(), out); });
  ASSERT_TRUE(Cancel(job).ok());
  watcher.join();
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), v1::CANCELLED);
  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 1u) << out.str();
  v1::JobEvent event;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(lines[0], &event).ok());
  EXPECT_EQ(event.state_changed().to(), v1::CANCELLED);
}

TEST_F(JobCommandsTest, WatchFollowsAJobToSuccess) {
  // A 2-step job on one worker, which the test plays through the
  // Coordinator's worker API: join, report both steps, commit the last.
  std::string yaml = YamlSpec(dataset_);
  yaml.replace(yaml.find("epochs: 1.5"), 11, "steps: 2");
  auto submitted = Submit(WriteFile("short.yaml", yaml));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  coordinator::Coordinator* coordinator = server_->coordinator();
  v1::RegisterRequest registration;
  registration.set_worker_id("w0");
  registration.set_incarnation(1);
  ASSERT_TRUE(coordinator->Register(registration).ok());
  v1::JoinGenerationRequest join;
  join.set_worker_id("w0");
  join.set_incarnation(1);
  auto joined =
      coordinator->JoinGeneration(join, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(joined.ok()) << joined.status();
  auto sampler = sampler::StreamSampler::Create(
      std::vector<int64_t>(10, 100),
      {.seed = submitted->spec().seed(), .window_shards = 0});
  ASSERT_TRUE(sampler.ok());
  for (int64_t step = 0; step < 2; ++step) {
    auto ids = sampler::RankExampleIds(**sampler, 100, step, 1, 0);
    ASSERT_TRUE(ids.ok());
    v1::ReportStepRequest report;
    report.set_worker_id("w0");
    report.set_incarnation(1);
    report.set_generation(joined->generation());
    report.set_step(step);
    report.set_loss(0.5);
    report.set_step_seconds(0.25);
    report.set_example_count(ids->size());
    report.set_example_digest(sampler::ExampleDigest(*ids));
    const absl::Status reported = coordinator->ReportStep(report);
    ASSERT_TRUE(reported.ok()) << reported;
  }
  v1::CommitCheckpointRequest commit;
  commit.set_worker_id("w0");
  commit.set_incarnation(1);
  commit.set_generation(joined->generation());
  commit.set_step(1);
  commit.set_path("/ckpt/step-1");
  ASSERT_TRUE(coordinator->CommitCheckpoint(commit).ok());

  std::ostringstream out;
  auto ended = RunWatch({.job = submitted->name()}, client_, stub_.get(), out);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), v1::SUCCEEDED);
  EXPECT_EQ(WatchExitCode(*ended), 0);
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("generation 1: world size 1"));
  EXPECT_THAT(text, HasSubstr("state QUEUED -> RUNNING"));
  EXPECT_THAT(text, HasSubstr("step 1/2  epoch 0.10  400 ex/s  loss 0.5000  "
                              "world 1  gen 1"));
  EXPECT_THAT(text, HasSubstr("step 2/2  epoch 0.20"));
  EXPECT_THAT(text, HasSubstr("checkpoint of step 1 committed: /ckpt/step-1"));
  EXPECT_THAT(text, HasSubstr("jobs/000001 ended SUCCEEDED\n"));

  // Live (a terminal): the two step lines share one line, "\r" returning to
  // its start; the next event ends it and starts a line of its own.
  std::ostringstream live;
  ASSERT_TRUE(RunWatch({.job = submitted->name(), .live = true}, client_,
                       stub_.get(), live)
                  .ok());
  const std::string screen = live.str();
  EXPECT_EQ(std::count(screen.begin(), screen.end(), '\r'), 2) << screen;
  EXPECT_THAT(screen, HasSubstr("gen 1\x1b[K\r"));
  EXPECT_THAT(screen, HasSubstr("gen 1\x1b[K\n"));
  EXPECT_THAT(screen, HasSubstr("jobs/000001 ended SUCCEEDED\n"));
}

TEST_F(JobCommandsTest, WatchReportsAStreamThatBreaks) {
  const std::string job = SubmitYaml();
  std::ostringstream out;
  absl::StatusOr<v1::Job> ended;
  std::thread watcher(
      [&] { ended = RunWatch({.job = job}, client_, stub_.get(), out); });
  server_->Shutdown();  // cancels open streams after a one-second grace
  watcher.join();
  EXPECT_FALSE(ended.ok());
  EXPECT_THAT(ended.status().message(), HasSubstr(client_.coordinator));
}

TEST_F(JobCommandsTest, WatchOfAnUnknownJobIsNotFound) {
  std::ostringstream out;
  auto ended = RunWatch({.job = "7"}, client_, stub_.get(), out);
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kNotFound);
}

// --- reaching the coordinator -----------------------------------------------

TEST(CallCoordinatorTest, AnUnreachableCoordinatorIsUnavailableNamingIt) {
  ClientOptions client;
  client.coordinator = absl::StrCat("127.0.0.1:", ClosedPort());
  client.initial_backoff = absl::Milliseconds(1);
  auto stub = v1::JobService::NewStub(
      services::MakeCoordinatorChannel(client.coordinator));
  std::ostringstream out;
  const absl::Time start = absl::Now();
  const absl::Status status = RunGet({.job = "1"}, client, stub.get(), out);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(),
              HasSubstr("cannot reach the coordinator at " +
                        client.coordinator + " (4 attempts)"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(CallCoordinatorTest, RetriesUnavailableOnlyForIdempotentCalls) {
  ClientOptions client;
  client.initial_backoff = absl::Milliseconds(1);
  int calls = 0;
  const auto flaky = [&calls](grpc::ClientContext*) {
    return ++calls <= 2 ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")
                        : grpc::Status::OK;
  };
  EXPECT_TRUE(CallCoordinator(client, /*idempotent=*/true, flaky).ok());
  EXPECT_EQ(calls, 3);

  calls = 0;
  EXPECT_EQ(CallCoordinator(client, /*idempotent=*/false, flaky).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);

  calls = 0;
  const auto down = [&calls](grpc::ClientContext*) {
    ++calls;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  };
  EXPECT_EQ(CallCoordinator(client, /*idempotent=*/true, down).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 4);  // the first try and max_retries = 3

  calls = 0;
  const auto refused = [&calls](grpc::ClientContext*) {
    ++calls;
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
  };
  const absl::Status not_found =
      CallCoordinator(client, /*idempotent=*/true, refused);
  EXPECT_EQ(not_found.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(not_found.message(), "no such job");
  EXPECT_EQ(calls, 1);
}

TEST(CallCoordinatorTest, EveryAttemptHasTheCommandsDeadline) {
  ClientOptions client;
  client.timeout = absl::Seconds(5);
  std::vector<absl::Time> deadlines;
  const absl::Time before = absl::Now();
  const auto record = [&deadlines](grpc::ClientContext* context) {
    deadlines.push_back(absl::FromChrono(context->deadline()));
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  };
  client.initial_backoff = absl::Milliseconds(1);
  (void)CallCoordinator(client, /*idempotent=*/true, record);
  ASSERT_EQ(deadlines.size(), 4u);
  for (const absl::Time deadline : deadlines) {
    EXPECT_EQ(deadline, deadlines[0]);  // shared, not renewed per retry
    EXPECT_GE(deadline, before + absl::Seconds(5));
    EXPECT_LE(deadline, absl::Now() + absl::Seconds(5));
  }
}

TEST(CallCoordinatorTest, StopsRetryingWhenTheBackoffWouldPassTheDeadline) {
  ClientOptions client;
  client.timeout = absl::Milliseconds(300);
  client.initial_backoff = absl::Seconds(1);
  int calls = 0;
  const auto down = [&calls](grpc::ClientContext*) {
    ++calls;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
  };
  const absl::Time start = absl::Now();
  EXPECT_EQ(CallCoordinator(client, /*idempotent=*/true, down).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(300));
}

// --- names and request ids --------------------------------------------------

TEST(NormalizeJobNameTest, AcceptsTheThreeFormsAndRefusesTheRest) {
  EXPECT_EQ(*NormalizeJobName("1"), "jobs/000001");
  EXPECT_EQ(*NormalizeJobName("000042"), "jobs/000042");
  EXPECT_EQ(*NormalizeJobName("jobs/000042"), "jobs/000042");
  EXPECT_EQ(*NormalizeJobName("1234567"), "jobs/1234567");
  for (const char* bad :
       {"", "jobs/", "0", "jobs/000000", "-1", "abc", "jobs/1x", "1.0", "job/1",
        " 1", "99999999999999999999999"}) {
    EXPECT_EQ(NormalizeJobName(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(NewRequestIdTest, IsARandomVersion4Uuid) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    const std::string id = NewRequestId();
    ASSERT_EQ(id.size(), 36u) << id;
    for (int dash : {8, 13, 18, 23}) EXPECT_EQ(id[dash], '-') << id;
    EXPECT_EQ(id[14], '4') << id;
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 100u);
}

// --- spec files -------------------------------------------------------------

// The error ParseYamlJobSpec gives for `yaml`, or "" if it parses.
std::string YamlError(const std::string& yaml) {
  auto spec = ParseYamlJobSpec(yaml, "job.yaml");
  if (spec.ok()) return "";
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(spec.status().message());
}

TEST(ParseYamlJobSpecTest, ReadsScalarsAsTheFieldsTypesWant) {
  auto spec = ParseYamlJobSpec(
      "display_name: 2024\n"  // a string, though it looks like a number
      "dataset: /data\n"
      "model: {name: mlp, hidden: [64], loss: 2}\n"
      "optimizer: {adamw: {beta1: .5}, weightDecay: 1e-4}\n"
      "schedule: {decay: CONSTANT, warmup_steps: '10'}\n"
      "epochs: .inf\n"
      "seed: 18446744073709551615\n"
      "eval: ~\n"
      "checkpoint:\n",
      "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->display_name(), "2024");
  EXPECT_EQ(spec->model().hidden(0), 64);
  EXPECT_EQ(spec->model().loss(), v1::ModelSpec::SIGMOID_CROSS_ENTROPY);
  EXPECT_DOUBLE_EQ(spec->optimizer().adamw().beta1(), 0.5);
  EXPECT_DOUBLE_EQ(spec->optimizer().weight_decay(), 1e-4);
  EXPECT_EQ(spec->schedule().decay(), v1::ScheduleSpec::CONSTANT);
  EXPECT_EQ(spec->schedule().warmup_steps(), 10);
  EXPECT_TRUE(std::isinf(spec->epochs()));
  EXPECT_EQ(spec->seed(), 18446744073709551615u);
  EXPECT_FALSE(spec->has_eval());
  EXPECT_FALSE(spec->has_checkpoint());
}

TEST(ParseYamlJobSpecTest, ErrorsNameTheLineAndTheField) {
  EXPECT_EQ(YamlError("dataset: /d\nmodel:\n  name: cnn\n  hiden: [1]\n"),
            "job.yaml:4:3: spec.model.hiden: unknown field; ModelSpec has: "
            "name, hidden, num_classes, loss");
  EXPECT_EQ(YamlError("dataset: /d\nglobal_batch: lots\n"),
            "job.yaml:2:15: spec.global_batch: expected an integer (int64), "
            "got 'lots'");
  EXPECT_EQ(YamlError("model: {hidden: [8, wide]}\n"),
            "job.yaml:1:21: spec.model.hidden[1]: expected an integer "
            "(int32), got 'wide'");
  EXPECT_EQ(YamlError("min_workers: 3000000000\n"),
            "job.yaml:1:14: spec.min_workers: expected an integer (int32), "
            "got '3000000000'");
  EXPECT_EQ(YamlError("seed: -1\n"),
            "job.yaml:1:7: spec.seed: expected an integer >= 0 (uint64), got "
            "'-1'");
  EXPECT_EQ(YamlError("schedule:\n  decay: FAST\n"),
            "job.yaml:2:10: spec.schedule.decay: unknown value 'FAST'; one "
            "of: DECAY_UNSPECIFIED, CONSTANT, COSINE, RSQRT");
  EXPECT_EQ(YamlError("optimizer: {sgd: {nesterov: maybe}}\n"),
            "job.yaml:1:29: spec.optimizer.sgd.nesterov: expected true or "
            "false, got 'maybe'");
  EXPECT_EQ(YamlError("epochs: 1\nsteps: 10\n"),
            "job.yaml:2:1: spec.steps: cannot be set together with epochs "
            "(set one of length)");
  EXPECT_EQ(YamlError("seed: 1\nseed: 2\n"),
            "job.yaml:2:1: spec.seed: set twice (first on line 1)");
  EXPECT_EQ(YamlError("model: cnn\n"),
            "job.yaml:1:8: spec.model: expected a mapping of ModelSpec "
            "fields, got 'cnn'");
  EXPECT_EQ(YamlError("model: {hidden: 8}\n"),
            "job.yaml:1:17: spec.model.hidden: expected a list, got '8'");
  EXPECT_EQ(YamlError("dataset: [a, b]\n"),
            "job.yaml:1:10: spec.dataset: expected a single value, got a list");
  EXPECT_EQ(YamlError("- 1\n"),
            "job.yaml:1:1: spec: expected a mapping of JobSpec fields, got a "
            "list");
  EXPECT_EQ(YamlError("model: {name: cnn\n"),
            "job.yaml:2:1: end of map flow not found");
  EXPECT_EQ(YamlError("# nothing\n"),
            "job.yaml: holds no JobSpec (the file is empty)");
  EXPECT_EQ(YamlError("seed: 1\n---\nseed: 2\n"),
            "job.yaml:3: a second YAML document; a spec file holds one "
            "JobSpec");
}

TEST(ReadJobSpecFileTest, TextAndJsonErrorsNameTheFile) {
  const std::string text =
      WriteFile("bad.pbtxt", "seed: 1\nmodel { nme: 1 }\n");
  auto from_text = ReadJobSpecFile(text);
  EXPECT_EQ(from_text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(from_text.status().message(), HasSubstr(text + ":2:"));
  EXPECT_THAT(from_text.status().message(), HasSubstr("nme"));

  const std::string json =
      WriteFile("bad.json", "{\"model\": {\"loss\": \"NOPE\"}}");
  auto from_json = ReadJobSpecFile(json);
  EXPECT_EQ(from_json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(from_json.status().message(), HasSubstr(json + ": "));
  EXPECT_THAT(from_json.status().message(), HasSubstr("model.loss"));

  const std::string txtpb = WriteFile("good.txtpb", "seed: 5");
  auto good = ReadJobSpecFile(txtpb);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->seed(), 5u);
}

TEST(ReadJobSpecFileTest, UnknownExtensionsAndMissingFilesAreRefused) {
  auto unknown = ReadJobSpecFile(WriteFile("job.toml", "seed = 1"));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr(".yaml"));
  const std::string missing = TempPath("no-such-job.yaml");
  auto absent = ReadJobSpecFile(missing);
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(absent.status().message(), HasSubstr(missing));
}

// --- event lines ------------------------------------------------------------

TEST(FormatEventTest, StepLinesShowWhatIsKnown) {
  v1::JobEvent event;
  event.mutable_job()->set_world_size(4);
  event.mutable_job()->set_generation(3);
  event.mutable_job()->mutable_spec()->set_global_batch(256);
  event.mutable_step_progress()->set_step(99);
  event.mutable_step_progress()->set_loss(1.25);
  event.mutable_step_progress()->set_examples_per_second(4512.4);
  EXPECT_EQ(FormatEvent(event, {}),
            "step 100  4512 ex/s  loss 1.2500  world 4  gen 3");
  EXPECT_EQ(
      FormatEvent(event, {.total_steps = 1000, .examples_per_epoch = 12800}),
      "step 100/1000  epoch 2.00  4512 ex/s  loss 1.2500  world 4  gen 3");
}

TEST(FormatEventTest, OtherEventsSayWhatHappened) {
  v1::JobEvent event;
  auto* changed = event.mutable_generation_changed();
  changed->set_generation(5);
  changed->set_world_size(3);
  changed->set_reason("lease of w2 expired");
  EXPECT_EQ(FormatEvent(event, {}),
            "generation 5: world size 3 (lease of w2 expired)");
  event.mutable_job()->set_state_message("restart budget spent");
  event.mutable_state_changed()->set_from(v1::RESTARTING);
  event.mutable_state_changed()->set_to(v1::FAILED);
  EXPECT_EQ(FormatEvent(event, {}),
            "state RESTARTING -> FAILED: restart budget spent");
  event.mutable_checkpoint_committed()->set_step(199);
  event.mutable_checkpoint_committed()->set_path("/ckpt/199");
  EXPECT_EQ(FormatEvent(event, {}),
            "checkpoint of step 199 committed: /ckpt/199");
}

}  // namespace
}  // namespace podtrain::cli
