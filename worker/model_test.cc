#include "worker/model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace podtrain::worker {
namespace {

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

v1::ModelSpec Spec(const std::string& name, std::vector<int> hidden,
                   int num_classes) {
  v1::ModelSpec spec;
  spec.set_name(name);
  for (int h : hidden) spec.add_hidden(h);
  spec.set_num_classes(num_classes);
  spec.set_loss(v1::ModelSpec::SOFTMAX_CROSS_ENTROPY);
  return spec;
}

std::shared_ptr<Model> MustBuild(const v1::ModelSpec& spec,
                                 const ImageShape& shape, uint64_t seed) {
  absl::StatusOr<std::shared_ptr<Model>> model = BuildModel(spec, shape, seed);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// True if the two models' parameters are equal element for element.
bool SameParameters(Model& a, Model& b) {
  const std::vector<torch::Tensor> pa = a.parameters();
  const std::vector<torch::Tensor> pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i], pb[i])) return false;
  }
  return true;
}

TEST_F(ModelTest, SameSeedGivesIdenticalWeightsAndDifferentSeedDoesNot) {
  const ImageShape shape{8, 8, 3};
  for (const char* name : {"mlp", "cnn"}) {
    SCOPED_TRACE(name);
    const v1::ModelSpec spec = Spec(name, {6, 4}, 5);
    auto a = MustBuild(spec, shape, 42);
    // Disturbing the global RNG between builds must not matter.
    torch::manual_seed(999);
    torch::randn({100});
    auto b = MustBuild(spec, shape, 42);
    auto c = MustBuild(spec, shape, 43);
    // Seeds that differ only in the high 32 bits still differ.
    auto d = MustBuild(spec, shape, 42 + (uint64_t{1} << 40));
    ASSERT_TRUE(a && b && c && d);
    EXPECT_TRUE(SameParameters(*a, *b));
    EXPECT_FALSE(SameParameters(*a, *c));
    EXPECT_FALSE(SameParameters(*a, *d));
  }
}

