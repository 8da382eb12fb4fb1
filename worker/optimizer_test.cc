// Each optimizer is checked against a reference written here with plain loops
// in double precision, straight from the formulas in optimizer.h.

#include "worker/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "proto/job.pb.h"
#include "worker/model.h"
#include "worker/schedule.h"

namespace podtrain::worker {
namespace {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class OptimizerTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

// ---------------------------------------------------------------------------
// Tensors in and out of plain vectors.

torch::Tensor MakeParam(const std::vector<float>& values,
                        const std::vector<int64_t>& shape) {
  return torch::tensor(values).reshape(shape).clone().requires_grad_(true);
}

void SetGrad(torch::Tensor& param, const std::vector<float>& values) {
  param.mutable_grad() = torch::tensor(values).reshape(param.sizes()).clone();
}

std::vector<double> ToVector(const torch::Tensor& t) {
  const torch::Tensor flat =
      t.detach().to(torch::kDouble).contiguous().view(-1);
  const double* data = flat.data_ptr<double>();
  return std::vector<double>(data, data + flat.numel());
}

std::vector<float> ToFloats(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

const torch::Tensor& Find(const NamedTensors& state, const std::string& name) {
  for (const auto& [n, t] : state) {
    if (n == name) return t;
  }
  static const torch::Tensor* const kMissing = new torch::Tensor();
  ADD_FAILURE() << "no state tensor " << name;
  return *kMissing;
}

// ---------------------------------------------------------------------------
// The reference: one parameter as plain doubles.

struct RefParam {
  std::vector<double> w;
  std::vector<double> m;
  std::vector<double> v;
  int64_t units = 1;  // Rows for AGC: size(0) for >=2-D tensors, else 1.
  bool head = false;
};

RefParam Ref(const torch::Tensor& param, bool head) {
  RefParam ref;
  ref.w = ToVector(param);
  ref.m.assign(ref.w.size(), 0.0);
  ref.v.assign(ref.w.size(), 0.0);
  ref.units = param.dim() >= 2 ? param.size(0) : 1;
  ref.head = head;
  return ref;
}

// Returns how many units it clipped.
int RefAgc(const RefParam& p, double clip, std::vector<double>& g) {
  int clipped = 0;
  const size_t unit_size = g.size() / p.units;
  for (int64_t u = 0; u < p.units; ++u) {
    double w_norm = 0, g_norm = 0;
    for (size_t k = u * unit_size; k < (u + 1) * unit_size; ++k) {
      w_norm += p.w[k] * p.w[k];
      g_norm += g[k] * g[k];
    }
    w_norm = std::max(std::sqrt(w_norm), 1e-3);
    g_norm = std::sqrt(g_norm);
    const double max_norm = clip * w_norm;
    if (g_norm > max_norm) {
      ++clipped;
      for (size_t k = u * unit_size; k < (u + 1) * unit_size; ++k) {
        g[k] *= max_norm / std::max(g_norm, 1e-6);
      }
    }
  }
  return clipped;
}

struct SgdHyper {
  double momentum = 0;
  bool nesterov = false;
  double agc_clip = 0;
  double weight_decay = 0;
  double head_weight_decay = 0;
};

// Returns how many units AGC clipped.
int RefSgdStep(RefParam& p, std::vector<double> g, double lr,
               const SgdHyper& h) {
  int clipped = 0;
  if (h.agc_clip > 0 && !p.head) clipped = RefAgc(p, h.agc_clip, g);
  const double wd = p.head ? h.head_weight_decay : h.weight_decay;
  for (size_t k = 0; k < g.size(); ++k) {
    g[k] += wd * p.w[k];
    p.m[k] = h.momentum * p.m[k] + g[k];
    const double d = h.nesterov ? g[k] + h.momentum * p.m[k] : p.m[k];
    p.w[k] -= lr * d;
  }
  return clipped;
}

// Rounds to the nearest bfloat16 (ties to even), via float as the code
// under test computes the moment in float.
double RoundToBf16(double x) {
  const float f = static_cast<float>(x);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float rounded;
  std::memcpy(&rounded, &bits, sizeof(rounded));
  return rounded;
}

struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0;
  double head_weight_decay = 0;
};

// `t` is 1-based. `bf16_m` chooses between the optimizer's storage and an
// all-fp32 first moment. Returns how many elements of m rounding changed.
int RefAdamWStep(RefParam& p, const std::vector<double>& g, double lr,
                 int64_t t, const AdamWHyper& h, bool bf16_m) {
  const double wd = p.head ? h.head_weight_decay : h.weight_decay;
  int rounded = 0;
  for (size_t k = 0; k < g.size(); ++k) {
    const double m = h.beta1 * p.m[k] + (1 - h.beta1) * g[k];
    p.v[k] = h.beta2 * p.v[k] + (1 - h.beta2) * g[k] * g[k];
    const double m_hat = m / (1 - std::pow(h.beta1, t));
    const double v_hat = p.v[k] / (1 - std::pow(h.beta2, t));
    p.w[k] -= lr * (m_hat / (std::sqrt(v_hat) + h.epsilon)) + lr * wd * p.w[k];
    p.m[k] = bf16_m ? RoundToBf16(m) : m;
    if (p.m[k] != m) ++rounded;
  }
  return rounded;
}

// ---------------------------------------------------------------------------
// Specs.

v1::OptimizerSpec SgdSpec(const SgdHyper& h) {
  v1::OptimizerSpec spec;
  spec.mutable_sgd()->set_momentum(h.momentum);
  spec.mutable_sgd()->set_nesterov(h.nesterov);
  spec.mutable_sgd()->set_agc_clip(h.agc_clip);
  spec.set_weight_decay(h.weight_decay);
  spec.set_head_weight_decay(h.head_weight_decay);
  return spec;
}

v1::OptimizerSpec AdamWSpec(const AdamWHyper& h) {
  v1::OptimizerSpec spec;
  spec.mutable_adamw()->set_beta1(h.beta1);
  spec.mutable_adamw()->set_beta2(h.beta2);
  spec.mutable_adamw()->set_epsilon(h.epsilon);
  spec.set_weight_decay(h.weight_decay);
  spec.set_head_weight_decay(h.head_weight_decay);
  return spec;
}

std::unique_ptr<Optimizer> MustMake(const v1::OptimizerSpec& spec,
                                    const ParamGroups& groups) {
  absl::StatusOr<std::unique_ptr<Optimizer>> optimizer =
      MakeOptimizer(spec, groups);
  EXPECT_TRUE(optimizer.ok()) << optimizer.status();
  return optimizer.ok() ? std::move(*optimizer) : nullptr;
}

// A small body (a 2x3 weight, a bias, a 2x1x2x2 conv filter) and head (2x2
// weight, bias), with values that are not special.
ParamGroups SmallGroups() {
  ParamGroups g;
  g.body.push_back(MakeParam({0.5f, -0.2f, 0.1f, 0.3f, 0.8f, -0.6f}, {2, 3}));
  g.body.push_back(MakeParam({0.05f, -0.1f}, {2}));
  g.body.push_back(MakeParam(
      {0.2f, -0.1f, 0.4f, 0.3f, -0.5f, 0.25f, 0.1f, -0.35f}, {2, 1, 2, 2}));
  g.head.push_back(MakeParam({0.7f, -0.4f, 0.2f, 0.9f}, {2, 2}));
  g.head.push_back(MakeParam({0.01f, -0.02f}, {2}));
  return g;
}

std::vector<torch::Tensor*> All(ParamGroups& g) {
  std::vector<torch::Tensor*> all;
  for (auto& t : g.body) all.push_back(&t);
  for (auto& t : g.head) all.push_back(&t);
  return all;
}

std::vector<RefParam> Refs(ParamGroups& g) {
  std::vector<RefParam> refs;
  for (auto& t : g.body) refs.push_back(Ref(t, /*head=*/false));
  for (auto& t : g.head) refs.push_back(Ref(t, /*head=*/true));
  return refs;
}

// Gradient for parameter `i` at step `step`: deterministic, mixed signs, and
// large enough relative to the weights that AGC clips some units.
std::vector<double> GradFor(size_t i, int step, int64_t numel, double scale) {
  std::vector<double> g(numel);
  for (int64_t k = 0; k < numel; ++k) {
    g[k] = scale * std::sin(1.7 * k + 2.3 * i + 0.9 * step + 0.4);
  }
  return g;
}

// Runs `steps` steps of `optimizer` over `groups` and of `ref_step` over the
// reference, with the same gradients, and compares the weights after each.
template <typename RefStep>
void CompareWithReference(ParamGroups& groups, Optimizer& optimizer,
                          const std::vector<double>& lrs, double grad_scale,
                          double tolerance, RefStep ref_step) {
  std::vector<RefParam> refs = Refs(groups);
  std::vector<torch::Tensor*> params = All(groups);
  for (int step = 0; step < static_cast<int>(lrs.size()); ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      const std::vector<double> g =
          GradFor(i, step, params[i]->numel(), grad_scale);
      SetGrad(*params[i], ToFloats(g));
      // The reference sees the float-rounded gradient, like the optimizer.
      ref_step(refs[i], ToVector(params[i]->grad()), lrs[step], step + 1);
    }
    optimizer.Step(lrs[step]);
    for (size_t i = 0; i < params.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "step " << step << " param " << i);
      const std::vector<double> got = ToVector(*params[i]);
      for (size_t k = 0; k < got.size(); ++k) {
        EXPECT_NEAR(got[k], refs[i].w[k], tolerance) << "element " << k;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// SGD.

TEST_F(OptimizerTest, SgdNesterovTwoStepsMatchReference) {
  for (const bool nesterov : {true, false}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "heavy ball");
    ParamGroups groups = SmallGroups();
    SgdHyper h;
    h.momentum = 0.9;
    h.nesterov = nesterov;
    auto optimizer = MustMake(SgdSpec(h), groups);
    ASSERT_TRUE(optimizer);
    CompareWithReference(groups, *optimizer, {0.1, 0.05}, 0.5, 1e-6,
                         [&](RefParam& p, const std::vector<double>& g,
                             double lr, int64_t) { RefSgdStep(p, g, lr, h); });
  }
}

TEST_F(OptimizerTest, SgdWithAgcWeightDecayAndNesterovMatchesReference) {
  ParamGroups groups = SmallGroups();
  SgdHyper h;
  h.momentum = 0.9;
  h.nesterov = true;
  h.agc_clip = 0.1;
  h.weight_decay = 0.01;
  h.head_weight_decay = 0.3;
  auto optimizer = MustMake(SgdSpec(h), groups);
  ASSERT_TRUE(optimizer);
  // Gradients of scale 0.03 against units of norm 0.1-0.8 put units on both
  // sides of the threshold; count them so the test shows it exercised both.
  int clipped = 0, body_units = 0;
  CompareWithReference(
      groups, *optimizer, {0.3, 0.2, 0.1}, 0.03, 1e-6,
      [&](RefParam& p, const std::vector<double>& g, double lr, int64_t) {
        clipped += RefSgdStep(p, g, lr, h);
        if (!p.head) body_units += p.units;
      });
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, body_units);
}

TEST_F(OptimizerTest, AgcClipsOnlyUnitsAboveTheThresholdAndNeverTheHead) {
  // With lr 1 and no momentum or decay, θ moves by exactly −(clipped g).
  ParamGroups g;
  // Row 0: ‖W‖ = 5, ‖G‖ = 1 > 0.01·5: scaled to norm 0.05.
  // Row 1: ‖W‖ = 1, ‖G‖ = 0.001 < 0.01: unchanged.
  g.body.push_back(MakeParam({3, 4, 1, 0}, {2, 2}));
  // A zero-initialised bias: ‖W‖* = 1e-3, so ‖G‖ is capped at 1e-5, not 0.
  g.body.push_back(MakeParam({0, 0}, {2}));
  // Conv filters [2, 1, 2, 2]: the unit is a whole filter (fan-in and
  // spatial dims). Filter 0: ‖W‖ = 1, ‖G‖ = 2: scaled to 0.01. Filter 1:
  // ‖W‖ = 2, ‖G‖ = 0.002 < 0.02: unchanged.
  g.body.push_back(MakeParam({0.5, 0.5, 0.5, 0.5, 1, 1, 1, 1}, {2, 1, 2, 2}));
  // The head: gradients far above λ‖W‖, left alone.
  g.head.push_back(MakeParam({1, 0, 0, 1}, {2, 2}));
  g.head.push_back(MakeParam({0, 0}, {2}));
  SetGrad(g.body[0], {0.6f, 0.8f, 0.001f, 0});
  SetGrad(g.body[1], {0.3f, 0.4f});
  SetGrad(g.body[2], {1, 1, 1, 1, 0.001f, 0.001f, 0.001f, 0.001f});
  SetGrad(g.head[0], {10, 0, 0, 10});
  SetGrad(g.head[1], {1, 1});
  std::vector<std::vector<double>> before;
  for (auto* p : All(g)) before.push_back(ToVector(*p));

  SgdHyper h;
  h.agc_clip = 0.01;
  auto optimizer = MustMake(SgdSpec(h), g);
  ASSERT_TRUE(optimizer);
  optimizer->Step(1.0);

  const std::vector<std::vector<double>> expected_update = {
      {0.03, 0.04, 0.001, 0},
      {6e-6, 8e-6},
      {0.005, 0.005, 0.005, 0.005, 0.001, 0.001, 0.001, 0.001},
      {10, 0, 0, 10},
      {1, 1},
  };
  const std::vector<torch::Tensor*> params = All(g);
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "param " << i);
    const std::vector<double> after = ToVector(*params[i]);
    for (size_t k = 0; k < after.size(); ++k) {
      const double update = before[i][k] - after[k];
      EXPECT_NEAR(update, expected_update[i][k],
                  1e-6 * std::max(1.0, std::abs(expected_update[i][k])) + 1e-11)
          << "element " << k;
    }
  }
  // The caller's gradients are still the raw ones.
  EXPECT_NEAR(g.body[0].grad()[0][0].item<double>(), 0.6, 1e-7);
  EXPECT_NEAR(g.body[1].grad()[1].item<double>(), 0.4, 1e-7);
}

