// bench_allreduce: podtrain's gradient all-reduce against bare Gloo, for the
// reference MLP (784-1024-1024-10: 1,863,690 float32 gradients, 7.45 MB),
// two ranks as two threads of this process on one host.
//
// Part 1, all-reduce alone (medians over --iterations, variants interleaved
// in --rounds so that machine noise hits them alike):
//   podtrain buckets   GradientBuckets::ReduceNow over the model's .grad()
//                      (views of the bucket buffers, so nothing is packed
//                      or unpacked): all-reduce each bucket through the
//                      communicator a worker uses (shared memory over Gloo,
//                      worker/shm_communicator.h, since both ranks share
//                      this host). What a step pays for the reduction when
//                      nothing overlaps.
//   podtrain comm      Communicator::AllReduceSum on the same bucket buffers
//                      (no packing), and on one flat buffer; all of them
//                      from Communicator::NewReduceBuffer, as the buckets'
//                      own, so shared memory reduces them without copies.
//                      And one flat buffer of ordinary memory, which goes
//                      through the segment's slots (copy in, sum, copy
//                      out): what every tensor took before.
//   podtrain gloo      the same through the Gloo communicator alone (op
//                      thread, tags, timeouts; TCP on 127.0.0.1), i.e.
//                      podtrain-worker --shared_memory_allreduce=false.
//   bare gloo          gloo::allreduce (AllreduceOptions, sum) on the same
//                      bucket buffers, and on one flat buffer; its own TCP
//                      device and a gloo::rendezvous::HashStore.
// The podtrain communicators rendezvous through a real coordinator's store
// (an in-process coordinator, as in worker/collectives_test_util).
//
// Part 2, overlap in a real training step (per rank: half of the global
// batch of 256, forward, backward with the bucket hooks, FinishReduction,
// SGD step), for the default buckets, PyTorch DDP's layout, and no overlap
// (GradientBucketOptions.overlap = false, what the agent runs through shared
// memory: backward, then the same bucket all-reduces), a step of each in
// turn:
//   hidden share = (no-overlap step - overlapped step) / all-reduce alone,
// next to GradientBuckets' own figures (time inside all-reduces, time
// FinishReduction waited, buckets launched before the last gradient).
//
// Prints a markdown report on stdout and, last, a line
//   RESULT podtrain_ms=... bare_ms=... ratio=...
// for bench_allreduce.sh.

#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/common/local_coordinator.h"
#include "common/status_macros.h"
#include "worker/collectives.h"
#include "worker/coordinator_store.h"
#include "worker/gloo_communicator.h"
#include "worker/gradient_buckets.h"
#include "worker/model.h"
#include "worker/optimizer.h"
#include "worker/shm_communicator.h"

ABSL_FLAG(std::string, dir, "/tmp/podtrain-bench-allreduce",
          "scratch directory for the coordinator's journal");
ABSL_FLAG(int, rounds, 5, "rounds; each runs every variant");
ABSL_FLAG(int, iterations, 30, "timed all-reduces per variant and round");
ABSL_FLAG(int, train_steps, 25, "timed training steps per variant");
ABSL_FLAG(double, mpi_tcp_ms, -1,
          "median MPI_Allreduce time over TCP (from mpi_allreduce), if run");
ABSL_FLAG(double, mpi_shm_ms, -1,
          "median MPI_Allreduce time over shared memory, if run");

namespace podtrain::bench {
namespace {

constexpr int kWorld = 2;
using worker::Communicator;
using worker::GradientBucketOptions;
using worker::GradientBuckets;

// A reusable barrier for the rank threads.
class Barrier {
 public:
  explicit Barrier(int parties) : parties_(parties) {}
  void Wait() {
    absl::MutexLock lock(&mu_);
    const int64_t generation = generation_;
    if (++arrived_ == parties_) {
      arrived_ = 0;
      ++generation_;
      return;
    }
    const auto released = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return generation_ != generation;
    };
    mu_.Await(absl::Condition(&released));
  }

 private:
  const int parties_;
  absl::Mutex mu_;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1,
                         static_cast<size_t>(p * values.size()))];
}

double Sum(const std::vector<double>& values) {
  return std::accumulate(values.begin(), values.end(), 0.0);
}

// Bare gloo: a full mesh of its own and in-place sum all-reduces.
class BareGloo {
 public:
  BareGloo(int rank, gloo::rendezvous::Store& store) {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto device = gloo::transport::tcp::CreateDevice(attr);
    context_ = std::make_shared<gloo::rendezvous::Context>(rank, kWorld);
    context_->connectFullMesh(store, device);
  }