TEST_F(ModelTest, InitializationHasTheDocumentedScale) {
  // One wide layer, so the sample statistics are tight: He-uniform
  // U(±sqrt(6/fan_in)) for the hidden layer, U(±1/sqrt(fan_in)) for the head,
  // zero biases.
  const ImageShape shape{16, 16, 1};
  auto model = MustBuild(Spec("mlp", {512}, 512), shape, 7);
  ASSERT_TRUE(model);
  const ParamGroups groups = GroupParameters(*model);
  ASSERT_EQ(groups.body.size(), 2u);
  const torch::Tensor hidden_w = groups.body[0];
  const double hidden_bound = std::sqrt(6.0 / 256);
  EXPECT_LE(hidden_w.abs().max().item<double>(), hidden_bound);
  EXPECT_NEAR(hidden_w.std().item<double>(), hidden_bound / std::sqrt(3.0),
              0.02 * hidden_bound);
  const torch::Tensor head_w = groups.head[0];
  const double head_bound = 1.0 / std::sqrt(512.0);
  EXPECT_LE(head_w.abs().max().item<double>(), head_bound);
  EXPECT_NEAR(head_w.std().item<double>(), head_bound / std::sqrt(3.0),
              0.02 * head_bound);
  EXPECT_EQ(groups.body[1].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(groups.head[1].abs().sum().item<double>(), 0.0);
}

TEST_F(ModelTest, MlpOutputShape) {
  const ImageShape shape{5, 7, 3};
  auto model = MustBuild(Spec("mlp", {16, 8}, 4), shape, 1);
  ASSERT_TRUE(model);
  const torch::Tensor logits = model->forward(torch::rand({6, 3, 5, 7}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{6, 4}));
  EXPECT_EQ(model->head()->weight.sizes(), (std::vector<int64_t>{4, 8}));
}

TEST_F(ModelTest, MlpWithoutHiddenLayersIsALinearClassifier) {
  const ImageShape shape{2, 2, 1};
  auto model = MustBuild(Spec("mlp", {}, 3), shape, 1);
  ASSERT_TRUE(model);
  const torch::Tensor images = torch::rand({2, 1, 2, 2});
  const torch::Tensor logits = model->forward(images);
  const ParamGroups groups = GroupParameters(*model);
  EXPECT_TRUE(groups.body.empty());
  EXPECT_TRUE(torch::allclose(
      logits,
      torch::matmul(images.flatten(1), groups.head[0].t()) + groups.head[1]));
}

TEST_F(ModelTest, CnnOutputShapeFloorsOddSides) {
  // 7x9 -> pool -> 3x4 -> pool -> 1x2: the head sees 8 channels · 1 · 2.
  const ImageShape shape{7, 9, 2};
  auto model = MustBuild(Spec("cnn", {4, 8}, 10), shape, 1);
  ASSERT_TRUE(model);
  const torch::Tensor logits = model->forward(torch::rand({3, 2, 7, 9}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(model->head()->weight.sizes(), (std::vector<int64_t>{10, 16}));
  const ParamGroups groups = GroupParameters(*model);
  ASSERT_EQ(groups.body.size(), 4u);
  EXPECT_EQ(groups.body[0].sizes(), (std::vector<int64_t>{4, 2, 3, 3}));
  EXPECT_EQ(groups.body[2].sizes(), (std::vector<int64_t>{8, 4, 3, 3}));
}

TEST_F(ModelTest, ForwardRefusesImagesOfAnotherShape) {
  auto model = MustBuild(Spec("mlp", {4}, 2), ImageShape{4, 4, 1}, 1);
  ASSERT_TRUE(model);
  EXPECT_THROW(model->forward(torch::rand({2, 1, 4, 5})), c10::Error);
  EXPECT_THROW(model->forward(torch::rand({2, 16})), c10::Error);
}

TEST_F(ModelTest, InvalidSpecsAreRefused) {
  const ImageShape shape{8, 8, 1};
  struct Case {
    v1::ModelSpec spec;
    ImageShape shape;
  };
  const std::vector<Case> cases = {
      {Spec("resnet", {4}, 2), shape},
      {Spec("", {4}, 2), shape},
      {Spec("mlp", {4}, 0), shape},
      {Spec("mlp", {4, 0}, 2), shape},
      {Spec("mlp", {4}, 2), ImageShape{0, 8, 1}},
      // 8 -> 4 -> 2 -> 1 -> 0: four pooling stages are one too many.
      {Spec("cnn", {2, 2, 2, 2}, 2), shape},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec.ShortDebugString());
    const auto model = BuildModel(c.spec, c.shape, 1);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // Three stages fit exactly.
  EXPECT_TRUE(BuildModel(Spec("cnn", {2, 2, 2}, 2), shape, 1).ok());
}

TEST_F(ModelTest, GroupParametersSplitsOffTheClassifierAndAliasesTheModel) {
  for (const char* name : {"mlp", "cnn"}) {
    SCOPED_TRACE(name);
    auto model = MustBuild(Spec(name, {3, 5}, 4), ImageShape{4, 4, 2}, 1);
    ASSERT_TRUE(model);
    const ParamGroups groups = GroupParameters(*model);
    EXPECT_EQ(groups.body.size(), 4u);
    ASSERT_EQ(groups.head.size(), 2u);
    EXPECT_EQ(groups.head[0].sizes()[0], 4);
    EXPECT_EQ(groups.head[0].dim(), 2);
    EXPECT_EQ(groups.head[1].sizes(), (std::vector<int64_t>{4}));
    EXPECT_EQ(groups.body.size() + groups.head.size(),
              model->parameters().size());
    // Writing through the group writes the model.
    {
      torch::NoGradGuard no_grad;
      groups.head[1].fill_(0.25);
    }
    EXPECT_EQ(model->head()->bias[3].item<float>(), 0.25f);
  }
}

TEST_F(ModelTest, SoftmaxSummedLossIsTheSumOfPerExampleLosses) {
  const torch::Tensor logits = torch::tensor(
      {{1.0f, 2.0f, -1.0f}, {0.5f, 0.5f, 3.0f}, {-2.0f, 0.0f, 2.0f}});
  const torch::Tensor labels = torch::tensor({1, 2, 0}, torch::kLong);
  double expected = 0;
  const auto l = logits.accessor<float, 2>();
  const int64_t label[] = {1, 2, 0};
  for (int i = 0; i < 3; ++i) {
    double sum_exp = 0;
    for (int j = 0; j < 3; ++j) sum_exp += std::exp(double{l[i][j]});
    expected += std::log(sum_exp) - l[i][label[i]];
  }
  for (auto loss : {v1::ModelSpec::SOFTMAX_CROSS_ENTROPY,
                    v1::ModelSpec::LOSS_UNSPECIFIED}) {
    const torch::Tensor got = SummedLoss(logits, labels, loss);
    EXPECT_EQ(got.dim(), 0);
    EXPECT_NEAR(got.item<double>(), expected, 1e-5);
  }
}

TEST_F(ModelTest, SigmoidSummedLossSumsOverClassesAndExamples) {
  const torch::Tensor logits =
      torch::tensor({{1.0f, -2.0f, 0.0f}, {3.0f, 0.5f, -1.0f}});
  const torch::Tensor labels =
      torch::tensor({{1.0f, 0.0f, 1.0f}, {0.0f, 1.0f, 1.0f}});
  const auto x = logits.accessor<float, 2>();
  const auto y = labels.accessor<float, 2>();
  double expected = 0;
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      const double p = 1.0 / (1.0 + std::exp(-double{x[i][j]}));
      expected -= y[i][j] * std::log(p) + (1 - y[i][j]) * std::log(1 - p);
    }
  }
  const torch::Tensor got =
      SummedLoss(logits, labels, v1::ModelSpec::SIGMOID_CROSS_ENTROPY);
  EXPECT_NEAR(got.item<double>(), expected, 1e-5);
}

TEST_F(ModelTest, SummedLossGradientFlowsToTheModel) {
  auto model = MustBuild(Spec("mlp", {4}, 3), ImageShape{2, 2, 1}, 1);
  ASSERT_TRUE(model);
  const torch::Tensor loss =
      SummedLoss(model->forward(torch::rand({5, 1, 2, 2})),
                 torch::tensor({0, 1, 2, 0, 1}, torch::kLong),
                 v1::ModelSpec::SOFTMAX_CROSS_ENTROPY);
  loss.backward();
  for (const torch::Tensor& p : model->parameters()) {
    EXPECT_TRUE(p.grad().defined());
  }
  EXPECT_GT(model->head()->weight.grad().abs().sum().item<double>(), 0);
}

TEST_F(ModelTest, SummedLossRefusesLabelsOfTheWrongKind) {
  const torch::Tensor logits = torch::zeros({2, 3});
  EXPECT_THROW(SummedLoss(logits, torch::zeros({2}),
                          v1::ModelSpec::SOFTMAX_CROSS_ENTROPY),
               c10::Error);
  EXPECT_THROW(SummedLoss(logits, torch::zeros({3}, torch::kLong),
                          v1::ModelSpec::SOFTMAX_CROSS_ENTROPY),
               c10::Error);
  EXPECT_THROW(SummedLoss(logits, torch::zeros({2, 2}),
                          v1::ModelSpec::SIGMOID_CROSS_ENTROPY),
               c10::Error);
}

}  // namespace
}  // namespace podtrain::worker