TEST_F(OptimizerTest, SgdWeightDecayIsCoupledPerGroupAndNotClipped) {
  // Zero gradients: the whole update is lr·wd·θ. AGC (λ = 0.01 < wd = 0.1)
  // would shrink it if decay were added before clipping.
  ParamGroups groups = SmallGroups();
  for (auto* p : All(groups)) SetGrad(*p, std::vector<float>(p->numel(), 0));
  std::vector<std::vector<double>> before;
  for (auto* p : All(groups)) before.push_back(ToVector(*p));
  SgdHyper h;
  h.agc_clip = 0.01;
  h.weight_decay = 0.1;
  h.head_weight_decay = 2.0;
  auto optimizer = MustMake(SgdSpec(h), groups);
  ASSERT_TRUE(optimizer);
  optimizer->Step(0.25);
  const std::vector<torch::Tensor*> params = All(groups);
  for (size_t i = 0; i < params.size(); ++i) {
    const double wd = i < groups.body.size() ? 0.1 : 2.0;
    const std::vector<double> after = ToVector(*params[i]);
    for (size_t k = 0; k < after.size(); ++k) {
      EXPECT_NEAR(after[k], before[i][k] * (1 - 0.25 * wd), 1e-7)
          << "param " << i << " element " << k;
    }
  }
}