  void AllReduce(float* data, size_t count) {
    gloo::AllreduceOptions options(context_);
    options.setOutput(data, count);
    options.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(
            &gloo::sum<float>));
    options.setTag(tag_++);
    gloo::allreduce(options);
  }

 private:
  std::shared_ptr<gloo::rendezvous::Context> context_;
  uint32_t tag_ = 0;
};

// What one rank holds.
struct Rank {
  int rank = 0;
  std::shared_ptr<worker::Model> model;
  std::vector<torch::Tensor> params;
  std::unique_ptr<Communicator> comm;       // shared memory over Gloo
  std::unique_ptr<Communicator> gloo_comm;  // Gloo alone
  std::unique_ptr<BareGloo> bare;
  // Buffers shaped like GradientBuckets' buckets, and one flat buffer
  // (NewReduceBuffer's), and one flat buffer of ordinary memory.
  std::vector<torch::Tensor> bucket_buffers;
  torch::Tensor flat;
  torch::Tensor flat_plain;
};

// Per-iteration times (ms) of rank 0, by variant.
struct Timings {
  std::vector<double> podtrain_buckets, podtrain_comm_buckets,
      podtrain_comm_flat, podtrain_comm_flat_plain, podtrain_gloo_buckets,
      podtrain_gloo_flat, bare_buckets, bare_flat;
};

struct StepFigures {
  std::vector<double> step_ms, reduce_ms, wait_ms;
  std::vector<int> overlapped;
};

