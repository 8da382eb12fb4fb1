#include "services/health_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "proto/health.grpc.pb.h"
#include "services/channel.h"

namespace podtrain::services {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

class HealthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // As in podtrain-coordinator: reflection is registered process-wide
    // before the health server is built, and must not appear on it.
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    auto server = HealthServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ =
        MakeCoordinatorChannel(absl::StrCat("127.0.0.1:", server_->port()));
    health_ = Health::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return context;
  }

  grpc::Status Check(const std::string& service,
                     HealthCheckResponse* response) {
    HealthCheckRequest request;
    request.set_service(service);
    return health_->Check(Context().get(), request, response);
  }

  HealthCheckResponse::ServingStatus CheckServer() {
    HealthCheckResponse response;
    const grpc::Status status = Check("", &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  // A unary call to any method, by name, with an empty message.
  grpc::StatusCode CallMethod(const std::string& method) {
    grpc::GenericStub stub(channel_);
    auto context = Context();
    grpc::CompletionQueue queue;
    grpc::Slice empty("");
    const grpc::ByteBuffer request(&empty, 1);
    auto call = stub.PrepareUnaryCall(context.get(), method, request, &queue);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, nullptr);
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&tag, &ok));
    queue.Shutdown();
    while (queue.Next(&tag, &ok)) {
    }
    return status.error_code();
  }

  std::unique_ptr<HealthServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Health::Stub> health_;
};

TEST_F(HealthServerTest, CheckReportsTheStatusItsOwnerSets) {
  EXPECT_EQ(CheckServer(), HealthCheckResponse::NOT_SERVING);
  server_->SetServing(true);
  EXPECT_EQ(CheckServer(), HealthCheckResponse::SERVING);
  server_->SetServing(false);
  EXPECT_EQ(CheckServer(), HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServerTest, CheckOfAnotherServiceIsNotFound) {
  server_->SetServing(true);
  HealthCheckResponse response;
  const grpc::Status status = Check("podtrain.v1.JobService", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND)
      << status.error_message();
}

TEST_F(HealthServerTest, WatchFollowsChangesAndEndsWithNotServingOnShutdown) {
  HealthCheckRequest request;
  auto context = Context();
  auto watch = health_->Watch(context.get(), request);
  HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);

  server_->SetServing(true);
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  // No news, no message: setting the same status again sends nothing, so
  // the next message is the shutdown's.
  server_->SetServing(true);
  server_->Shutdown();
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(watch->Read(&response));
  EXPECT_TRUE(watch->Finish().ok());
}

TEST_F(HealthServerTest, WatchOfAnotherServiceIsServiceUnknown) {
  server_->SetServing(true);
  HealthCheckRequest request;
  request.set_service("podtrain.v1.JobService");
  auto context = Context();
  auto watch = health_->Watch(context.get(), request);
  HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  context->TryCancel();
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(HealthServerTest, ServesNothingButHealth) {
  server_->SetServing(true);
  EXPECT_EQ(CallMethod("/grpc.health.v1.Health/Check"), grpc::StatusCode::OK);
  EXPECT_EQ(CallMethod("/podtrain.v1.JobService/ListJobs"),
            grpc::StatusCode::UNIMPLEMENTED);
  // Reflection would answer an empty request with an error message and OK.
  EXPECT_EQ(CallMethod("/grpc.reflection.v1alpha.ServerReflection/"
                       "ServerReflectionInfo"),
            grpc::StatusCode::UNIMPLEMENTED);
}

// 192.0.2.1 (TEST-NET-1) is no address of this host.
TEST(HealthServerStartTest, AnAddressItCannotServeOnIsAnError) {
  const auto server = HealthServer::Start("192.0.2.1:0");
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(server.status().message().find("192.0.2.1:0"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace podtrain::services