// ---------------------------------------------------------------------------
// AdamW.

TEST_F(OptimizerTest, AdamWWeightDecayIsDecoupledPerGroup) {
  // Zero gradients keep both moments at 0, so the Adam term is 0/(0+ε) = 0
  // and only the decoupled decay lr·wd·θ moves the weights.
  ParamGroups groups = SmallGroups();
  for (auto* p : All(groups)) SetGrad(*p, std::vector<float>(p->numel(), 0));
  std::vector<std::vector<double>> before;
  for (auto* p : All(groups)) before.push_back(ToVector(*p));
  AdamWHyper h;
  h.weight_decay = 0.1;
  h.head_weight_decay = 2.0;
  auto optimizer = MustMake(AdamWSpec(h), groups);
  ASSERT_TRUE(optimizer);
  optimizer->Step(0.25);
  const std::vector<torch::Tensor*> params = All(groups);
  for (size_t i = 0; i < params.size(); ++i) {
    const double wd = i < groups.body.size() ? 0.1 : 2.0;
    const std::vector<double> after = ToVector(*params[i]);
    for (size_t k = 0; k < after.size(); ++k) {
      EXPECT_NEAR(after[k], before[i][k] * (1 - 0.25 * wd), 1e-7)
          << "param " << i << " element " << k;
    }
  }
}

