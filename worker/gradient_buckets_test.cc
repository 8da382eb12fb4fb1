// GradientBuckets: the DDP bucket layout, and real reductions over Gloo and
// over shared memory (ranks are threads, meeting through a real
// coordinator's store) compared
// with a reference computed without any communication: each rank's
// gradients must end up as the sum of every rank's single-process
// gradients. Also checks that buckets are reduced while backward is still
// running, and the edges: parameters without a gradient, the synchronous
// path, failures.

#include "worker/gradient_buckets.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "proto/job.pb.h"
#include "worker/collectives_test_util.h"
#include "worker/gloo_communicator.h"
#include "worker/model.h"
#include "worker/shm_communicator.h"

namespace podtrain::worker {
namespace {

using testing::ConnectGlooWorld;
using testing::RunRanks;
using testing::TestCoordinator;

torch::Tensor Param(std::vector<int64_t> shape,
                    torch::Dtype dtype = torch::kFloat32) {
  return torch::zeros(shape, dtype).requires_grad_(true);
}

TEST(AssignBucketsTest, FillsFromTheLastParameterWithinTheLimits) {
  // Registration order; sizes in bytes: 400, 1.2 MB, 4000, 800 KB, 40.
  std::vector<torch::Tensor> params = {Param({100}), Param({300000}),
                                       Param({1000}), Param({200000}),
                                       Param({10})};
  GradientBucketOptions options;
  options.first_bucket_bytes = 1 << 20;
  options.bucket_bytes = 1100 * 1000;
  // The first bucket takes p4, p3, p2 (804,040 bytes); p1 alone exceeds the
  // limit and gets its own bucket.
  EXPECT_EQ(AssignBuckets(params, options),
            (std::vector<std::vector<size_t>>{{4, 3, 2}, {1}, {0}}));
}

TEST(AssignBucketsTest, SeparatesDtypesAndSkipsFrozenParameters) {
  torch::Tensor frozen = torch::zeros({10});  // requires_grad false
  std::vector<torch::Tensor> params = {Param({4}), Param({4}, torch::kFloat64),
                                       frozen, Param({4})};
  EXPECT_EQ(AssignBuckets(params, GradientBucketOptions()),
            (std::vector<std::vector<size_t>>{{3, 0}, {1}}));
}

// The reference MLP 784-1024-1024-10 in registration order (fc1, fc2, fc3;
// weight, bias). The default layout gives fc2.weight (4 MB) a bucket of its
// own, so it is reduced while backward still computes fc1.weight; DDP's
// 25 MB cap would put them together, and nothing but the head could be
// reduced before backward ends.
TEST(AssignBucketsTest, DefaultLayoutReducesFc2WhileBackwardComputesFc1) {
  std::vector<torch::Tensor> params = {Param({1024, 784}),  Param({1024}),
                                       Param({1024, 1024}), Param({1024}),
                                       Param({10, 1024}),   Param({10})};
  EXPECT_EQ(AssignBuckets(params, GradientBucketOptions()),
            (std::vector<std::vector<size_t>>{{5, 4, 3}, {2}, {1, 0}}));
  GradientBucketOptions ddp;
  ddp.bucket_bytes = 25 << 20;
  EXPECT_EQ(AssignBuckets(params, ddp),
            (std::vector<std::vector<size_t>>{{5, 4, 3}, {2, 1, 0}}));
}

// Counts its calls and says when the first all-reduce started.
class RecordingCommunicator : public Communicator {
 public:
  explicit RecordingCommunicator(Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status AllReduceSum(torch::Tensor& tensor) override {
    ++all_reduces_;
    {
      absl::MutexLock lock(&mu_);
      threads_.push_back(std::this_thread::get_id());
    }
    if (!first_started_.HasBeenNotified()) first_started_.Notify();
    return inner_->AllReduceSum(tensor);
  }
  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    return inner_->Broadcast(tensor, root);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  void Abort() override { inner_->Abort(); }
  torch::Tensor NewReduceBuffer(int64_t numel,
                                const torch::TensorOptions& options) override {
    buffers_.push_back(inner_->NewReduceBuffer(numel, options));
    return buffers_.back();
  }
  // The threads that called AllReduceSum, in order.
  std::vector<std::thread::id> threads() const {
    absl::MutexLock lock(&mu_);
    return threads_;
  }
  // The buffers NewReduceBuffer handed out.
  const std::vector<torch::Tensor>& buffers() const { return buffers_; }

  absl::Notification& first_started() { return first_started_; }
  int all_reduces() const { return all_reduces_; }

 private:
  Communicator* const inner_;
  std::vector<torch::Tensor> buffers_;
  mutable absl::Mutex mu_;
  std::vector<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
  absl::Notification first_started_;
  std::atomic<int> all_reduces_{0};
};

class GradientBucketsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two ranks share two cores: one intra-op thread each.
    torch::set_num_threads(1);
    auto coordinator = TestCoordinator::Start();
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
  }

