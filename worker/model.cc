#include "worker/model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace podtrain::worker {
namespace {

// Refuses an input the model was not built for with a message naming both
// shapes; without it a wrong image size surfaces as an opaque matmul error.
void CheckImages(const torch::Tensor& images, const ImageShape& shape) {
  TORCH_CHECK(images.scalar_type() == torch::kFloat,
              "model input must be float32, got ", images.scalar_type());
  TORCH_CHECK(images.dim() == 4 && images.size(1) == shape.channels &&
                  images.size(2) == shape.height &&
                  images.size(3) == shape.width,
              "model input must be [n, ", shape.channels, ", ", shape.height,
              ", ", shape.width, "], got ", images.sizes());
}

// flatten -> [Linear -> ReLU]* -> Linear (head).
class Mlp final : public Model {
 public:
  Mlp(const ImageShape& shape, const std::vector<int64_t>& hidden,
      int64_t num_classes)
      : shape_(shape) {
    body_ = register_module("body", torch::nn::Sequential());
    int64_t width = shape.channels * shape.height * shape.width;
    for (const int64_t h : hidden) {
      body_->push_back(torch::nn::Linear(width, h));
      body_->push_back(torch::nn::ReLU());
      width = h;
    }
    head_ = register_module("head", torch::nn::Linear(width, num_classes));
  }

  torch::Tensor forward(torch::Tensor images) override {
    CheckImages(images, shape_);
    torch::Tensor x = images.flatten(1);
    // An empty Sequential refuses forward(); no hidden layers is legal.
    if (!body_->is_empty()) x = body_->forward(x);
    return head_(x);
  }

  torch::nn::Linear& head() override { return head_; }

 private:
  const ImageShape shape_;
  torch::nn::Sequential body_{nullptr};
  torch::nn::Linear head_{nullptr};
};

// [Conv2d 3x3 -> ReLU -> MaxPool2d(2)]* -> flatten -> Linear (head).
class Cnn final : public Model {
 public:
  // REQUIRES: the image survives hidden.size() halvings (checked by
  // BuildModel).
  Cnn(const ImageShape& shape, const std::vector<int64_t>& hidden,
      int64_t num_classes)
      : shape_(shape) {
    body_ = register_module("body", torch::nn::Sequential());
    int64_t channels = shape.channels;
    int64_t height = shape.height;
    int64_t width = shape.width;
    for (const int64_t h : hidden) {
      body_->push_back(torch::nn::Conv2d(
          torch::nn::Conv2dOptions(channels, h, /*kernel_size=*/3).padding(1)));
      body_->push_back(torch::nn::ReLU());
      body_->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)));
      channels = h;
      height /= 2;  // MaxPool2d(2) floors odd sides.
      width /= 2;
    }
    head_ = register_module(
        "head", torch::nn::Linear(channels * height * width, num_classes));
  }

  torch::Tensor forward(torch::Tensor images) override {
    CheckImages(images, shape_);
    torch::Tensor x = images;
    if (!body_->is_empty()) x = body_->forward(x);
    return head_(x.flatten(1));
  }

  torch::nn::Linear& head() override { return head_; }

 private:
  const ImageShape shape_;
  torch::nn::Sequential body_{nullptr};
  torch::nn::Linear head_{nullptr};
};

// Overwrites torch's default initialisation, which draws from the global RNG
// (shared with the rest of the process, so not reproducible per rank), with
// draws from a generator seeded by `seed` alone. Parameters are visited in
// registration order, so the stream of draws is the same on every rank.
void Initialize(Model& model, uint64_t seed) {
  // mt19937 (torch's CPU generator) keeps only 32 bits of its seed; fold the
  // high half in so seeds that differ only there still give different
  // weights. Seeds below 2^32 are used as is (= torch::manual_seed(seed)).
  const uint64_t folded = (seed ^ (seed >> 32)) & 0xffffffffULL;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(folded);
  torch::NoGradGuard no_grad;
  const torch::Tensor& head_weight = model.head()->weight;
  for (auto& named : model.named_parameters(/*recurse=*/true)) {
    torch::Tensor& param = named.value();
    if (param.dim() < 2) {
      // Biases start at zero, as in NFNets; the head is then unbiased at
      // init and AGC's epsilon keeps their early updates small but non-zero.
      param.zero_();
      continue;
    }
    const double fan_in = static_cast<double>(param[0].numel());
    // He-uniform (variance 2/fan_in) keeps activations from shrinking through
    // the ReLUs; the head feeds no ReLU, so it gets variance 1/(3·fan_in).
    const double bound = param.is_same(head_weight) ? 1.0 / std::sqrt(fan_in)
                                                    : std::sqrt(6.0 / fan_in);
    param.uniform_(-bound, bound, generator);
  }
}