TEST_F(OptimizerTest, AdamWStoresFirstMomentInBf16RoundedEachStep) {
  // β1 = 3/4 and gradients with few significant bits keep every fp32 value of
  // m exact, so the bf16 rounding is unambiguous and m must match the
  // reference bit for bit; the weights match to float precision.
  ParamGroups groups;
  groups.body.push_back(MakeParam({0.5f, -0.25f, 0.75f, 1.0f}, {2, 2}));
  groups.head.push_back(MakeParam({0.125f, -0.5f}, {2}));
  AdamWHyper h;
  h.beta1 = 0.75;
  h.beta2 = 0.99;
  h.epsilon = 1e-6;
  h.weight_decay = 0.01;
  h.head_weight_decay = 0.1;
  auto optimizer = MustMake(AdamWSpec(h), groups);
  ASSERT_TRUE(optimizer);
  std::vector<RefParam> refs = Refs(groups);
  const std::vector<torch::Tensor*> params = All(groups);
  // Gradients are multiples of 1/64 in (-2, 2]: at most 8 significant bits.
  auto grad = [](size_t step, size_t i, int64_t k) {
    const int64_t n = static_cast<int64_t>((step * 31 + i * 17 + k * 7) * 37);
    return static_cast<float>(n % 255 - 127) / 64.0f;
  };
  constexpr size_t kSteps = 8;
  const double lr = 0.01;
  int total_rounded = 0;
  for (size_t step = 0; step < kSteps; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      std::vector<float> g(params[i]->numel());
      for (int64_t k = 0; k < params[i]->numel(); ++k) g[k] = grad(step, i, k);
      SetGrad(*params[i], g);
      total_rounded += RefAdamWStep(refs[i], ToVector(params[i]->grad()), lr,
                                    step + 1, h, /*bf16_m=*/true);
    }
    optimizer->Step(lr);
    const NamedTensors state = optimizer->StateTensors();
    EXPECT_EQ(Find(state, "adamw/step").item<int64_t>(),
              static_cast<int64_t>(step + 1));
    for (size_t i = 0; i < params.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "step " << step << " param " << i);
      const std::string key = i == 0 ? "body/0" : "head/0";
      const torch::Tensor& m = Find(state, "adamw/m/" + key);
      ASSERT_EQ(m.scalar_type(), torch::kBFloat16);
      EXPECT_EQ(ToVector(m), refs[i].m);  // Exact.
      const torch::Tensor& v = Find(state, "adamw/v/" + key);
      ASSERT_EQ(v.scalar_type(), torch::kFloat);
      const std::vector<double> got_v = ToVector(v);
      for (size_t k = 0; k < got_v.size(); ++k) {
        EXPECT_NEAR(got_v[k], refs[i].v[k], 1e-5 * refs[i].v[k]);
      }
      const std::vector<double> got_w = ToVector(*params[i]);
      for (size_t k = 0; k < got_w.size(); ++k) {
        EXPECT_NEAR(got_w[k], refs[i].w[k], 1e-6);
      }
    }
  }
  // Rounding changed m in most of the 48 element-steps: with fp32 storage
  // the exact comparisons above would fail.
  EXPECT_GT(total_rounded, 24);
}