  std::vector<std::unique_ptr<Communicator>> World(int size) {
    auto world = ConnectGlooWorld(*coordinator_, size, absl::Seconds(30));
    EXPECT_TRUE(world.ok()) << world.status();
    return world.ok() ? *std::move(world)
                      : std::vector<std::unique_ptr<Communicator>>();
  }

  std::unique_ptr<TestCoordinator> coordinator_;
};

constexpr int kBatch = 8;
constexpr int kGlobalBatch = 2 * kBatch;

std::shared_ptr<Model> Mlp() {
  v1::ModelSpec spec;
  spec.set_name("mlp");
  spec.add_hidden(64);
  spec.add_hidden(32);
  spec.set_num_classes(10);
  auto model = BuildModel(spec, ImageShape{28, 28, 1}, /*seed=*/7);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

struct Batch {
  torch::Tensor images;
  torch::Tensor labels;
};

// A private generator: ranks are threads, and torch's global one is shared.
Batch MakeBatch(int rank, int step) {
  at::Generator generator =
      at::make_generator<at::CPUGeneratorImpl>(1000 * step + rank);
  torch::Tensor images = torch::empty({kBatch, 1, 28, 28});
  images.uniform_(0, 1, generator);
  torch::Tensor labels = torch::empty({kBatch}, torch::kInt64);
  labels.random_(0, 10, generator);
  return {images, labels};
}

// The loss the trainer differentiates: this rank's sum over the global batch.
torch::Tensor Loss(Model& model, const Batch& batch) {
  return SummedLoss(model.forward(batch.images), batch.labels,
                    v1::ModelSpec::SOFTMAX_CROSS_ENTROPY) /
         static_cast<double>(kGlobalBatch);
}

// Single-process gradients of `batch`, no communication.
std::vector<torch::Tensor> ReferenceGrads(const Batch& batch) {
  std::shared_ptr<Model> model = Mlp();
  model->zero_grad();
  Loss(*model, batch).backward();
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& param : model->parameters()) {
    grads.push_back(param.grad().clone());
  }
  return grads;
}

TEST_F(GradientBucketsTest, TwoRanksGetTheSumOfTheirGradients) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  constexpr int kSteps = 2;
  GradientBucketOptions options;
  // Small buckets, so this small MLP has several: bucket 0 = the head and
  // the second layer's bias, then the second layer's weight and the first
  // layer's bias, then the first layer's weight.
  options.first_bucket_bytes = 4 << 10;
  options.bucket_bytes = 64 << 10;

