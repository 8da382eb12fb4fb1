// The Gloo backend for real: ranks are threads of this process, each with
// its own TCP device and context on loopback, meeting through a real
// coordinator's store. Covers the results of every operation, a world of
// one, and the failure paths that must be prompt: a peer that dies or
// aborts mid-collective, Abort() from another thread, and the timeouts.

#include "worker/gloo_communicator.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "worker/collectives_test_util.h"

namespace podtrain::worker {
namespace {

using testing::ConnectGlooWorld;
using testing::RunRanks;
using testing::TestCoordinator;

// Rank r's input: element i is (i mod 1000) * (r + 1), so the sum over
// ranks is exactly (i mod 1000) * world*(world+1)/2 in float32.
torch::Tensor RankInput(int64_t elements, int rank) {
  return torch::remainder(torch::arange(elements, torch::kFloat32), 1000) *
         static_cast<float>(rank + 1);
}

class GlooCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto coordinator = TestCoordinator::Start();
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
  }

  std::vector<std::unique_ptr<Communicator>> World(
      int size, absl::Duration timeout = absl::Seconds(30)) {
    auto world = ConnectGlooWorld(*coordinator_, size, timeout);
    EXPECT_TRUE(world.ok()) << world.status();
    if (!world.ok()) return {};
    for (int rank = 0; rank < size; ++rank) {
      EXPECT_EQ((*world)[rank]->rank(), rank);
      EXPECT_EQ((*world)[rank]->world_size(), size);
    }
    return *std::move(world);
  }

  std::unique_ptr<TestCoordinator> coordinator_;
};

TEST_F(GlooCommunicatorTest, AllReduceSumOfThreeRanksIsTheSum) {
  auto world = World(3);
  ASSERT_EQ(world.size(), 3u);
  // 25 MB is DDP's default bucket; 1 and 1001 elements cover the edges of
  // gloo's ring segmenting (fewer elements than ranks, uneven split).
  for (const int64_t elements :
       {int64_t{1}, int64_t{1001}, int64_t{1} << 18, int64_t{25} << 18}) {
    std::vector<torch::Tensor> tensors(3);
    std::vector<absl::Status> results(3);
    std::vector<absl::Duration> took(3);
    RunRanks(3, [&](int rank) {
      tensors[rank] = RankInput(elements, rank);
      const absl::Time start = absl::Now();
      results[rank] = world[rank]->AllReduceSum(tensors[rank]);
      took[rank] = absl::Now() - start;
    });
    const torch::Tensor expected = RankInput(elements, 0) * 6.0f;
    for (int rank = 0; rank < 3; ++rank) {
      ASSERT_TRUE(results[rank].ok()) << results[rank];
      EXPECT_TRUE(torch::equal(tensors[rank], expected))
          << "rank " << rank << ", " << elements << " elements";
    }
    std::cout << "all-reduce of " << elements * 4
              << " bytes over 3 ranks: " << absl::FormatDuration(took[0])
              << "\n";
  }
}

TEST_F(GlooCommunicatorTest, AllReduceSumHandlesOtherDtypesAndViews) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<torch::Tensor> ints(2), doubles(2), matrices(2);
  std::vector<absl::Status> results(2);
  RunRanks(2, [&](int rank) {
    ints[rank] = torch::full({5}, int64_t{1} << 40, torch::kInt64) * (rank + 1);
    doubles[rank] = torch::full({3}, 0.1 * (rank + 1), torch::kFloat64);
    // A transposed (non-contiguous) view is reduced in place too.
    matrices[rank] = (torch::arange(6, torch::kFloat32).reshape({2, 3}) *
                      static_cast<float>(rank + 1))
                         .t();
    absl::Status status = world[rank]->AllReduceSum(ints[rank]);
    if (status.ok()) status = world[rank]->AllReduceSum(doubles[rank]);
    if (status.ok()) status = world[rank]->AllReduceSum(matrices[rank]);
    results[rank] = status;
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(
        ints[rank], torch::full({5}, int64_t{3} << 40, torch::kInt64)));
    EXPECT_TRUE(
        torch::allclose(doubles[rank], torch::full({3}, 0.3, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(
        matrices[rank],
        (torch::arange(6, torch::kFloat32).reshape({2, 3}) * 3.0f).t()));
  }
}

TEST_F(GlooCommunicatorTest, RejectsTensorsItCannotReduce) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  torch::Tensor flags = torch::ones({4}, torch::kBool);
  torch::Tensor undefined;
  for (torch::Tensor* tensor : {&flags, &undefined}) {
    const absl::Status status = world[0]->AllReduceSum(*tensor);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  }
  torch::Tensor value = torch::zeros({1});
  EXPECT_TRUE(absl::IsInvalidArgument(world[0]->Broadcast(value, 2)));
  // Rejections happen before any communication: the world still works.
  std::vector<absl::Status> results(2);
  RunRanks(2, [&](int rank) { results[rank] = world[rank]->Barrier(); });
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_TRUE(results[1].ok()) << results[1];
}

