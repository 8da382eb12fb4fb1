// Checks that the generated API code compiles, links and works end to end:
// messages round-trip through the wire format, and a JobService served on
// loopback answers unary and streaming calls from a real client.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "proto/job.grpc.pb.h"
#include "proto/job.pb.h"
#include "proto/worker.grpc.pb.h"
#include "proto/worker.pb.h"

namespace podtrain::v1 {
namespace {

JobSpec ReferenceSpec() {
  JobSpec spec;
  spec.set_display_name("fashion-mnist-mlp");
  spec.set_dataset("/data/fmnist/train/MANIFEST");
  spec.mutable_model()->set_name("mlp");
  spec.mutable_model()->add_hidden(1024);
  spec.mutable_model()->add_hidden(1024);
  spec.mutable_model()->set_num_classes(10);
  spec.mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
  spec.mutable_optimizer()->mutable_sgd()->set_nesterov(true);
  spec.set_global_batch(256);
  spec.set_epochs(5.0);
  spec.set_seed(42);
  return spec;
}

TEST(ProtoTest, JobSpecRoundTripsThroughTheWireFormat) {
  const JobSpec spec = ReferenceSpec();
  std::string bytes;
  ASSERT_TRUE(spec.SerializeToString(&bytes));

  JobSpec parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  EXPECT_EQ(parsed.model().hidden_size(), 2);
  EXPECT_EQ(parsed.length_case(), JobSpec::kEpochs);
  EXPECT_DOUBLE_EQ(parsed.epochs(), 5.0);
  EXPECT_TRUE(parsed.optimizer().has_sgd());
  EXPECT_EQ(parsed.SerializeAsString(), bytes);
}

TEST(ProtoTest, OneofLengthHoldsEitherEpochsOrSteps) {
  JobSpec spec = ReferenceSpec();
  spec.set_steps(1000);
  EXPECT_EQ(spec.length_case(), JobSpec::kSteps);
  EXPECT_FALSE(spec.has_epochs());
}

// A tiny JobService that accepts any spec: enough to exercise the generated
// stubs over a real channel.
class EchoJobService final : public JobService::Service {
 public:
  grpc::Status CreateJob(grpc::ServerContext*, const CreateJobRequest* request,
                         Job* job) override {
    if (request->request_id().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "request_id: must be set");
    }
    job->set_name("jobs/" + request->request_id());
    *job->mutable_spec() = request->spec();
    job->set_state(QUEUED);
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext*, const WatchJobRequest* request,
                        grpc::ServerWriter<JobEvent>* writer) override {
    for (int step = 1; step <= 3; ++step) {
      JobEvent event;
      event.mutable_job()->set_name(request->name());
      event.mutable_step_progress()->set_step(step);
      if (!writer->Write(event)) break;
    }
    return grpc::Status::OK;
  }
};

class JobServiceLoopbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = JobService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override { server_->Shutdown(); }

  static std::unique_ptr<grpc::ClientContext> ContextWithDeadline() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(10));
    return context;
  }

  EchoJobService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<JobService::Stub> stub_;
};

TEST_F(JobServiceLoopbackTest, UnaryCallCarriesTheSpec) {
  CreateJobRequest request;
  *request.mutable_spec() = ReferenceSpec();
  request.set_request_id("abc");
  Job job;
  auto context = ContextWithDeadline();
  grpc::Status status = stub_->CreateJob(context.get(), request, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(job.name(), "jobs/abc");
  EXPECT_EQ(job.state(), QUEUED);
  EXPECT_EQ(job.spec().SerializeAsString(), request.spec().SerializeAsString());
}

TEST_F(JobServiceLoopbackTest, ErrorsKeepTheirCodeAndMessage) {
  CreateJobRequest request;
  Job job;
  auto context = ContextWithDeadline();
  grpc::Status status = stub_->CreateJob(context.get(), request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "request_id: must be set");
}

TEST_F(JobServiceLoopbackTest, ServerStreamDeliversEventsInOrder) {
  WatchJobRequest request;
  request.set_name("jobs/abc");
  auto context = ContextWithDeadline();
  auto reader = stub_->WatchJob(context.get(), request);
  JobEvent event;
  int expected_step = 1;
  while (reader->Read(&event)) {
    EXPECT_EQ(event.job().name(), "jobs/abc");
    EXPECT_EQ(event.step_progress().step(), expected_step++);
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(expected_step, 4);
}

TEST(ProtoTest, WorkerApiMessagesAndStubExist) {
  StepAssignment assignment;
  assignment.set_step(7);
  assignment.add_example_ids(int64_t{1} << 40);
  StepAssignment parsed;
  ASSERT_TRUE(parsed.ParseFromString(assignment.SerializeAsString()));
  EXPECT_EQ(parsed.example_ids(0), int64_t{1} << 40);
  // The stub type is generated and constructible from a channel.
  auto stub = WorkerService::NewStub(
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  EXPECT_NE(stub, nullptr);
}

}  // namespace
}  // namespace podtrain::v1