  std::vector<std::vector<std::vector<torch::Tensor>>> grads(
      2, std::vector<std::vector<torch::Tensor>>(kSteps));
  std::vector<absl::Status> results(2);
  std::vector<int> overlapped(2), reduces(2), buckets(2);
  std::vector<int64_t> bytes(2);
  std::vector<bool> reduce_started_in_backward(2);
  RunRanks(2, [&](int rank) {
    std::shared_ptr<Model> model = Mlp();
    RecordingCommunicator communicator(world[rank].get());
    // The first layer's weight gets its gradient last. Its hook (registered
    // before the buckets' own) holds backward there until the first bucket's
    // all-reduce has started: that only happens if buckets are reduced
    // during backward. Bounded, so a broken overlap fails instead of hangs.
    torch::Tensor first_weight = model->parameters()[0];
    const unsigned hook = first_weight.register_hook([&](torch::Tensor) {
      reduce_started_in_backward[rank] =
          communicator.first_started().WaitForNotificationWithTimeout(
              absl::Seconds(5));
    });
    {
      GradientBuckets reducer(model->parameters(), &communicator, options);
      buckets[rank] = reducer.num_buckets();
      for (int step = 0; step < kSteps; ++step) {
        model->zero_grad();
        Loss(*model, MakeBatch(rank, step)).backward();
        results[rank] = reducer.FinishReduction();
        if (!results[rank].ok()) return;
        for (const torch::Tensor& param : model->parameters()) {
          grads[rank][step].push_back(param.grad().clone());
        }
      }
      overlapped[rank] = reducer.last_buckets_launched_before_last_grad();
      bytes[rank] = reducer.last_reduce_bytes();
      EXPECT_GT(reducer.last_reduce_seconds(), 0.0);
      EXPECT_GE(reducer.last_wait_seconds(), 0.0);
    }
    first_weight.remove_hook(hook);
    reduces[rank] = communicator.all_reduces();
  });

  int64_t param_bytes = 0;
  for (const torch::Tensor& param : Mlp()->parameters()) {
    param_bytes += param.numel() * 4;
  }
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_EQ(buckets[rank], 3);
    EXPECT_EQ(reduces[rank], 3 * kSteps);  // one all-reduce per bucket
    EXPECT_EQ(bytes[rank], param_bytes);
    EXPECT_TRUE(reduce_started_in_backward[rank])
        << "rank " << rank
        << ": no bucket was all-reduced while backward was running";
    // Buckets 0 and 1 are complete before the first layer's weight arrives.
    EXPECT_GE(overlapped[rank], 2) << "rank " << rank;
  }
  for (int step = 0; step < kSteps; ++step) {
    const auto zero = ReferenceGrads(MakeBatch(0, step));
    const auto one = ReferenceGrads(MakeBatch(1, step));
    for (size_t p = 0; p < zero.size(); ++p) {
      const torch::Tensor expected = zero[p] + one[p];
      for (int rank = 0; rank < 2; ++rank) {
        EXPECT_TRUE(torch::allclose(grads[rank][step][p], expected,
                                    /*rtol=*/1e-5, /*atol=*/1e-7))
            << "step " << step << ", rank " << rank << ", parameter " << p;
      }
    }
  }
}

TEST_F(GradientBucketsTest, ParameterWithoutAGradientOnOneRankStillSums) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<std::vector<torch::Tensor>> grads(2);
  std::vector<absl::Status> results(2);
  RunRanks(2, [&](int rank) {
    torch::Tensor a = Param({3});
    torch::Tensor b = Param({2});
    GradientBucketOptions options;
    options.first_bucket_bytes = 8;  // b and a in buckets of their own
    GradientBuckets reducer({a, b}, world[rank].get(), options);
    EXPECT_EQ(reducer.num_buckets(), 2);
    // Rank 1 never uses b: its bucket is launched by FinishReduction, with
    // zeros, while rank 0 launched it from its hook.
    torch::Tensor loss =
        rank == 0 ? (a * 1.0f).sum() + (b * 2.0f).sum() : (a * 3.0f).sum();
    loss.backward();
    results[rank] = reducer.FinishReduction();
    grads[rank] = {a.grad(), b.grad()};
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(grads[rank][0], torch::full({3}, 4.0f)));
    ASSERT_TRUE(grads[rank][1].defined()) << "rank " << rank;
    EXPECT_TRUE(torch::equal(grads[rank][1], torch::full({2}, 2.0f)));
  }
}

TEST_F(GradientBucketsTest, ReduceNowSumsGradientsSetByHand) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<torch::Tensor> grads(2);
  std::vector<absl::Status> results(2);
  RunRanks(2, [&](int rank) {
    torch::Tensor w = Param({2, 2});
    torch::Tensor unset = Param({3});  // no .grad() at all: zeros
    GradientBuckets reducer({w, unset}, world[rank].get());
    w.mutable_grad() = torch::full({2, 2}, rank + 1.0f);
    results[rank] = reducer.ReduceNow();
    grads[rank] = w.grad();
    EXPECT_TRUE(torch::equal(unset.grad(), torch::zeros({3})));
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(torch::equal(grads[rank], torch::full({2, 2}, 3.0f)));
  }
}