TEST_F(GlooCommunicatorTest, BroadcastCopiesTheRootsTensorEverywhere) {
  auto world = World(3);
  ASSERT_EQ(world.size(), 3u);
  std::vector<torch::Tensor> tensors(3);
  std::vector<absl::Status> results(3);
  RunRanks(3, [&](int rank) {
    tensors[rank] =
        torch::full({1000}, static_cast<int64_t>(rank * 7 + 1), torch::kInt64);
    results[rank] = world[rank]->Broadcast(tensors[rank], /*root=*/1);
  });
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(tensors[rank],
                             torch::full({1000}, int64_t{8}, torch::kInt64)));
  }
}

TEST_F(GlooCommunicatorTest, BarrierWaitsForTheLastRank) {
  auto world = World(3);
  ASSERT_EQ(world.size(), 3u);
  constexpr absl::Duration kLate = absl::Milliseconds(300);
  std::vector<absl::Status> results(3);
  std::vector<absl::Duration> took(3);
  RunRanks(3, [&](int rank) {
    const absl::Time start = absl::Now();
    if (rank == 2) absl::SleepFor(kLate);
    results[rank] = world[rank]->Barrier();
    took[rank] = absl::Now() - start;
  });
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_GE(took[rank], kLate - absl::Milliseconds(20)) << "rank " << rank;
    EXPECT_LT(took[rank], absl::Seconds(5)) << "rank " << rank;
  }
}

TEST(GlooWorldOfOneTest, WorksWithoutStoreOrNetwork) {
  CommunicatorOptions options;
  options.rank = 0;
  options.world_size = 1;
  // An address no device could bind: a world of one must not try.
  options.hostname = "no-such-host.invalid";
  auto communicator = ConnectGloo(options, /*store=*/nullptr);
  ASSERT_TRUE(communicator.ok()) << communicator.status();
  Communicator& one = **communicator;
  torch::Tensor values = torch::arange(10, torch::kFloat32);
  ASSERT_TRUE(one.AllReduceSum(values).ok());
  EXPECT_TRUE(torch::equal(values, torch::arange(10, torch::kFloat32)));
  ASSERT_TRUE(one.Broadcast(values, 0).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(one.Broadcast(values, 1)));
  ASSERT_TRUE(one.Barrier().ok());
  one.Abort();
  const absl::Status aborted = one.AllReduceSum(values);
  EXPECT_TRUE(absl::IsAborted(aborted)) << aborted;
}

TEST(GlooConnectTest, RejectsBadOptions) {
  CommunicatorOptions options;
  options.rank = 2;
  options.world_size = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(ConnectGloo(options, nullptr).status()));
  options.rank = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(ConnectGloo(options, nullptr).status()))
      << "a world of two needs a store";
}

TEST_F(GlooCommunicatorTest, FormingAWorldTimesOutWhenAPeerNeverComes) {
  CommunicatorOptions options;
  options.rank = 0;
  options.world_size = 2;
  options.store_prefix = coordinator_->store_prefix();
  options.timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  auto communicator =
      ConnectGloo(options, coordinator_->NewStore(options.timeout));
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsDeadlineExceeded(communicator.status()))
      << communicator.status();
  EXPECT_NE(communicator.status().message().find("forming the gloo world"),
            std::string::npos)
      << communicator.status();
  EXPECT_GE(took, absl::Milliseconds(450));
  EXPECT_LT(took, absl::Seconds(3));
}