TEST_F(OptimizerTest, AdamWBf16MomentMeasurablyDiffersFromFp32OverManySteps) {
  // Over a few hundred steps with β1 = 0.9 the bf16 first moment drifts
  // measurably from an fp32 one; the optimizer must follow the bf16
  // reference, an order of magnitude closer than the fp32 one.
  ParamGroups groups = SmallGroups();
  AdamWHyper h;
  h.weight_decay = 0.05;
  h.head_weight_decay = 0.5;
  auto optimizer = MustMake(AdamWSpec(h), groups);
  ASSERT_TRUE(optimizer);
  std::vector<RefParam> bf16_refs = Refs(groups);
  std::vector<RefParam> fp32_refs = Refs(groups);
  const std::vector<torch::Tensor*> params = All(groups);
  const double lr = 1e-2;
  for (int step = 0; step < 300; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      // A persistent direction plus noise, so m is neither 0 nor constant.
      std::vector<double> g = GradFor(i, step, params[i]->numel(), 0.3);
      for (size_t k = 0; k < g.size(); ++k) g[k] += 0.1 * (k % 3) - 0.1;
      SetGrad(*params[i], ToFloats(g));
      const std::vector<double> gf = ToVector(params[i]->grad());
      RefAdamWStep(bf16_refs[i], gf, lr, step + 1, h, /*bf16_m=*/true);
      RefAdamWStep(fp32_refs[i], gf, lr, step + 1, h, /*bf16_m=*/false);
    }
    optimizer->Step(lr);
  }
  double to_bf16 = 0, to_fp32 = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::vector<double> got = ToVector(*params[i]);
    to_bf16 = std::max(to_bf16, MaxAbsDiff(got, bf16_refs[i].w));
    to_fp32 = std::max(to_fp32, MaxAbsDiff(got, fp32_refs[i].w));
  }
  RecordProperty("max_abs_diff_to_bf16_reference", std::to_string(to_bf16));
  RecordProperty("max_abs_diff_to_fp32_reference", std::to_string(to_fp32));
  EXPECT_GT(to_fp32, 1e-4);
  EXPECT_LT(to_bf16, to_fp32 / 10);
}

// ---------------------------------------------------------------------------
// State.

// Runs `steps` steps with deterministic gradients, starting at `first_step`.
void RunSteps(ParamGroups& groups, Optimizer& optimizer, int first_step,
              int steps) {
  std::vector<torch::Tensor*> params = All(groups);
  for (int step = first_step; step < first_step + steps; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      SetGrad(*params[i], ToFloats(GradFor(i, step, params[i]->numel(), 0.2)));
    }
    optimizer.Step(0.05);
  }
}

ParamGroups CloneGroups(const ParamGroups& groups) {
  ParamGroups copy;
  for (const auto& t : groups.body) {
    copy.body.push_back(t.detach().clone().requires_grad_(true));
  }
  for (const auto& t : groups.head) {
    copy.head.push_back(t.detach().clone().requires_grad_(true));
  }
  return copy;
}