TEST_F(GradientBucketsTest, CommunicatorFailureIsReportedPromptlyAndFinal) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> first(2), second(2);
  std::vector<absl::Duration> took(2);
  world[1]->Abort();  // rank 1's generation ended under it
  RunRanks(2, [&](int rank) {
    torch::Tensor w = Param({1000});
    GradientBuckets reducer({w}, world[rank].get());
    const absl::Time start = absl::Now();
    (w * static_cast<float>(rank + 1)).sum().backward();
    first[rank] = reducer.FinishReduction();
    took[rank] = absl::Now() - start;
    (w * 2.0f).sum().backward();
    second[rank] = reducer.FinishReduction();
  });
  EXPECT_TRUE(absl::IsAborted(first[1])) << first[1];
  // Rank 0's peer dropped its connections when it aborted.
  EXPECT_TRUE(absl::IsUnavailable(first[0])) << first[0];
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_NE(first[rank].message().find("gradient bucket 0 of 1"),
              std::string::npos)
        << first[rank];
    EXPECT_LT(took[rank], absl::Seconds(2)) << "rank " << rank;
    EXPECT_EQ(second[rank], first[rank]) << "rank " << rank;
  }
}

TEST_F(GradientBucketsTest, SecondBackwardBeforeReducingIsAnError) {
  auto world = World(1);
  ASSERT_EQ(world.size(), 1u);
  torch::Tensor w = Param({4});
  GradientBuckets reducer({w}, world[0].get());
  w.sum().backward();
  w.sum().backward();
  const absl::Status status = reducer.FinishReduction();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
}

TEST_F(GradientBucketsTest, ReduceNowAfterHooksFiredIsAnError) {
  auto world = World(1);
  ASSERT_EQ(world.size(), 1u);
  torch::Tensor w = Param({4});
  GradientBuckets reducer({w}, world[0].get());
  (w * 5.0f).sum().backward();
  EXPECT_TRUE(absl::IsFailedPrecondition(reducer.ReduceNow()));
  ASSERT_TRUE(reducer.FinishReduction().ok());
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({4}, 5.0f)));
}

TEST_F(GradientBucketsTest, AccumulatesOntoAnExistingGradient) {
  auto world = World(1);
  ASSERT_EQ(world.size(), 1u);
  torch::Tensor w = Param({4});
  GradientBuckets reducer({w}, world[0].get());
  w.mutable_grad() = torch::full({4}, 1.0f);  // an earlier micro-batch
  (w * 2.0f).sum().backward();
  ASSERT_TRUE(reducer.FinishReduction().ok());
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({4}, 3.0f)));
}

TEST_F(GradientBucketsTest, GradientsAreViewsOfTheBucketsAcrossSteps) {
  auto world = World(1);
  ASSERT_EQ(world.size(), 1u);
  torch::Tensor a = Param({4});
  torch::Tensor b = Param({3});
  GradientBuckets reducer({a, b}, world[0].get());
  ASSERT_EQ(reducer.num_buckets(), 1);
  // One flat buffer, filled from the last parameter: b, then a.
  ASSERT_TRUE(a.grad().defined());
  ASSERT_TRUE(b.grad().defined());
  float* const a_data = a.grad().data_ptr<float>();
  EXPECT_EQ(a_data, b.grad().data_ptr<float>() + b.numel());
  for (int step = 1; step <= 2; ++step) {
    {
      torch::NoGradGuard no_grad;
      a.mutable_grad().zero_();
      b.mutable_grad().zero_();
    }
    ((a * static_cast<float>(step)).sum() + (b * 3.0f).sum()).backward();
    ASSERT_TRUE(reducer.FinishReduction().ok());
    // Autograd added into the views: no new tensor, no copy.
    EXPECT_EQ(a.grad().data_ptr<float>(), a_data);
    EXPECT_TRUE(torch::equal(a.grad(), torch::full({4}, 1.0f * step)));
    EXPECT_TRUE(torch::equal(b.grad(), torch::full({3}, 3.0f)));
  }
}