absl::Status Run() {
  torch::set_num_threads(1);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int iterations = absl::GetFlag(FLAGS_iterations);
  const int train_steps = absl::GetFlag(FLAGS_train_steps);

  v1::JobSpec spec = ReferenceMlpSpec();
  spec.set_min_workers(kWorld);
  spec.set_max_workers(kWorld);
  spec.mutable_checkpoint()->set_directory(absl::GetFlag(FLAGS_dir) + "/ckpt");
  ASSIGN_OR_RETURN(
      std::unique_ptr<LocalCoordinator> coordinator,
      LocalCoordinator::Start(absl::GetFlag(FLAGS_dir), spec, 60000));
  const std::string prefix = coordinator->job() + "/generation/1/";
  const std::string prefix2 = coordinator->job() + "/generation/2/";
  auto hash_store = std::make_shared<gloo::rendezvous::HashStore>();

  std::vector<Rank> ranks(kWorld);
  std::vector<absl::Status> statuses(kWorld);
  Barrier barrier(kWorld);
  Timings timings;
  StepFigures overlap, sequential, ddp_buckets;
  int64_t gradient_floats = 0;
  std::vector<std::vector<size_t>> layout, ddp_layout;
  std::vector<int64_t> bucket_bytes;
  // PyTorch DDP's layout: 1 MB first bucket, bucket_cap_mb = 25.
  GradientBucketOptions ddp_options;
  ddp_options.bucket_bytes = 25 << 20;

  const auto body = [&](int r) -> absl::Status {
    Rank& me = ranks[r];
    me.rank = r;
    ASSIGN_OR_RETURN(me.model,
                     worker::BuildModel(spec.model(), {28, 28, 1}, 42));
    me.params = me.model->parameters();
    worker::CommunicatorOptions options;
    options.rank = r;
    options.world_size = kWorld;
    options.store_prefix = prefix;
    options.timeout = absl::Seconds(60);
    auto store = std::make_shared<worker::CoordinatorStore>(
        coordinator->channel(), prefix, "", absl::Seconds(60));
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> transport,
                     worker::ConnectGloo(options, store));
    // Room for every NewReduceBuffer below: the correctness check's
    // buckets, part 1's buckets, its bucket buffers and flat buffer, and
    // part 2's DDP-layout and no-overlap buckets.
    worker::SharedMemoryOptions shared;
    shared.buffer_bytes =
        6 * worker::ReduceBufferBytes(me.params) + worker::kReduceBufferAlign;
    ASSIGN_OR_RETURN(me.comm,
                     worker::ConnectSharedMemory(options, shared, store,
                                                 std::move(transport)));
    if (!worker::UsesSharedMemory(*me.comm)) {
      return absl::FailedPreconditionError(
          "the shared-memory all-reduce did not form (see the log)");
    }
    // The Gloo-only world: the next generation's keys, so the two worlds'
    // rendezvous do not meet.
    options.store_prefix = prefix2;
    ASSIGN_OR_RETURN(
        me.gloo_comm,
        worker::ConnectGloo(options, std::make_shared<worker::CoordinatorStore>(
                                         coordinator->channel(), prefix2, "",
                                         absl::Seconds(60))));
    me.bare = std::make_unique<BareGloo>(r, *hash_store);
    const auto bucket_layout = worker::AssignBuckets(me.params, {});
    int64_t total = 0;
    for (const auto& bucket : bucket_layout) {
      int64_t elements = 0;
      for (size_t p : bucket) elements += me.params[p].numel();
      me.bucket_buffers.push_back(
          me.comm->NewReduceBuffer(elements, torch::kFloat32));
      total += elements;
    }
    me.flat = me.comm->NewReduceBuffer(total, torch::kFloat32);
    me.flat_plain = torch::zeros({total});
    if (r == 0) {
      layout = bucket_layout;
      ddp_layout = worker::AssignBuckets(me.params, ddp_options);
      gradient_floats = total;
      for (const auto& b : me.bucket_buffers) {
        bucket_bytes.push_back(b.numel() * 4);
      }
    }

    // --- correctness: every variant sums (rank + 1) to 3 -------------------
    {
      torch::NoGradGuard no_grad;
      for (torch::Tensor& p : me.params) {
        p.mutable_grad() = torch::full_like(p, r + 1.0f);
      }
    }
    {
      GradientBuckets buckets(me.params, me.comm.get());
      RETURN_IF_ERROR(buckets.ReduceNow());
      for (const torch::Tensor& p : me.params) {
        if (!p.grad().eq(3.0f).all().item<bool>()) {
          return absl::InternalError("podtrain all-reduce: wrong sum");
        }
      }
    }
    me.flat.fill_(r + 1.0f);
    me.bare->AllReduce(me.flat.data_ptr<float>(), me.flat.numel());
    if (!me.flat.eq(3.0f).all().item<bool>()) {
      return absl::InternalError("bare gloo all-reduce: wrong sum");
    }
    // Zeros from here on: sums of zeros stay finite however often reduced.
    {
      torch::NoGradGuard no_grad;
      for (torch::Tensor& p : me.params) p.mutable_grad().zero_();
    }
    me.flat.zero_();

    // --- part 1: all-reduce alone ------------------------------------------
    GradientBuckets buckets(me.params, me.comm.get());
    const auto time_variant = [&](std::vector<double>* out,
                                  const std::function<absl::Status()>& op) {
      barrier.Wait();
      for (int i = 0; i < iterations; ++i) {
        const absl::Time start = absl::Now();
        RETURN_IF_ERROR(op());
        if (r == 0) {
          out->push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
        }
      }
      return absl::OkStatus();
    };
    const auto bare = [&](std::vector<torch::Tensor>& buffers) {
      return [&me, list = &buffers]() {
        for (torch::Tensor& b : *list) {
          me.bare->AllReduce(b.data_ptr<float>(), b.numel());
        }
        return absl::OkStatus();
      };
    };
    const auto through = [&](Communicator* comm,
                             std::vector<torch::Tensor>& buffers) {
      return [comm, list = &buffers]() -> absl::Status {
        for (torch::Tensor& b : *list) {
          RETURN_IF_ERROR(comm->AllReduceSum(b));
        }
        return absl::OkStatus();
      };
    };
    const auto podtrain_comm = [&](std::vector<torch::Tensor>& buffers) {
      return through(me.comm.get(), buffers);
    };
    const auto podtrain_gloo = [&](std::vector<torch::Tensor>& buffers) {
      return through(me.gloo_comm.get(), buffers);
    };
    std::vector<torch::Tensor> flat_only = {me.flat};
    std::vector<torch::Tensor> flat_plain_only = {me.flat_plain};
    for (int round = 0; round < rounds; ++round) {
      // Warm-up of each path, untimed (first round only).
      if (round == 0) {
        RETURN_IF_ERROR(buckets.ReduceNow());
        RETURN_IF_ERROR(bare(me.bucket_buffers)());
        RETURN_IF_ERROR(podtrain_comm(me.bucket_buffers)());
        RETURN_IF_ERROR(podtrain_gloo(me.bucket_buffers)());
      }
      RETURN_IF_ERROR(time_variant(&timings.podtrain_buckets,
                                   [&] { return buckets.ReduceNow(); }));
      RETURN_IF_ERROR(
          time_variant(&timings.bare_buckets, bare(me.bucket_buffers)));
      RETURN_IF_ERROR(time_variant(&timings.podtrain_comm_buckets,
                                   podtrain_comm(me.bucket_buffers)));
      RETURN_IF_ERROR(time_variant(&timings.bare_flat, bare(flat_only)));
      RETURN_IF_ERROR(
          time_variant(&timings.podtrain_comm_flat, podtrain_comm(flat_only)));
      RETURN_IF_ERROR(time_variant(&timings.podtrain_comm_flat_plain,
                                   podtrain_comm(flat_plain_only)));
      RETURN_IF_ERROR(time_variant(&timings.podtrain_gloo_buckets,
                                   podtrain_gloo(me.bucket_buffers)));
      RETURN_IF_ERROR(
          time_variant(&timings.podtrain_gloo_flat, podtrain_gloo(flat_only)));
    }

    // --- part 2: a real training step, with and without overlap -----------
    // Three copies of the model (same seed) train side by side, a step of
    // each in turn, so machine noise hits them alike: default buckets,
    // DDP's layout, and no overlap (backward, then the same bucket
    // all-reduces). One communicator, used by this thread only.
    struct Trainee {
      std::shared_ptr<worker::Model> model;
      std::vector<torch::Tensor> params;
      std::unique_ptr<worker::Optimizer> optimizer;
      GradientBuckets* buckets = nullptr;
      StepFigures* figures = nullptr;
    };
    ASSIGN_OR_RETURN(std::shared_ptr<worker::Model> ddp_model,
                     worker::BuildModel(spec.model(), {28, 28, 1}, 42));
    ASSIGN_OR_RETURN(std::shared_ptr<worker::Model> plain_model,
                     worker::BuildModel(spec.model(), {28, 28, 1}, 42));
    GradientBuckets ddp(ddp_model->parameters(), me.comm.get(), ddp_options);
    // What the agent runs through shared memory: the same buckets, reduced
    // in FinishReduction after backward on this thread.
    GradientBucketOptions no_overlap;
    no_overlap.overlap = false;
    GradientBuckets plain(plain_model->parameters(), me.comm.get(), no_overlap);
    Trainee trainees[3];
    trainees[0] = {me.model, me.params, nullptr, &buckets, &overlap};
    trainees[1] = {ddp_model, ddp_model->parameters(), nullptr, &ddp,
                   &ddp_buckets};
    trainees[2] = {plain_model, plain_model->parameters(), nullptr, &plain,
                   &sequential};
    for (Trainee& t : trainees) {
      ASSIGN_OR_RETURN(t.optimizer, worker::MakeOptimizer(
                                        spec.optimizer(),
                                        worker::GroupParameters(*t.model)));
    }
    const int64_t local_batch = spec.global_batch() / kWorld;
    torch::manual_seed(100 + r);
    const torch::Tensor images = torch::rand({local_batch, 1, 28, 28});
    const torch::Tensor labels =
        torch::randint(0, 10, {local_batch}, torch::kInt64);
    for (int i = -3; i < train_steps; ++i) {  // 3 untimed warm-up steps
      for (Trainee& t : trainees) {
        barrier.Wait();
        const absl::Time start = absl::Now();
        t.model->zero_grad();
        const torch::Tensor loss = worker::SummedLoss(
            t.model->forward(images), labels, spec.model().loss());
        (loss / static_cast<double>(spec.global_batch())).backward();
        RETURN_IF_ERROR(t.buckets->FinishReduction());
        t.optimizer->Step(0.05);
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        if (r == 0 && i >= 0) {
          t.figures->step_ms.push_back(ms);
          t.figures->reduce_ms.push_back(1e3 *
                                         t.buckets->last_reduce_seconds());
          t.figures->wait_ms.push_back(1e3 * t.buckets->last_wait_seconds());
          t.figures->overlapped.push_back(
              t.buckets->last_buckets_launched_before_last_grad());
        }
      }
    }
    return absl::OkStatus();
  };

  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] { statuses[r] = body(r); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& status : statuses) RETURN_IF_ERROR(status);

  // --- report ----------------------------------------------------------------
  const double podtrain_ms = Median(timings.podtrain_buckets);
  const double bare_ms = Median(timings.bare_buckets);
  const double bytes = static_cast<double>(gradient_floats) * 4;
  std::printf("## Setup\n\n");
  std::printf(
      "- Gradient of the reference MLP: %lld float32 (%.2f MB) in %zu "
      "buckets of GradientBuckets' default layout (",
      static_cast<long long>(gradient_floats), bytes / 1e6, layout.size());
  for (size_t b = 0; b < bucket_bytes.size(); ++b) {
    std::printf("%s%.1f KB", b == 0 ? "" : ", ", bucket_bytes[b] / 1e3);
  }
  std::printf(").\n");
  std::printf(
      "- 2 ranks = 2 threads of one process, each with its own Gloo TCP "
      "device on 127.0.0.1 and (podtrain) its own mapping of the "
      "shared-memory segment, as separate processes have; podtrain "
      "rendezvous through a real coordinator's store, bare Gloo through a "
      "HashStore.\n"
      "- podtrain's all-reduce between ranks of one host goes through "
      "shared memory (worker/shm_communicator.h; "
      "podtrain-worker --shared_memory_allreduce, default on); Gloo has no "
      "shared-memory transport, so bare Gloo, like PyTorch DDP's gloo "
      "backend, goes through loopback TCP. The rows marked Gloo TCP are "
      "podtrain with the flag off.\n");
  std::printf(
      "- %d rounds x %d iterations per variant, variants interleaved; "
      "medians of rank 0's per-call times.\n\n",
      rounds, iterations);
  std::printf(
      "## All-reduce alone\n\n| variant | median ms | p90 ms | GB/s (algo) "
      "|\n| --- | --- | --- | --- |\n");
  const auto row = [&](const char* name, const std::vector<double>& ms) {
    const double median = Median(ms);
    std::printf("| %s | %.2f | %.2f | %.2f |\n", name, median,
                Percentile(ms, 0.9), bytes / (median * 1e-3) / 1e9);
  };
  row("**podtrain: GradientBuckets::ReduceNow** (all-reduce the buckets "
      ".grad() views; shared memory)",
      timings.podtrain_buckets);
  row("podtrain: Communicator::AllReduceSum on the bucket buffers (shared "
      "memory)",
      timings.podtrain_comm_buckets);
  row("podtrain: Communicator::AllReduceSum on one flat buffer (shared "
      "memory)",
      timings.podtrain_comm_flat);
  row("podtrain: Communicator::AllReduceSum on one flat buffer of ordinary "
      "memory (shared memory's slots: copy in, sum, copy out)",
      timings.podtrain_comm_flat_plain);
  row("podtrain, Gloo TCP: Communicator::AllReduceSum on the bucket buffers",
      timings.podtrain_gloo_buckets);
  row("podtrain, Gloo TCP: Communicator::AllReduceSum on one flat buffer",
      timings.podtrain_gloo_flat);
  row("**bare gloo::allreduce on the bucket buffers** (peer)",
      timings.bare_buckets);
  row("bare gloo::allreduce on one flat buffer", timings.bare_flat);
  const double mpi_tcp = absl::GetFlag(FLAGS_mpi_tcp_ms);
  const double mpi_shm = absl::GetFlag(FLAGS_mpi_shm_ms);
  if (mpi_tcp > 0) {
    std::printf(
        "| OpenMPI MPI_Allreduce, one flat buffer, 2 processes, TCP "
        "loopback | %.2f | | %.2f |\n",
        mpi_tcp, bytes / (mpi_tcp * 1e-3) / 1e9);
  }
  if (mpi_shm > 0) {
    std::printf(
        "| OpenMPI MPI_Allreduce, one flat buffer, 2 processes, shared "
        "memory | %.2f | | %.2f |\n",
        mpi_shm, bytes / (mpi_shm * 1e-3) / 1e9);
  }
  std::printf(
      "\nratio = bare / podtrain = %.3f (podtrain's ReduceNow against bare "
      "gloo on the same bucket buffers; against one flat bare buffer: "
      "%.3f). podtrain's Gloo TCP path alone against bare Gloo on the "
      "bucket buffers: %.3f (the communicator's op thread and tags). "
      "GradientBuckets' own bookkeeping: %.2f ms.\n\n",
      bare_ms / podtrain_ms, Median(timings.bare_flat) / podtrain_ms,
      bare_ms / Median(timings.podtrain_gloo_buckets),
      podtrain_ms - Median(timings.podtrain_comm_buckets));

  // Overlap: what backward hid, three ways.
  const double seq_ms = Median(sequential.step_ms);
  const auto hidden_share = [&](const StepFigures& f) {
    return std::clamp((seq_ms - Median(f.step_ms)) / podtrain_ms, 0.0, 1.0);
  };
  const auto own_share = [](const StepFigures& f) {
    const double reduce = Sum(f.reduce_ms), wait = Sum(f.wait_ms);
    return reduce > 0 ? std::max(0.0, 1 - wait / reduce) : 0.0;
  };
  const auto early_bytes = [&](const StepFigures& f,
                               const std::vector<std::vector<size_t>>& l) {
    // Buckets launch in index order: the first k were early.
    std::vector<double> launched(f.overlapped.begin(), f.overlapped.end());
    const size_t k = static_cast<size_t>(Median(launched));
    double early = 0;
    for (size_t b = 0; b < std::min(k, l.size()); ++b) {
      for (size_t p : l[b]) early += ranks[0].params[p].numel();
    }
    return early / gradient_floats;
  };
  std::printf(
      "## Overlap with backward in a training step\n\n"
      "Per rank: batch %lld (half of 256), 1 intra-op thread; two ranks, so "
      "both of the machine's cores compute backward. Three copies of the "
      "model train side by side, one step of each in turn; %d timed steps "
      "each after 3 warm-up steps.\n\n",
      static_cast<long long>(spec.global_batch() / kWorld), train_steps);
  std::printf(
      "| variant | buckets | median step ms | hidden share | bytes launched "
      "before the last gradient | all-reduce ms/step (GradientBuckets) | "
      "exposed wait ms/step | 1 - wait/all-reduce |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::printf(
      "| overlapped, default buckets (1 MB first, 4 MB cap) | %zu | %.2f | "
      "**%.1f %%** | %.1f %% | %.2f | %.2f | %.1f %% |\n",
      layout.size(), Median(overlap.step_ms), 100 * hidden_share(overlap),
      100 * early_bytes(overlap, layout), Median(overlap.reduce_ms),
      Median(overlap.wait_ms), 100 * own_share(overlap));
  std::printf(
      "| overlapped, PyTorch DDP's layout (1 MB first, 25 MB cap) | %zu | "
      "%.2f | %.1f %% | %.1f %% | %.2f | %.2f | %.1f %% |\n",
      ddp_layout.size(), Median(ddp_buckets.step_ms),
      100 * hidden_share(ddp_buckets),
      100 * early_bytes(ddp_buckets, ddp_layout), Median(ddp_buckets.reduce_ms),
      Median(ddp_buckets.wait_ms), 100 * own_share(ddp_buckets));
  std::printf(
      "| backward, then the same bucket all-reduces (no overlap: what the "
      "agent runs through shared memory) | %zu | "
      "%.2f | 0 %% | 0 %% | | | |\n\n",
      layout.size(), seq_ms);
  std::printf(
      "Hidden share = (no-overlap step - overlapped step) / all-reduce alone "
      "(%.2f ms, the ReduceNow median above), clamped to [0, 1]: the part "
      "of the all-reduce the step did not pay for.\n\n"
      "GradientBuckets' own figure (1 - wait/all-reduce, the last column) "
      "overstates it: an all-reduce launched early is timed from its "
      "launch, so it includes waiting for the peer's backward and running "
      "on cores backward needs; only the wait shows in the step. The bytes "
      "column bounds what any machine could hide: backward produces "
      "fc1.weight last, so its bucket is always reduced after backward. "
      "With DDP's layout only the first bucket (the head and the last "
      "hidden layer's bias) is complete before then, because fc1.weight "
      "shares a 7.4 MB bucket with fc2.weight; podtrain's 4 MB cap gives "
      "fc2.weight a bucket of its own, reduced while backward computes "
      "fc1.weight. On this machine there is also little to hide, and "
      "little to hide it behind: the all-reduce is CPU work (%.2f ms of "
      "sums in shared memory), both cores run backward, and handing buckets "
      "to the communication thread during backward costs wake-ups on those "
      "same cores; when the no-overlap step comes out faster, the hidden "
      "share is 0 %%.\n\n",
      podtrain_ms, podtrain_ms);
  std::printf(
      "RESULT podtrain_ms=%.3f bare_ms=%.3f ratio=%.3f "
      "podtrain_gloo_ms=%.3f hidden_percent=%.1f "
      "hidden_ddp_buckets_percent=%.1f early_bytes_percent=%.1f\n",
      podtrain_ms, bare_ms, bare_ms / podtrain_ms,
      Median(timings.podtrain_gloo_buckets), 100 * hidden_share(overlap),
      100 * hidden_share(ddp_buckets), 100 * early_bytes(overlap, layout));
  return absl::OkStatus();
}

}  // namespace
}  // namespace podtrain::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = podtrain::bench::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "allreduce_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