absl::Status ValidateSpec(const v1::ModelSpec& spec, const ImageShape& shape) {
  if (spec.name() != "mlp" && spec.name() != "cnn") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.name: unknown model \"", spec.name(), "\" (want mlp or cnn)"));
  }
  if (spec.num_classes() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.num_classes: must be >= 1, got ", spec.num_classes()));
  }
  for (int i = 0; i < spec.hidden_size(); ++i) {
    if (spec.hidden(i) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.hidden[", i, "]: must be >= 1, got ", spec.hidden(i)));
    }
  }
  if (shape.height < 1 || shape.width < 1 || shape.channels < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("image shape must be positive, got height=", shape.height,
                     " width=", shape.width, " channels=", shape.channels));
  }
  if (spec.name() == "cnn") {
    // Each stage halves (floors) both sides; a side of 0 leaves no features.
    const int stages = spec.hidden_size();
    if (stages >= 63 || (shape.height >> stages) < 1 ||
        (shape.width >> stages) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.hidden: a cnn with ", stages,
                       " pooling stages needs images of at least 2^", stages,
                       " pixels a side, got ", shape.height, "x", shape.width));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<Model>> BuildModel(const v1::ModelSpec& spec,
                                                  const ImageShape& shape,
                                                  uint64_t seed) {
  const absl::Status valid = ValidateSpec(spec, shape);
  if (!valid.ok()) return valid;
  const std::vector<int64_t> hidden(spec.hidden().begin(), spec.hidden().end());
  std::shared_ptr<Model> model;
  if (spec.name() == "mlp") {
    model = std::make_shared<Mlp>(shape, hidden, spec.num_classes());
  } else {
    model = std::make_shared<Cnn>(shape, hidden, spec.num_classes());
  }
  Initialize(*model, seed);
  return model;
}

ParamGroups GroupParameters(Model& model) {
  ParamGroups groups;
  const torch::nn::Linear& head = model.head();
  for (const auto& named : model.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& param = named.value();
    if (param.is_same(head->weight) || param.is_same(head->bias)) continue;
    groups.body.push_back(param);
  }
  groups.head = {head->weight, head->bias};
  return groups;
}

torch::Tensor SummedLoss(const torch::Tensor& logits,
                         const torch::Tensor& labels,
                         v1::ModelSpec::Loss loss) {
  TORCH_CHECK(logits.dim() == 2, "logits must be [n, num_classes], got ",
              logits.sizes());
  switch (loss) {
    case v1::ModelSpec::LOSS_UNSPECIFIED:
    case v1::ModelSpec::SOFTMAX_CROSS_ENTROPY:
      TORCH_CHECK(labels.scalar_type() == torch::kLong && labels.dim() == 1 &&
                      labels.size(0) == logits.size(0),
                  "softmax cross-entropy labels must be int64 [",
                  logits.size(0), "], got ", labels.scalar_type(), " ",
                  labels.sizes());
      return torch::nn::functional::cross_entropy(
          logits, labels,
          torch::nn::functional::CrossEntropyFuncOptions().reduction(
              torch::kSum));
    case v1::ModelSpec::SIGMOID_CROSS_ENTROPY:
      TORCH_CHECK(
          labels.is_floating_point() && labels.sizes() == logits.sizes(),
          "sigmoid cross-entropy labels must be float ", logits.sizes(),
          ", got ", labels.scalar_type(), " ", labels.sizes());
      return torch::nn::functional::binary_cross_entropy_with_logits(
          logits, labels.to(logits.scalar_type()),
          torch::nn::functional::BinaryCrossEntropyWithLogitsFuncOptions()
              .reduction(torch::kSum));
    default:
      break;
  }
  TORCH_CHECK(false, "unknown loss ", static_cast<int>(loss));
}

}  // namespace podtrain::worker