TEST_F(GradientBucketsTest, GradientsSetToNoneBetweenStepsStillSum) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  std::vector<absl::Status> results(2);
  std::vector<torch::Tensor> grads(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      torch::Tensor w = Param({5});
      GradientBuckets reducer({w}, world[rank].get());
      for (int step = 1; step <= 2 && results[rank].ok(); ++step) {
        w.mutable_grad() = torch::Tensor();  // zero_grad(set_to_none=true)
        (w * static_cast<float>(rank + step)).sum().backward();
        results[rank] = reducer.FinishReduction();
      }
      grads[rank] = w.grad().clone();
    });
  }
  for (std::thread& rank : ranks) rank.join();
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    // Step 2: rank 0 contributes 2, rank 1 contributes 3.
    EXPECT_TRUE(torch::equal(grads[rank], torch::full({5}, 5.0f)));
  }
}

// Whether [data, data + bytes) lies in a mapping of a podtrain shared-memory
// segment (/proc/self/maps names the file, "(deleted)" once unlinked).
bool InSharedSegment(const torch::Tensor& tensor) {
  const auto begin = reinterpret_cast<uintptr_t>(tensor.data_ptr());
  const uintptr_t end = begin + tensor.numel() * tensor.element_size();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("/dev/shm/podtrain-") == std::string::npos) continue;
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && begin >= lo &&
        end <= hi) {
      return true;
    }
  }
  return false;
}

