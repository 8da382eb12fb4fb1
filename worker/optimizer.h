// The optimizers a job can name in its OptimizerSpec, applied to a model's
// ParamGroups once the gradients of a step have been averaged over the global
// batch (see seedpapers.md §1-2):
//
//   SGD (NFNets order), per parameter with gradient g and weights θ:
//     1. AGC (agc_clip λ > 0, body only): per output unit i (row i of a
//        >=2-D tensor, reducing every dim but 0; the whole tensor if 1-D),
//        ‖W_i‖* = max(‖W_i‖, 1e-3); if ‖G_i‖ > λ‖W_i‖*,
//        G_i ← G_i·λ‖W_i‖*/max(‖G_i‖, 1e-6).
//     2. coupled L2: g ← g + wd·θ (wd = weight_decay, or head_weight_decay
//        for the head).
//     3. m ← μm + g; Nesterov: g ← g + μm, else g ← m.
//     4. θ ← θ − lr·g.
//
//   AdamW, with t the 1-based step count:
//     m ← β1·m + (1−β1)·g, computed in fp32 and STORED in bfloat16 (ViT-G:
//       a bf16 first moment costs nothing in quality and a third of the
//       optimizer memory). As in optax's scale_by_adam(mu_dtype=bf16), this
//       step's update uses the fp32 value; the next step starts from the
//       rounded one.
//     v ← β2·v + (1−β2)·g² in fp32 (a bf16 second moment hurts training).
//     θ ← θ − lr·(m̂/(√v̂ + ε)) − lr·wd·θ, with m̂ = m/(1−β1^t),
//       v̂ = v/(1−β2^t), and wd decoupled (per head/body as above).
//
// Step reads each parameter's .grad() but never writes it, so the caller may
// still use the raw (unclipped) gradient afterwards. A parameter whose grad is
// undefined is left untouched for that step, as torch.optim does.
//
// Thread-safety: an Optimizer is not thread-safe; one training thread calls
// Step, StateTensors and LoadStateTensors, and nothing else may write the
// parameters or their gradients meanwhile. GlobalGradNorm only reads.

#ifndef PODTRAIN_WORKER_OPTIMIZER_H_
#define PODTRAIN_WORKER_OPTIMIZER_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/job.pb.h"
#include "worker/model.h"

namespace podtrain::worker {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // One update of every parameter from the gradient in its .grad() (already
  // averaged over the global batch). Runs without autograd.
  virtual void Step(double learning_rate) = 0;

  // A snapshot (copies) of everything needed to resume bit-exactly, as named
  // tensors: "sgd/momentum/{body,head}/<i>" (fp32) for SGD;
  // "adamw/step" (int64 scalar), "adamw/m/{body,head}/<i>" (bf16) and
  // "adamw/v/{body,head}/<i>" (fp32) for AdamW, <i> indexing the group.
  virtual std::vector<std::pair<std::string, torch::Tensor>> StateTensors()
      const = 0;

  // Restores a StateTensors() snapshot taken from an optimizer of the same
  // kind over parameters of the same shapes. All-or-nothing: on error the
  // state is unchanged. INVALID_ARGUMENT, naming the tensor, if one is
  // missing, unexpected, duplicated, or of the wrong shape or dtype.
  virtual absl::Status LoadStateTensors(
      const std::vector<std::pair<std::string, torch::Tensor>>& state) = 0;
};

// Builds the optimizer `spec` selects over `params` (the tensors are aliased:
// Step updates them in place), with zero momentum/moments and step 0.
// INVALID_ARGUMENT if no optimizer is set, a hyperparameter is out of range
// (weight decays < 0, momentum or betas outside [0, 1), agc_clip < 0,
// epsilon <= 0, any non-finite value), or a parameter is undefined, not
// float32, or listed twice.
absl::StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(
    const v1::OptimizerSpec& spec, const ParamGroups& params);

// sqrt(Σ‖g‖²) over the defined gradients of both groups, accumulated in
// double: the gradient-norm metric.
double GlobalGradNorm(const ParamGroups& params);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_OPTIMIZER_H_
