// CoordinatorStore against a real coordinator server on loopback: values
// round-trip under the generation's prefix, waits block until a key is set
// and honour their timeout, and failures surface as CoordinatorStoreError
// (a gloo::IoException) with the right status.

#include "worker/coordinator_store.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "services/channel.h"
#include "worker/collectives_test_util.h"

namespace podtrain::worker {
namespace {

using testing::TestCoordinator;

std::vector<char> Bytes(const std::string& text) {
  return std::vector<char>(text.begin(), text.end());
}

// Runs `call`, which must throw CoordinatorStoreError; returns its status
// and how long the call took.
template <typename Call>
std::pair<absl::Status, absl::Duration> ExpectStoreError(Call call) {
  const absl::Time start = absl::Now();
  try {
    call();
  } catch (const CoordinatorStoreError& e) {
    // gloo sees an IoException carrying the same text.
    const gloo::IoException& as_gloo = e;
    EXPECT_EQ(std::string(as_gloo.what()), e.status().ToString());
    return {e.status(), absl::Now() - start};
  }
  ADD_FAILURE() << "no CoordinatorStoreError";
  return {absl::OkStatus(), absl::Now() - start};
}

class CoordinatorStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto coordinator = TestCoordinator::Start();
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
  }

  std::unique_ptr<TestCoordinator> coordinator_;
};

TEST_F(CoordinatorStoreTest, SetThenGetRoundTripsUnderThePrefix) {
  auto store = coordinator_->NewStore(absl::Seconds(5));
  const std::string binary("\0\1\2 address", 12);
  store->set("rank_0", Bytes(binary));
  EXPECT_EQ(store->get("rank_0"), Bytes(binary));

  // The coordinator holds it under the full key.
  v1::StoreGetRequest request;
  request.set_key(coordinator_->store_prefix() + "rank_0");
  auto direct = coordinator_->server().coordinator()->StoreGet(
      request, absl::Now() + absl::Seconds(1));
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->value(), binary);

  // Another generation's store does not see it.
  auto next_generation = coordinator_->NewStore(absl::Milliseconds(200), 2);
  auto [status, took] =
      ExpectStoreError([&] { next_generation->get("rank_0"); });
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
}

TEST_F(CoordinatorStoreTest, WaitReturnsOnceAnotherRankSetsTheKeys) {
  auto waiter = coordinator_->NewStore(absl::Seconds(10));
  auto setter = coordinator_->NewStore(absl::Seconds(10));
  std::thread publisher([&] {
    absl::SleepFor(absl::Milliseconds(200));
    setter->set("1", Bytes("one"));
    setter->set("2", Bytes("two"));
  });
  const absl::Time start = absl::Now();
  waiter->wait({"1", "2"}, std::chrono::seconds(10));
  const absl::Duration took = absl::Now() - start;
  publisher.join();
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_EQ(waiter->get("2"), Bytes("two"));
}

TEST_F(CoordinatorStoreTest, WaitHonoursItsTimeout) {
  // The store's own timeout is long: the per-call timeout must win (gloo's
  // base Store::wait would ignore it and wait forever).
  auto store = coordinator_->NewStore(absl::Seconds(60));
  store->set("present", Bytes("x"));
  auto [status, took] = ExpectStoreError([&] {
    store->wait({"present", "missing"}, std::chrono::milliseconds(400));
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  EXPECT_NE(status.message().find(coordinator_->store_prefix() + "missing"),
            std::string::npos)
      << status;
  EXPECT_GE(took, absl::Milliseconds(350));
  EXPECT_LT(took, absl::Seconds(3));
}

TEST_F(CoordinatorStoreTest, GetAndWaitWithoutTimeoutUseTheStoreTimeout) {
  auto store = coordinator_->NewStore(absl::Milliseconds(300));
  for (int call = 0; call < 2; ++call) {
    auto [status, took] = ExpectStoreError([&] {
      if (call == 0) {
        store->get("never");
      } else {
        store->wait({"never"});
      }
    });
    EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
    EXPECT_GE(took, absl::Milliseconds(250));
    EXPECT_LT(took, absl::Seconds(3));
  }
}

TEST_F(CoordinatorStoreTest, PrefixOfNoJobIsInvalidArgument) {
  CoordinatorStore store(coordinator_->channel(), "no-such-job/generation/1/",
                         "", absl::Seconds(5));
  auto [status, took] = ExpectStoreError([&] { store.set("0", Bytes("x")); });
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
}

TEST_F(CoordinatorStoreTest, UnreachableCoordinatorIsUnavailableAfterTimeout) {
  // A port nothing listens on: the server is shut down first.
  const std::string address = coordinator_->address();
  coordinator_->server().Shutdown();
  CoordinatorStore store(services::MakeCoordinatorChannel(address),
                         coordinator_->store_prefix(), "",
                         absl::Milliseconds(500));
  auto [status, took] = ExpectStoreError([&] { store.set("0", Bytes("x")); });
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_NE(status.message().find("unreachable"), std::string::npos) << status;
  EXPECT_LT(took, absl::Seconds(3));
}

TEST(CoordinatorStoreAuthTest, SendsTheBearerToken) {
  auto coordinator = TestCoordinator::Start("s3cret");
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto good = (*coordinator)->NewStore(absl::Seconds(5), 1, "s3cret");
  good->set("k", Bytes("v"));
  EXPECT_EQ(good->get("k"), Bytes("v"));

  auto bad = (*coordinator)->NewStore(absl::Seconds(5), 1, "wrong");
  auto [status, took] = ExpectStoreError([&] { bad->get("k"); });
  EXPECT_TRUE(absl::IsUnauthenticated(status)) << status;
}

}  // namespace
}  // namespace podtrain::worker
