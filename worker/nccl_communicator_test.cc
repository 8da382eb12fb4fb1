// The NCCL backend's device-free logic, under --config=cuda. No machine here
// has a GPU, so real NCCL collectives cannot run in this test (or anywhere in
// this repository's tests); what runs is: the ncclResult_t and dtype
// mappings, the unique-id rendezvous through a real coordinator's store, and
// ConnectNccl failing cleanly without a device. On a machine with a GPU the
// last test instead forms a world of one and runs a barrier and an abort.

#include "worker/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "worker/collectives_test_util.h"

namespace podtrain::worker {
namespace {

using testing::RunRanks;
using testing::TestCoordinator;

TEST(NcclStatusTest, MapsEveryResult) {
  EXPECT_TRUE(NcclStatus(ncclSuccess, "op").ok());
  const std::vector<std::pair<ncclResult_t, absl::StatusCode>> cases = {
      {ncclUnhandledCudaError, absl::StatusCode::kInternal},
      {ncclSystemError, absl::StatusCode::kUnavailable},
      {ncclInternalError, absl::StatusCode::kInternal},
      {ncclInvalidArgument, absl::StatusCode::kInvalidArgument},
      {ncclInvalidUsage, absl::StatusCode::kFailedPrecondition},
      {ncclRemoteError, absl::StatusCode::kUnavailable},
      {ncclInProgress, absl::StatusCode::kInternal},
      {static_cast<ncclResult_t>(99), absl::StatusCode::kUnknown},
  };
  for (const auto& [result, code] : cases) {
    const absl::Status status = NcclStatus(result, "ncclAllReduce");
    EXPECT_EQ(status.code(), code) << status;
    // The message names the call and carries NCCL's own text.
    EXPECT_EQ(status.message().rfind("ncclAllReduce: ", 0), 0u) << status;
    EXPECT_NE(status.message().find(ncclGetErrorString(result)),
              std::string::npos)
        << status;
  }
}

TEST(NcclDataTypeTest, MapsWhatNcclReducesAndRejectsTheRest) {
  EXPECT_EQ(*NcclDataType(torch::kFloat32), ncclFloat32);
  EXPECT_EQ(*NcclDataType(torch::kFloat64), ncclFloat64);
  EXPECT_EQ(*NcclDataType(torch::kFloat16), ncclFloat16);
  EXPECT_EQ(*NcclDataType(torch::kBFloat16), ncclBfloat16);
  EXPECT_EQ(*NcclDataType(torch::kInt64), ncclInt64);
  EXPECT_EQ(*NcclDataType(torch::kInt32), ncclInt32);
  EXPECT_EQ(*NcclDataType(torch::kUInt8), ncclUint8);
  EXPECT_TRUE(absl::IsInvalidArgument(NcclDataType(torch::kBool).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(NcclDataType(torch::kComplexFloat).status()));
}

class NcclRendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto coordinator = TestCoordinator::Start();
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
  }

  std::unique_ptr<TestCoordinator> coordinator_;
};

TEST_F(NcclRendezvousTest, EveryRankGetsRankZerosUniqueId) {
  constexpr int kWorld = 3;
  std::vector<absl::StatusOr<ncclUniqueId>> ids(kWorld);
  RunRanks(kWorld, [&](int rank) {
    auto store = coordinator_->NewStore(absl::Seconds(10));
    // The others are already waiting when rank 0 publishes.
    if (rank == 0) absl::SleepFor(absl::Milliseconds(200));
    ids[rank] = ExchangeNcclUniqueId(*store, rank, absl::Seconds(10));
  });
  for (int rank = 0; rank < kWorld; ++rank) {
    ASSERT_TRUE(ids[rank].ok()) << ids[rank].status();
    EXPECT_EQ(std::memcmp(ids[rank]->internal, ids[0]->internal,
                          sizeof(ncclUniqueId)),
              0)
        << "rank " << rank;
  }
  // It lives in the coordinator under the generation's prefix.
  v1::StoreGetRequest request;
  request.set_key(coordinator_->store_prefix() + kNcclUniqueIdKey);
  auto stored = coordinator_->server().coordinator()->StoreGet(
      request, absl::Now() + absl::Seconds(1));
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->value().size(), sizeof(ncclUniqueId));
  EXPECT_EQ(std::memcmp(stored->value().data(), ids[0]->internal,
                        sizeof(ncclUniqueId)),
            0);
}

TEST_F(NcclRendezvousTest, WaitingForAnIdNobodyPublishesTimesOut) {
  auto store = coordinator_->NewStore(absl::Seconds(30));
  const absl::Time start = absl::Now();
  auto id = ExchangeNcclUniqueId(*store, /*rank=*/1, absl::Milliseconds(400));
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsDeadlineExceeded(id.status())) << id.status();
  EXPECT_NE(id.status().message().find(kNcclUniqueIdKey), std::string::npos)
      << id.status();
  EXPECT_GE(took, absl::Milliseconds(350));
  EXPECT_LT(took, absl::Seconds(3));
}

TEST_F(NcclRendezvousTest, MalformedIdIsRejected) {
  auto store = coordinator_->NewStore(absl::Seconds(5));
  store->set(kNcclUniqueIdKey, std::vector<char>(5, 'x'));
  auto id = ExchangeNcclUniqueId(*store, /*rank=*/1, absl::Seconds(5));
  EXPECT_TRUE(absl::IsInternal(id.status())) << id.status();
}

TEST(ConnectNcclTest, FailsCleanlyWithoutAGpuOrWorksWithOne) {
  CommunicatorOptions options;
  options.rank = 0;
  options.world_size = 1;
  options.timeout = absl::Seconds(10);
  int devices = 0;
  const bool have_gpu =
      cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
  const absl::Time start = absl::Now();
  auto communicator = ConnectNccl(options, /*cuda_device=*/0, nullptr);
  if (!have_gpu) {
    // The machines here: a clear error, promptly, and no crash.
    EXPECT_TRUE(absl::IsFailedPrecondition(communicator.status()))
        << communicator.status();
    EXPECT_NE(communicator.status().message().find("no usable CUDA device"),
              std::string::npos)
        << communicator.status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
    std::cout << "without a GPU: " << communicator.status() << "\n";
    return;
  }
  // Only where a GPU exists (never on podtrain's machines).
  ASSERT_TRUE(communicator.ok()) << communicator.status();
  EXPECT_TRUE((*communicator)->Barrier().ok());
  (*communicator)->Abort();
  EXPECT_TRUE(absl::IsAborted((*communicator)->Barrier()));
}

TEST(ConnectNcclTest, RejectsBadOptions) {
  CommunicatorOptions options;
  options.rank = 1;
  options.world_size = 1;
  EXPECT_TRUE(
      absl::IsInvalidArgument(ConnectNccl(options, 0, nullptr).status()));
  options.rank = 0;
  options.world_size = 2;
  EXPECT_TRUE(
      absl::IsInvalidArgument(ConnectNccl(options, 0, nullptr).status()))
      << "a world of two needs a store";
}

}  // namespace
}  // namespace podtrain::worker