TEST_F(GradientBucketsTest, SharedMemoryBucketsAreReducedWhereTheyLie) {
  // As the agent forms its world: Gloo, then shared memory with room for
  // exactly ReduceBufferBytes of this model, gradients set to none between
  // steps.
  auto gloo = World(2);
  ASSERT_EQ(gloo.size(), 2u);
  const int64_t room = ReduceBufferBytes(Mlp()->parameters());
  constexpr int kSteps = 2;
  std::vector<std::vector<std::vector<torch::Tensor>>> grads(
      2, std::vector<std::vector<torch::Tensor>>(kSteps));
  std::vector<absl::Status> results(2);
  std::vector<bool> in_segment(2, false);
  RunRanks(2, [&](int rank) {
    CommunicatorOptions options;
    options.rank = rank;
    options.world_size = 2;
    options.store_prefix = coordinator_->store_prefix();
    SharedMemoryOptions shared;
    shared.buffer_bytes = room;
    auto shm = ConnectSharedMemory(options, shared,
                                   coordinator_->NewStore(absl::Seconds(30)),
                                   std::move(gloo[rank]));
    if (!shm.ok() || !UsesSharedMemory(**shm)) {
      results[rank] =
          shm.ok() ? absl::InternalError("no shared memory") : shm.status();
      return;
    }
    RecordingCommunicator communicator(shm->get());
    std::shared_ptr<Model> model = Mlp();
    GradientBucketOptions small;  // several buckets, as in the test above
    small.first_bucket_bytes = 4 << 10;
    small.bucket_bytes = 64 << 10;
    GradientBuckets reducer(model->parameters(), &communicator, small);
    in_segment[rank] = communicator.buffers().size() == 3;
    for (const torch::Tensor& buffer : communicator.buffers()) {
      in_segment[rank] = in_segment[rank] && InSharedSegment(buffer);
    }
    for (int step = 0; step < kSteps && results[rank].ok(); ++step) {
      model->zero_grad(/*set_to_none=*/true);
      Loss(*model, MakeBatch(rank, step)).backward();
      results[rank] = reducer.FinishReduction();
      for (const torch::Tensor& param : model->parameters()) {
        in_segment[rank] = in_segment[rank] && InSharedSegment(param.grad());
        grads[rank][step].push_back(param.grad().clone());
      }
    }
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_TRUE(in_segment[rank])
        << "rank " << rank
        << ": bucket buffers or gradients outside the shared segment";
  }
  for (int step = 0; step < kSteps; ++step) {
    const auto zero = ReferenceGrads(MakeBatch(0, step));
    const auto one = ReferenceGrads(MakeBatch(1, step));
    for (size_t p = 0; p < zero.size(); ++p) {
      EXPECT_TRUE(torch::equal(grads[0][step][p], grads[1][step][p]));
      EXPECT_TRUE(torch::allclose(grads[0][step][p], zero[p] + one[p],
                                  /*rtol=*/1e-5, /*atol=*/1e-7))
          << "step " << step << ", parameter " << p;
    }
  }
}

TEST_F(GradientBucketsTest, WithoutOverlapEveryBucketIsReducedAfterBackward) {
  auto world = World(2);
  ASSERT_EQ(world.size(), 2u);
  GradientBucketOptions options;
  options.first_bucket_bytes = 4 << 10;  // three buckets, as above
  options.bucket_bytes = 64 << 10;
  options.overlap = false;
  constexpr int kSteps = 2;
  std::vector<std::vector<std::vector<torch::Tensor>>> grads(
      2, std::vector<std::vector<torch::Tensor>>(kSteps));
  std::vector<absl::Status> results(2);
  std::vector<bool> reduced_during_backward(2, false), on_caller(2, false);
  std::vector<int> overlapped(2, -1), reduces(2);
  std::vector<double> reduce_seconds(2), wait_seconds(2);
  RunRanks(2, [&](int rank) {
    std::shared_ptr<Model> model = Mlp();
    RecordingCommunicator communicator(world[rank].get());
    GradientBuckets reducer(model->parameters(), &communicator, options);
    for (int step = 0; step < kSteps && results[rank].ok(); ++step) {
      model->zero_grad(/*set_to_none=*/true);
      Loss(*model, MakeBatch(rank, step)).backward();
      // Only the previous steps' all-reduces so far.
      reduced_during_backward[rank] = reduced_during_backward[rank] ||
                                      communicator.all_reduces() != 3 * step;
      results[rank] = reducer.FinishReduction();
      for (const torch::Tensor& param : model->parameters()) {
        grads[rank][step].push_back(param.grad().clone());
      }
    }
    const std::vector<std::thread::id> threads = communicator.threads();
    on_caller[rank] = !threads.empty();
    for (const std::thread::id id : threads) {
      on_caller[rank] = on_caller[rank] && id == std::this_thread::get_id();
    }
    overlapped[rank] = reducer.last_buckets_launched_before_last_grad();
    reduce_seconds[rank] = reducer.last_reduce_seconds();
    wait_seconds[rank] = reducer.last_wait_seconds();
    reduces[rank] = communicator.all_reduces();
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank];
    EXPECT_FALSE(reduced_during_backward[rank]) << "rank " << rank;
    EXPECT_TRUE(on_caller[rank])
        << "rank " << rank << ": an all-reduce ran off the calling thread";
    EXPECT_EQ(reduces[rank], 3 * kSteps);
    EXPECT_EQ(overlapped[rank], 0);
    // All of the reduction is the wait.
    EXPECT_GE(wait_seconds[rank], reduce_seconds[rank]);
  }
  for (int step = 0; step < kSteps; ++step) {
    const auto zero = ReferenceGrads(MakeBatch(0, step));
    const auto one = ReferenceGrads(MakeBatch(1, step));
    for (size_t p = 0; p < zero.size(); ++p) {
      for (int rank = 0; rank < 2; ++rank) {
        EXPECT_TRUE(torch::allclose(grads[rank][step][p], zero[p] + one[p],
                                    /*rtol=*/1e-5, /*atol=*/1e-7))
            << "step " << step << ", rank " << rank << ", parameter " << p;
      }
    }
  }
}

TEST_F(GradientBucketsTest, DestructionRemovesTheHooks) {
  auto world = World(1);
  ASSERT_EQ(world.size(), 1u);
  torch::Tensor w = Param({4});
  auto reducer = std::make_unique<GradientBuckets>(
      std::vector<torch::Tensor>{w}, world[0].get());
  reducer.reset();
  // A hook left behind would touch the destroyed object here.
  (w * 2.0f).sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({4}, 2.0f)));
}

}  // namespace
}  // namespace podtrain::worker
