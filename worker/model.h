// The built-in models a job can name in its ModelSpec ("mlp", "cnn"), built
// from the spec and the dataset's image shape; how their parameters split into
// the body and the head (the final classifier, which gets its own weight decay
// and is never clipped by AGC); and the summed loss the trainer differentiates.
//
// Every rank builds its model independently, so initialisation depends only on
// (spec, shape, seed): ranks start with bit-identical weights and no broadcast
// is needed.
//
// Thread-safety: BuildModel, GroupParameters and SummedLoss are safe to call
// concurrently on different models. A Model is a torch::nn::Module and, like
// one, must not be used by two threads at once (forward mutates autograd
// state, the optimizer writes its parameters in place).

#ifndef PODTRAIN_WORKER_MODEL_H_
#define PODTRAIN_WORKER_MODEL_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace podtrain::worker {

// The shape of one example image, as the dataset's manifest declares it.
struct ImageShape {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
};

// A classifier: float images [n, channels, height, width] with values in
// [0, 1] in, logits [n, num_classes] out.
class Model : public torch::nn::Module {
 public:
  // REQUIRES: `images` is float32 [n, channels, height, width] with the shape
  // the model was built for. Throws c10::Error otherwise (as torch does).
  virtual torch::Tensor forward(torch::Tensor images) = 0;

  // The final classifier (the "head"). Its weight and bias form
  // ParamGroups::head; every other parameter is body.
  virtual torch::nn::Linear& head() = 0;
};

// Builds the model `spec.name` for images of `shape`, initialised from `seed`
// alone (a private generator; the result does not depend on the global torch
// RNG or on the number of threads):
//   "mlp": flatten -> [Linear(., hidden[i]) -> ReLU]* -> Linear(., classes).
//   "cnn": [Conv2d(3x3, pad 1, hidden[i] channels) -> ReLU -> MaxPool2d(2)]*
//          -> flatten -> Linear(., classes).
// An empty `hidden` gives a linear classifier. Layers followed by a ReLU get
// He-uniform weights; the head gets U(+-1/sqrt(fan_in)); biases start at zero.
// Errors: INVALID_ARGUMENT for an unknown name, num_classes < 1, a hidden
// width < 1, a non-positive shape dimension, or a cnn with more pooling
// stages than the image has room for (a side would shrink to 0).
absl::StatusOr<std::shared_ptr<Model>> BuildModel(const v1::ModelSpec& spec,
                                                  const ImageShape& shape,
                                                  uint64_t seed);

// A model's trainable parameters, split for the optimizer. The tensors alias
// the model's own parameters (updating them updates the model). Each group is
// in the model's registration order, which is the same on every rank, so
// optimizer state can be named by position.
struct ParamGroups {
  std::vector<torch::Tensor> body;
  // The final classifier's weight and bias, in that order.
  std::vector<torch::Tensor> head;
};

ParamGroups GroupParameters(Model& model);

// The SUM over the batch of the per-example losses (not the mean): the trainer
// divides by the global batch B, so the gradient is (1/B)·Σ whatever the
// world size and however examples are split among ranks.
//   SOFTMAX_CROSS_ENTROPY (and LOSS_UNSPECIFIED, the proto default): `labels`
//     int64 [n] class indices.
//   SIGMOID_CROSS_ENTROPY: `labels` float [n, num_classes] multi-hot targets;
//     the binary cross-entropy is summed over classes and examples.
// Returns a float scalar that autograd can differentiate. Throws c10::Error on
// labels of the wrong dtype or shape.
torch::Tensor SummedLoss(const torch::Tensor& logits,
                         const torch::Tensor& labels, v1::ModelSpec::Loss loss);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_MODEL_H_