// A rank that dies or aborts while the others are in a collective waiting
// for it makes their all-reduce fail within milliseconds, not after the 30 s
// timeout: its destructor or Abort() closes its sockets, as a dying
// process's would.
void ExpectPeersFailPromptlyWhenRank2Leaves(
    std::vector<std::unique_ptr<Communicator>>& world, bool destroy) {
  ASSERT_EQ(world.size(), 3u);
  std::vector<absl::Status> results(3);
  std::vector<absl::Time> returned(3);
  absl::Time left;
  RunRanks(3, [&](int rank) {
    if (rank == 2) {
      absl::SleepFor(absl::Milliseconds(300));  // the others are blocked
      left = absl::Now();
      if (destroy) {
        world[2].reset();
      } else {
        world[2]->Abort();
      }
      return;
    }
    torch::Tensor tensor = RankInput(int64_t{1} << 20, rank);
    results[rank] = world[rank]->AllReduceSum(tensor);
    returned[rank] = absl::Now();
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(absl::IsUnavailable(results[rank])) << results[rank];
    const absl::Duration after = returned[rank] - left;
    std::cout << "rank " << rank << " failed " << after << " after rank 2 "
              << (destroy ? "died" : "aborted") << ": " << results[rank]
              << "\n";
    EXPECT_LT(after, absl::Seconds(2)) << "rank " << rank;
    // The failure is final and immediate from now on.
    torch::Tensor again = torch::ones({4});
    const absl::Time start = absl::Now();
    const absl::Status status = world[rank]->AllReduceSum(again);
    EXPECT_FALSE(status.ok());
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));
  }
  if (!destroy) {
    torch::Tensor again = torch::ones({4});
    const absl::Status status = world[2]->AllReduceSum(again);
    EXPECT_TRUE(absl::IsAborted(status)) << status;
  }
}

TEST_F(GlooCommunicatorTest, DeadRankFailsTheOthersPromptly) {
  auto world = World(3, absl::Seconds(30));
  ExpectPeersFailPromptlyWhenRank2Leaves(world, /*destroy=*/true);
}

TEST_F(GlooCommunicatorTest, AbortedRankFailsTheOthersPromptly) {
  auto world = World(3, absl::Seconds(30));
  ExpectPeersFailPromptlyWhenRank2Leaves(world, /*destroy=*/false);
}

// Abort() from another thread (the heartbeat thread, on a generation change)
// releases a rank blocked in an all-reduce whose peer never joins it, and
// tells the peer: its next collective fails at once.
TEST_F(GlooCommunicatorTest, AbortFromAnotherThreadUnblocksAnAllReduce) {
  auto world = World(2, absl::Seconds(30));
  ASSERT_EQ(world.size(), 2u);
  absl::Status status;
  absl::Time returned;
  std::thread blocked([&] {
    torch::Tensor tensor = RankInput(int64_t{25} << 18, 0);
    status = world[0]->AllReduceSum(tensor);
    returned = absl::Now();
  });
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time aborted = absl::Now();
  world[0]->Abort();
  world[0]->Abort();  // idempotent
  blocked.join();
  EXPECT_TRUE(absl::IsAborted(status)) << status;
  std::cout << "Abort() released the all-reduce after " << returned - aborted
            << "\n";
  EXPECT_LT(returned - aborted, absl::Seconds(1));

  torch::Tensor tensor = RankInput(16, 1);
  const absl::Time start = absl::Now();
  const absl::Status peer = world[1]->AllReduceSum(tensor);
  EXPECT_TRUE(absl::IsUnavailable(peer)) << peer;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));

  // Abort() also released the op thread inside gloo: destruction does not
  // wait out the 1 s grace it gives a thread still stuck there.
  const absl::Time destroy = absl::Now();
  world.clear();
  EXPECT_LT(absl::Now() - destroy, absl::Milliseconds(500));
}

// A peer alive but not taking part (stuck) is caught by the timeout. (In
// production the generation change usually comes first: the coordinator
// tells every rank, and the stuck rank's own Abort() closes its sockets.)
TEST_F(GlooCommunicatorTest, StuckPeerTimesOutAfterTheTimeout) {
  auto world = World(2, absl::Milliseconds(600));
  ASSERT_EQ(world.size(), 2u);
  torch::Tensor tensor = RankInput(1000, 0);
  const absl::Time start = absl::Now();
  const absl::Status status = world[0]->AllReduceSum(tensor);
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_NE(status.message().find("AllReduceSum of 4000 bytes"),
            std::string::npos)
      << status;
  EXPECT_GE(took, absl::Milliseconds(550));
  EXPECT_LT(took, absl::Seconds(3));
}

}  // namespace
}  // namespace podtrain::worker