TEST_F(OptimizerTest, StateRoundTripGivesBitIdenticalContinuedUpdates) {
  SgdHyper sgd;
  sgd.momentum = 0.9;
  sgd.nesterov = true;
  sgd.agc_clip = 0.02;
  sgd.weight_decay = 1e-3;
  sgd.head_weight_decay = 1e-2;
  AdamWHyper adamw;
  adamw.weight_decay = 1e-3;
  adamw.head_weight_decay = 1e-2;
  for (const v1::OptimizerSpec& spec : {SgdSpec(sgd), AdamWSpec(adamw)}) {
    SCOPED_TRACE(spec.ShortDebugString());
    ParamGroups original = SmallGroups();
    auto first = MustMake(spec, original);
    ASSERT_TRUE(first);
    RunSteps(original, *first, 0, 4);

    // "Restart": fresh parameters and optimizer, loaded from the snapshot.
    ParamGroups resumed = CloneGroups(original);
    auto second = MustMake(spec, resumed);
    ASSERT_TRUE(second);
    const NamedTensors snapshot = first->StateTensors();
    ASSERT_TRUE(second->LoadStateTensors(snapshot).ok());

    RunSteps(original, *first, 4, 5);
    RunSteps(resumed, *second, 4, 5);
    const std::vector<torch::Tensor*> a = All(original);
    const std::vector<torch::Tensor*> b = All(resumed);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(*a[i], *b[i])) << "param " << i;
    }
    const NamedTensors state_a = first->StateTensors();
    const NamedTensors state_b = second->StateTensors();
    ASSERT_EQ(state_a.size(), state_b.size());
    for (size_t i = 0; i < state_a.size(); ++i) {
      EXPECT_EQ(state_a[i].first, state_b[i].first);
      EXPECT_TRUE(torch::equal(state_a[i].second, state_b[i].second))
          << state_a[i].first;
    }
    // The snapshot was a copy: the 5 further steps did not change it.
    for (size_t i = 0; i < snapshot.size(); ++i) {
      if (snapshot[i].second.dim() == 0) continue;  // The step count.
      EXPECT_FALSE(torch::equal(snapshot[i].second, state_a[i].second))
          << snapshot[i].first;
    }
  }
}

TEST_F(OptimizerTest, StateTensorsNamesShapesAndDtypes) {
  ParamGroups groups = SmallGroups();
  auto sgd = MustMake(SgdSpec({}), groups);
  ASSERT_TRUE(sgd);
  const NamedTensors sgd_state = sgd->StateTensors();
  ASSERT_EQ(sgd_state.size(), 5u);
  EXPECT_EQ(sgd_state[0].first, "sgd/momentum/body/0");
  EXPECT_EQ(sgd_state[4].first, "sgd/momentum/head/1");
  EXPECT_EQ(sgd_state[2].second.sizes(), groups.body[2].sizes());

  auto adamw = MustMake(AdamWSpec({}), groups);
  ASSERT_TRUE(adamw);
  const NamedTensors adamw_state = adamw->StateTensors();
  ASSERT_EQ(adamw_state.size(), 11u);
  EXPECT_EQ(Find(adamw_state, "adamw/step").scalar_type(), torch::kLong);
  EXPECT_EQ(Find(adamw_state, "adamw/step").item<int64_t>(), 0);
  EXPECT_EQ(Find(adamw_state, "adamw/m/head/0").scalar_type(),
            torch::kBFloat16);
  EXPECT_EQ(Find(adamw_state, "adamw/v/body/2").sizes(),
            groups.body[2].sizes());
}

TEST_F(OptimizerTest, LoadStateTensorsRefusesMismatchesAndKeepsItsState) {
  ParamGroups groups = SmallGroups();
  auto optimizer = MustMake(AdamWSpec({}), groups);
  ASSERT_TRUE(optimizer);
  RunSteps(groups, *optimizer, 0, 2);
  const NamedTensors good = optimizer->StateTensors();

  struct Case {
    std::string what;
    NamedTensors state;
    std::string message;  // Must appear in the error.
  };
  std::vector<Case> cases;
  {
    NamedTensors s = good;
    s.erase(s.begin() + 3);
    cases.push_back({"missing", s, "missing \"" + good[3].first + "\""});
  }
  {
    NamedTensors s = good;
    s.emplace_back("adamw/m/body/9", torch::zeros({2}, torch::kBFloat16));
    cases.push_back({"extra", s, "unexpected \"adamw/m/body/9\""});
  }
  {
    NamedTensors s = good;
    for (auto& [name, t] : s) {
      if (name == "adamw/v/body/0") t = torch::zeros({3, 2});
    }
    cases.push_back(
        {"shape", s, "\"adamw/v/body/0\" has shape [3, 2], want [2, 3]"});
  }
  {
    NamedTensors s = good;
    for (auto& [name, t] : s) {
      if (name == "adamw/m/head/1") t = t.to(torch::kFloat);
    }
    cases.push_back({"dtype", s, "\"adamw/m/head/1\" has dtype Float"});
  }
  {
    NamedTensors s = good;
    s.push_back(good[1]);
    cases.push_back({"duplicate", s, "appears twice"});
  }
  {
    NamedTensors s = good;
    for (auto& [name, t] : s) {
      if (name == "adamw/step") t = torch::full({}, -3, torch::kLong);
    }
    cases.push_back({"negative step", s, "negative"});
  }
  {
    ParamGroups other = SmallGroups();
    auto sgd = MustMake(SgdSpec({}), other);
    ASSERT_TRUE(sgd);
    cases.push_back(
        {"other optimizer", sgd->StateTensors(), "missing \"adamw/step\""});
  }
  // Where the error is detected late (after other tensors were checked),
  // nothing may have been copied: change every value to make that visible.
  for (Case& c : cases) {
    for (auto& [name, t] : c.state) {
      if (t.dim() > 0 && t.is_floating_point()) t = t + 1;
    }
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const absl::Status status = optimizer->LoadStateTensors(c.state);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(status.message().find(c.message), std::string::npos)
        << status.message();
    const NamedTensors now = optimizer->StateTensors();
    ASSERT_EQ(now.size(), good.size());
    for (size_t i = 0; i < now.size(); ++i) {
      EXPECT_TRUE(torch::equal(now[i].second, good[i].second)) << now[i].first;
    }
  }
}

