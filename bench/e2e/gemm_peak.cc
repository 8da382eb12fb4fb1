// gemm_peak: the machine's measured fp32 compute limit, through the same
// libtorch + OpenBLAS that podtrain's worker and Debian's python3-torch use.
// bench_e2e.sh divides the training FLOP rate by it.
//
//   gemm_peak --threads=1 --size=2048 --seconds=3
//
// Runs square fp32 matrix products C = A B (2 n^3 FLOPs each) with `threads`
// intra-op threads (libtorch's and OpenBLAS's) for about `seconds`, in
// batches of `repeat`, and reports the best batch's rate (a peak, not a
// mean: other processes on a shared machine only ever slow a batch down).
// It also times the MLP's own GEMM shapes (784-1024-1024-10 at the per-rank
// batch of 128, forward and both backward products), and a whole training
// step of that MLP on one rank's batch with nothing around it (libtorch
// forward, cross-entropy, backward, SGD with Nesterov momentum; no data
// loading, no communication): the ceilings a training framework can reach.
// Last line:
//
//   GEMM threads=<t> size=<n> peak_gflops=<x> mlp_gflops=<y>
//        train_step_ms=<best ms per step> train_examples_per_second=<z>
//        blas_core=<the kernels OpenBLAS chose (OPENBLAS_CORETYPE)>

#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/blas_env.h"

ABSL_FLAG(int32_t, threads, 1, "intra-op threads (libtorch and OpenBLAS)");
ABSL_FLAG(int64_t, size, 2048, "n of the n x n x n product");
ABSL_FLAG(double, seconds, 3.0, "how long to measure");
ABSL_FLAG(int32_t, repeat, 5, "products per timed batch");
ABSL_FLAG(int64_t, mlp_batch, 128, "per-rank batch of the MLP shapes");

namespace {

// The name of the CPU core whose kernels OpenBLAS uses, or "unknown".
std::string BlasCore() {
  using CoreName = char* (*)();
  auto name =
      reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* core = name != nullptr ? name() : nullptr;
  return core != nullptr ? core : "unknown";
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

// Best rate, in GFLOP/s, of `work` (which does `flops` per call) over
// batches of `repeat` calls within about `seconds`.
template <typename Work>
double BestRate(Work work, double flops, int repeat, double seconds) {
  for (int i = 0; i < 2; ++i) work();  // warm up caches and thread pools
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto batch = std::chrono::steady_clock::now();
    for (int i = 0; i < repeat; ++i) work();
    best = std::max(best, flops * repeat / Seconds(batch) / 1e9);
  } while (Seconds(start) < seconds);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int64_t n = absl::GetFlag(FLAGS_size);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int repeat = absl::GetFlag(FLAGS_repeat);
  torch::set_num_threads(threads);
  podtrain::SetBlasThreads(threads);
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);

  const torch::Tensor a = torch::randn({n, n});
  const torch::Tensor b = torch::randn({n, n});
  torch::Tensor c = torch::empty({n, n});
  const double peak =
      BestRate([&] { torch::mm_out(c, a, b); },
               2.0 * static_cast<double>(n) * n * n, repeat, seconds);

  // The MLP's products at the per-rank batch: for each layer (in -> out),
  // forward X W^T, the input gradient dY W and the weight gradient dY^T X.
  const int64_t batch = absl::GetFlag(FLAGS_mlp_batch);
  const std::vector<std::pair<int64_t, int64_t>> layers = {
      {784, 1024}, {1024, 1024}, {1024, 10}};
  std::vector<torch::Tensor> x, w, dy;
  double mlp_flops = 0;
  for (const auto& [in, out] : layers) {
    x.push_back(torch::randn({batch, in}));
    w.push_back(torch::randn({out, in}));
    dy.push_back(torch::randn({batch, out}));
    mlp_flops += 3 * 2.0 * batch * in * out;
  }
  const double mlp = BestRate(
      [&] {
        for (size_t i = 0; i < layers.size(); ++i) {
          torch::mm(x[i], w[i].t());
          torch::mm(dy[i], w[i]);
          torch::mm(dy[i].t(), x[i]);
        }
      },
      mlp_flops, repeat * 10, seconds);

  // A bare training step of the MLP on `batch` examples.
  torch::nn::Sequential model(torch::nn::Linear(784, 1024), torch::nn::ReLU(),
                              torch::nn::Linear(1024, 1024), torch::nn::ReLU(),
                              torch::nn::Linear(1024, 10));
  torch::optim::SGD sgd(
      model->parameters(),
      torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true));
  const torch::Tensor images = torch::rand({batch, 784});
  const torch::Tensor labels = torch::randint(0, 10, {batch});
  const auto train_step = [&] {
    torch::AutoGradMode enable_grad(true);
    sgd.zero_grad();
    torch::Tensor loss =
        torch::nn::functional::cross_entropy(model->forward(images), labels);
    loss.backward();
    sgd.step();
  };
  // BestRate with 1e9 "FLOPs" per call returns calls per second.
  const double steps_per_second =
      BestRate(train_step, 1e9, repeat * 4, seconds);

  std::printf(
      "GEMM threads=%d size=%ld peak_gflops=%.1f mlp_gflops=%.1f "
      "train_step_ms=%.2f train_examples_per_second=%.0f blas_core=%s\n",
      threads, static_cast<long>(n), peak, mlp, 1000.0 / steps_per_second,
      steps_per_second * static_cast<double>(batch), BlasCore().c_str());
  return 0;
}