// ---------------------------------------------------------------------------
// Construction and odds and ends.

TEST_F(OptimizerTest, MakeOptimizerRefusesInvalidSpecsAndParams) {
  ParamGroups groups = SmallGroups();
  std::vector<std::pair<std::string, v1::OptimizerSpec>> bad;
  bad.emplace_back("none set", v1::OptimizerSpec());
  {
    SgdHyper h;
    h.momentum = 1.0;
    bad.emplace_back("momentum 1", SgdSpec(h));
  }
  {
    SgdHyper h;
    h.agc_clip = -0.1;
    bad.emplace_back("negative clip", SgdSpec(h));
  }
  {
    SgdHyper h;
    h.weight_decay = -1e-4;
    bad.emplace_back("negative wd", SgdSpec(h));
  }
  {
    SgdHyper h;
    h.head_weight_decay = std::nan("");
    bad.emplace_back("nan head wd", SgdSpec(h));
  }
  {
    AdamWHyper h;
    h.beta2 = 1.0;
    bad.emplace_back("beta2 1", AdamWSpec(h));
  }
  {
    AdamWHyper h;
    h.beta1 = -0.1;
    bad.emplace_back("negative beta1", AdamWSpec(h));
  }
  {
    AdamWHyper h;
    h.epsilon = 0;
    bad.emplace_back("epsilon 0", AdamWSpec(h));
  }
  for (const auto& [what, spec] : bad) {
    SCOPED_TRACE(what);
    EXPECT_EQ(MakeOptimizer(spec, groups).status().code(),
              absl::StatusCode::kInvalidArgument);
  }

  ParamGroups doubled = SmallGroups();
  doubled.head.push_back(doubled.body[0]);
  EXPECT_EQ(MakeOptimizer(SgdSpec({}), doubled).status().code(),
            absl::StatusCode::kInvalidArgument);
  ParamGroups half = SmallGroups();
  half.body[1] = half.body[1].detach().to(torch::kHalf);
  EXPECT_EQ(MakeOptimizer(SgdSpec({}), half).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(OptimizerTest, ParameterWithoutGradientIsLeftAlone) {
  for (const v1::OptimizerSpec& spec : {SgdSpec({0.9, true, 0.01, 0.1, 0.1}),
                                        AdamWSpec({0.9, 0.999, 1e-8, 0.1})}) {
    SCOPED_TRACE(spec.ShortDebugString());
    ParamGroups groups = SmallGroups();
    SetGrad(groups.body[0], std::vector<float>(6, 0.1f));
    const torch::Tensor before = groups.body[1].detach().clone();
    auto optimizer = MustMake(spec, groups);
    ASSERT_TRUE(optimizer);
    const torch::Tensor body0 = groups.body[0].detach().clone();
    optimizer->Step(0.1);
    EXPECT_TRUE(torch::equal(groups.body[1], before));
    EXPECT_FALSE(torch::equal(groups.body[0], body0));
  }
}

// The fused one-pass update (contiguous CPU float32) and the tensor
// expression (anything else, here a transposed view) are the same math.
TEST_F(OptimizerTest, SgdFusedPassMatchesTheTensorPath) {
  for (const bool nesterov : {true, false}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "heavy ball");
    torch::manual_seed(5);
    const torch::Tensor start = torch::randn({6, 5});
    const torch::Tensor fused = start.clone().requires_grad_();
    // Same values, transposed storage: not contiguous, so not fused.
    const torch::Tensor strided =
        start.t().contiguous().t().detach().requires_grad_();
    ASSERT_FALSE(strided.is_contiguous());
    ParamGroups a{{fused}, {}};
    ParamGroups b{{strided}, {}};
    const v1::OptimizerSpec spec = SgdSpec({0.9, nesterov, 0.0, 0.05, 0.0});
    auto fused_optimizer = MustMake(spec, a);
    auto tensor_optimizer = MustMake(spec, b);
    ASSERT_TRUE(fused_optimizer && tensor_optimizer);
    for (int step = 0; step < 5; ++step) {
      const torch::Tensor grad = torch::randn({6, 5});
      fused.mutable_grad() = grad.clone();
      strided.mutable_grad() = grad.t().contiguous().t();
      fused_optimizer->Step(0.1);
      tensor_optimizer->Step(0.1);
    }
    EXPECT_TRUE(torch::allclose(fused, strided, /*rtol=*/1e-6, /*atol=*/1e-6))
        << (fused - strided).abs().max().item<float>();
    EXPECT_FALSE(torch::equal(fused, start));
  }
}

TEST_F(OptimizerTest, GlobalGradNormIsTheNormOverAllDefinedGradients) {
  ParamGroups groups = SmallGroups();
  SetGrad(groups.body[0], {1, 2, 0, 0, 0, 0});        // 5
  SetGrad(groups.body[2], {0, 0, 0, 0, 0, 0, 0, 4});  // 16
  SetGrad(groups.head[1], {-1, 3});                   // 10
  // body[1] and head[0] have no gradient.
  EXPECT_NEAR(GlobalGradNorm(groups), std::sqrt(31.0), 1e-6);
}

// ---------------------------------------------------------------------------
// End to end: model + loss + schedule + optimizer learn something.

TEST_F(OptimizerTest, MlpWithSgdLearnsALinearlySeparableProblem) {
  const auto start = std::chrono::steady_clock::now();
  // 256 points in [0,1]^16 (as 1x4x4 images) labelled by a random hyperplane
  // through the cube's centre, keeping a margin so the problem is separable
  // with room to spare.
  torch::manual_seed(1234);
  const torch::Tensor direction = torch::randn({16});
  std::vector<torch::Tensor> kept;
  while (kept.size() < 256) {
    const torch::Tensor x = torch::rand({16});
    const double side = ((x - 0.5) * direction).sum().item<double>() /
                        direction.norm().item<double>();
    if (std::abs(side) >= 0.1) kept.push_back(x);
  }
  const torch::Tensor flat = torch::stack(kept);
  const torch::Tensor images = flat.view({256, 1, 4, 4});
  const torch::Tensor labels =
      (((flat - 0.5) * direction).sum(1) > 0).to(torch::kLong);
  // Both classes present in reasonable numbers.
  const int64_t positives = labels.sum().item<int64_t>();
  ASSERT_GT(positives, 64);
  ASSERT_LT(positives, 192);

  v1::ModelSpec model_spec;
  model_spec.set_name("mlp");
  model_spec.add_hidden(32);
  model_spec.set_num_classes(2);
  model_spec.set_loss(v1::ModelSpec::SOFTMAX_CROSS_ENTROPY);
  auto built = BuildModel(model_spec, ImageShape{4, 4, 1}, /*seed=*/7);
  ASSERT_TRUE(built.ok()) << built.status();
  std::shared_ptr<Model> model = *built;
  SgdHyper h;
  h.momentum = 0.9;
  h.nesterov = true;
  h.agc_clip = 0.1;
  h.weight_decay = 1e-4;
  auto optimizer = MustMake(SgdSpec(h), GroupParameters(*model));
  ASSERT_TRUE(optimizer);
  v1::ScheduleSpec schedule;
  schedule.set_base_learning_rate(0.5);
  schedule.set_warmup_steps(10);
  schedule.set_decay(v1::ScheduleSpec::COSINE);

  constexpr int kSteps = 300;
  for (int step = 0; step < kSteps; ++step) {
    model->zero_grad();
    const torch::Tensor loss =
        SummedLoss(model->forward(images), labels, model_spec.loss()) / 256;
    loss.backward();
    optimizer->Step(LearningRate(schedule, step, kSteps));
  }
  torch::NoGradGuard no_grad;
  const double accuracy = (model->forward(images).argmax(1) == labels)
                              .to(torch::kDouble)
                              .mean()
                              .item<double>();
  EXPECT_GT(accuracy, 0.95);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  RecordProperty("accuracy", std::to_string(accuracy));
  EXPECT_LT(seconds, 5.0);
}

}  // namespace
}  // namespace podtrain::worker
