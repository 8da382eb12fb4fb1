// Tests of JobSpec defaults, validation and step counting: plain functions on
// protos, no RPC.

#include "coordinator/job_spec.h"

#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace podtrain::coordinator {
namespace {

using ::google::protobuf::TextFormat;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::StartsWith;

v1::JobSpec ParseSpec(const std::string& text) {
  v1::JobSpec spec;
  EXPECT_TRUE(TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

// The Fashion-MNIST recipe, as a user would submit it.
v1::JobSpec FashionMnistSpec() {
  return ParseSpec(R"pb(
    display_name: "fashion-mnist mlp"
    dataset: "/data/fashion_mnist/train.manifest"
    model { name: "mlp" hidden: 1024 hidden: 1024 num_classes: 10 }
    optimizer { sgd { momentum: 0.9 nesterov: true } }
    schedule { base_learning_rate: 0.05 decay: COSINE }
    global_batch: 256
    epochs: 5
    min_workers: 1
    max_workers: 2
    checkpoint { directory: "/tmp/x" }
  )pb");
}

void ExpectProtoEq(const v1::JobSpec& actual, const v1::JobSpec& expected) {
  EXPECT_TRUE(MessageDifferencer::Equals(actual, expected))
      << "actual:\n"
      << actual.DebugString() << "expected:\n"
      << expected.DebugString();
}

TEST(NormalizeJobSpecTest, FashionMnistRecipeGetsDefaults) {
  absl::StatusOr<v1::JobSpec> normalized = NormalizeJobSpec(FashionMnistSpec());
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  ExpectProtoEq(*normalized, ParseSpec(R"pb(
    display_name: "fashion-mnist mlp"
    dataset: "/data/fashion_mnist/train.manifest"
    model {
      name: "mlp"
      hidden: 1024
      hidden: 1024
      num_classes: 10
      loss: SOFTMAX_CROSS_ENTROPY
    }
    optimizer { sgd { momentum: 0.9 nesterov: true } }
    schedule { base_learning_rate: 0.05 decay: COSINE }
    global_batch: 256
    epochs: 5
    min_workers: 1
    max_workers: 2
    checkpoint { directory: "/tmp/x" interval_steps: 100 keep: 3 }
    restart_budget: 10
  )pb"));
}

TEST(NormalizeJobSpecTest, FillsEveryDefault) {
  absl::StatusOr<v1::JobSpec> normalized = NormalizeJobSpec(ParseSpec(R"pb(
    dataset: "d"
    model { name: "cnn" }
    optimizer { adamw {} }
    schedule { base_learning_rate: 0.001 }
    global_batch: 8
    steps: 10
    min_workers: 3
    checkpoint { directory: "/c" }
    eval { dataset: "e" }
  )pb"));
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  ExpectProtoEq(*normalized, ParseSpec(R"pb(
    dataset: "d"
    model {
      name: "cnn"
      hidden: 32
      hidden: 64
      num_classes: 10
      loss: SOFTMAX_CROSS_ENTROPY
    }
    optimizer { adamw { beta1: 0.9 beta2: 0.999 epsilon: 1e-8 } }
    schedule { base_learning_rate: 0.001 decay: COSINE }
    global_batch: 8
    steps: 10
    min_workers: 3
    max_workers: 3
    checkpoint { directory: "/c" interval_steps: 100 keep: 3 }
    eval { dataset: "e" interval_steps: 500 }
    restart_budget: 10
  )pb"));
}

TEST(NormalizeJobSpecTest, KeepsExplicitValues) {
  v1::JobSpec spec = ParseSpec(R"pb(
    dataset: "d"
    model { name: "cnn" hidden: 8 num_classes: 2 loss: SIGMOID_CROSS_ENTROPY }
    optimizer {
      adamw { beta1: 0.5 beta2: 0.9 epsilon: 1e-6 }
      weight_decay: 0.1
      head_weight_decay: 0
    }
    schedule {
      base_learning_rate: 1
      warmup_steps: 5
      decay: RSQRT
      cooldown_steps: 7
    }
    global_batch: 16777216
    epochs: 1000000
    seed: 18446744073709551615
    min_workers: 2
    max_workers: 4096
    checkpoint { directory: "/c" interval_steps: 1 keep: 1 }
    eval { dataset: "e" interval_steps: 1 }
    restart_budget: 1
  )pb");
  absl::StatusOr<v1::JobSpec> normalized = NormalizeJobSpec(spec);
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  ExpectProtoEq(*normalized, spec);
}

TEST(NormalizeJobSpecTest, SgdMomentumZeroStaysPlainSgd) {
  v1::JobSpec spec = FashionMnistSpec();
  spec.mutable_optimizer()->mutable_sgd()->set_momentum(0);
  absl::StatusOr<v1::JobSpec> normalized = NormalizeJobSpec(spec);
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  EXPECT_EQ(normalized->optimizer().sgd().momentum(), 0);
}

TEST(NormalizeJobSpecTest, DisplayNameCountsCharactersNotBytes) {
  v1::JobSpec spec = FashionMnistSpec();
  std::string name;
  for (int i = 0; i < kMaxDisplayNameChars; ++i) name += "\xC3\xA9";  // é
  spec.set_display_name(name);
  EXPECT_TRUE(NormalizeJobSpec(spec).ok());
  spec.set_display_name(name + "x");
  EXPECT_EQ(NormalizeJobSpec(spec).status().code(),
            absl::StatusCode::kInvalidArgument);
}

struct BadFieldCase {
  std::string name;
  std::function<void(v1::JobSpec*)> mutate;
  // The message must start with this field path and contain `why`.
  std::string path;
  std::string why;
};

std::vector<BadFieldCase> BadFieldCases() {
  constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  auto sgd = [](v1::JobSpec* s) {
    return s->mutable_optimizer()->mutable_sgd();
  };
  // Setting adamw replaces the reference spec's sgd (a oneof).
  auto adamw = [](v1::JobSpec* s) {
    return s->mutable_optimizer()->mutable_adamw();
  };
  auto schedule = [](v1::JobSpec* s) { return s->mutable_schedule(); };
  return {
      {"DisplayNameTooLong",
       [](v1::JobSpec* s) { s->set_display_name(std::string(201, 'a')); },
       "spec.display_name", "at most 200 characters, got 201"},
      {"DatasetEmpty", [](v1::JobSpec* s) { s->clear_dataset(); },
       "spec.dataset", "must not be empty"},
      {"ModelUnknown",
       [](v1::JobSpec* s) { s->mutable_model()->set_name("resnet"); },
       "spec.model.name", "unknown model \"resnet\"; known models: cnn, mlp"},
      {"ModelMissing", [](v1::JobSpec* s) { s->clear_model(); },
       "spec.model.name", "known models: cnn, mlp"},
      {"HiddenZero",
       [](v1::JobSpec* s) { s->mutable_model()->set_hidden(1, 0); },
       "spec.model.hidden[1]", "must be >= 1, got 0"},
      {"HiddenNegative",
       [](v1::JobSpec* s) { s->mutable_model()->set_hidden(0, -5); },
       "spec.model.hidden[0]", "must be >= 1, got -5"},
      {"HiddenTooMany",
       [](v1::JobSpec* s) {
         for (int i = 0; i < 15; ++i) s->mutable_model()->add_hidden(8);
       },
       "spec.model.hidden", "at most 16 entries, got 17"},
      {"MlpWithoutHidden",
       [](v1::JobSpec* s) { s->mutable_model()->clear_hidden(); },
       "spec.model.hidden", "mlp needs at least one hidden layer"},
      {"OneClass",
       [](v1::JobSpec* s) { s->mutable_model()->set_num_classes(1); },
       "spec.model.num_classes", "must be >= 2, got 1"},
      {"LossUnknown",
       [](v1::JobSpec* s) {
         s->mutable_model()->set_loss(static_cast<v1::ModelSpec::Loss>(7));
       },
       "spec.model.loss", "unknown value 7"},
      {"NoOptimizer",
       [](v1::JobSpec* s) { s->mutable_optimizer()->clear_sgd(); },
       "spec.optimizer", "set exactly one of sgd or adamw"},
      {"MomentumOne", [=](v1::JobSpec* s) { sgd(s)->set_momentum(1); },
       "spec.optimizer.sgd.momentum", "must be in [0, 1), got 1"},
      {"MomentumNegative", [=](v1::JobSpec* s) { sgd(s)->set_momentum(-0.1); },
       "spec.optimizer.sgd.momentum", "must be in [0, 1), got -0.1"},
      {"MomentumNan", [=](v1::JobSpec* s) { sgd(s)->set_momentum(kNan); },
       "spec.optimizer.sgd.momentum", "must be finite, got nan"},
      {"AgcClipNegative", [=](v1::JobSpec* s) { sgd(s)->set_agc_clip(-1); },
       "spec.optimizer.sgd.agc_clip", "must be >= 0, got -1"},
      {"AgcClipInf", [=](v1::JobSpec* s) { sgd(s)->set_agc_clip(kInf); },
       "spec.optimizer.sgd.agc_clip", "must be finite, got inf"},
      {"Beta1One", [=](v1::JobSpec* s) { adamw(s)->set_beta1(1); },
       "spec.optimizer.adamw.beta1", "must be in [0, 1), got 1"},
      {"Beta2Nan", [=](v1::JobSpec* s) { adamw(s)->set_beta2(kNan); },
       "spec.optimizer.adamw.beta2", "must be finite"},
      {"Beta2Negative", [=](v1::JobSpec* s) { adamw(s)->set_beta2(-0.5); },
       "spec.optimizer.adamw.beta2", "must be in [0, 1), got -0.5"},
      {"EpsilonNegative", [=](v1::JobSpec* s) { adamw(s)->set_epsilon(-1e-8); },
       "spec.optimizer.adamw.epsilon", "must be > 0"},
      {"EpsilonInf", [=](v1::JobSpec* s) { adamw(s)->set_epsilon(kInf); },
       "spec.optimizer.adamw.epsilon", "must be finite"},
      {"WeightDecayNegative",
       [](v1::JobSpec* s) { s->mutable_optimizer()->set_weight_decay(-1); },
       "spec.optimizer.weight_decay", "must be >= 0, got -1"},
      {"WeightDecayNan",
       [](v1::JobSpec* s) { s->mutable_optimizer()->set_weight_decay(kNan); },
       "spec.optimizer.weight_decay", "must be finite"},
      {"HeadWeightDecayNegative",
       [](v1::JobSpec* s) {
         s->mutable_optimizer()->set_head_weight_decay(-0.5);
       },
       "spec.optimizer.head_weight_decay", "must be >= 0, got -0.5"},
      {"LearningRateZero",
       [=](v1::JobSpec* s) { schedule(s)->set_base_learning_rate(0); },
       "spec.schedule.base_learning_rate", "must be > 0, got 0"},
      {"LearningRateNegative",
       [=](v1::JobSpec* s) { schedule(s)->set_base_learning_rate(-0.1); },
       "spec.schedule.base_learning_rate", "must be > 0, got -0.1"},
      {"LearningRateInf",
       [=](v1::JobSpec* s) { schedule(s)->set_base_learning_rate(kInf); },
       "spec.schedule.base_learning_rate", "must be finite, got inf"},
      {"LearningRateNan",
       [=](v1::JobSpec* s) { schedule(s)->set_base_learning_rate(kNan); },
       "spec.schedule.base_learning_rate", "must be finite, got nan"},
      {"WarmupNegative",
       [=](v1::JobSpec* s) { schedule(s)->set_warmup_steps(-1); },
       "spec.schedule.warmup_steps", "must be >= 0, got -1"},
      {"CooldownNegative",
       [=](v1::JobSpec* s) {
         schedule(s)->set_decay(v1::ScheduleSpec::RSQRT);
         schedule(s)->set_cooldown_steps(-1);
       },
       "spec.schedule.cooldown_steps", "must be >= 0, got -1"},
      {"CooldownWithoutRsqrt",
       [=](v1::JobSpec* s) { schedule(s)->set_cooldown_steps(10); },
       "spec.schedule.cooldown_steps",
       "must be 0 unless decay is RSQRT (the only schedule with a cooldown), "
       "got 10 with decay COSINE"},
      {"DecayUnknown",
       [=](v1::JobSpec* s) {
         schedule(s)->set_decay(static_cast<v1::ScheduleSpec::Decay>(9));
       },
       "spec.schedule.decay", "unknown value 9"},
      {"BatchZero", [](v1::JobSpec* s) { s->set_global_batch(0); },
       "spec.global_batch", "must be >= 1, got 0"},
      {"BatchNegative", [](v1::JobSpec* s) { s->set_global_batch(-256); },
       "spec.global_batch", "must be >= 1, got -256"},
      {"BatchTooLarge",
       [](v1::JobSpec* s) { s->set_global_batch((int64_t{1} << 24) + 1); },
       "spec.global_batch", "must be <= 16777216, got 16777217"},
      {"NoLength", [](v1::JobSpec* s) { s->clear_length(); }, "spec.length",
       "set exactly one of epochs or steps"},
      {"EpochsZero", [](v1::JobSpec* s) { s->set_epochs(0); }, "spec.epochs",
       "must be > 0, got 0"},
      {"EpochsNegative", [](v1::JobSpec* s) { s->set_epochs(-1); },
       "spec.epochs", "must be > 0, got -1"},
      {"EpochsNan", [](v1::JobSpec* s) { s->set_epochs(kNan); }, "spec.epochs",
       "must be finite, got nan"},
      {"EpochsInf", [](v1::JobSpec* s) { s->set_epochs(kInf); }, "spec.epochs",
       "must be finite, got inf"},
      {"EpochsTooMany", [](v1::JobSpec* s) { s->set_epochs(1e6 + 1); },
       "spec.epochs", "must be <= 1e+06, got 1000001"},
      {"StepsZero", [](v1::JobSpec* s) { s->set_steps(0); }, "spec.steps",
       "must be >= 1, got 0"},
      {"StepsNegative", [](v1::JobSpec* s) { s->set_steps(-3); }, "spec.steps",
       "must be >= 1, got -3"},
      {"MinWorkersNegative", [](v1::JobSpec* s) { s->set_min_workers(-1); },
       "spec.min_workers", "must be >= 1, got -1"},
      {"MaxBelowMin",
       [](v1::JobSpec* s) {
         s->set_min_workers(4);
         s->set_max_workers(2);
       },
       "spec.max_workers", "must be >= spec.min_workers (4), got 2"},
      {"MaxWorkersNegative", [](v1::JobSpec* s) { s->set_max_workers(-2); },
       "spec.max_workers", "must be >= spec.min_workers (1), got -2"},
      {"MaxWorkersTooMany", [](v1::JobSpec* s) { s->set_max_workers(4097); },
       "spec.max_workers", "must be <= 4096, got 4097"},
      {"MinWorkersTooMany", [](v1::JobSpec* s) { s->set_min_workers(5000); },
       "spec.min_workers", "must be <= 4096, got 5000"},
      {"CheckpointDirectoryEmpty",
       [](v1::JobSpec* s) { s->mutable_checkpoint()->clear_directory(); },
       "spec.checkpoint.directory", "must not be empty"},
      {"CheckpointMissing", [](v1::JobSpec* s) { s->clear_checkpoint(); },
       "spec.checkpoint.directory", "must not be empty"},
      {"CheckpointIntervalNegative",
       [](v1::JobSpec* s) { s->mutable_checkpoint()->set_interval_steps(-1); },
       "spec.checkpoint.interval_steps", "must be >= 1, got -1"},
      {"CheckpointKeepNegative",
       [](v1::JobSpec* s) { s->mutable_checkpoint()->set_keep(-1); },
       "spec.checkpoint.keep", "must be >= 1, got -1"},
      {"EvalIntervalWithoutDataset",
       [](v1::JobSpec* s) { s->mutable_eval()->set_interval_steps(100); },
       "spec.eval.interval_steps",
       "must be 0 when spec.eval.dataset is empty (evaluation is off), got "
       "100"},
      {"EvalIntervalNegative",
       [](v1::JobSpec* s) {
         s->mutable_eval()->set_dataset("e");
         s->mutable_eval()->set_interval_steps(-1);
       },
       "spec.eval.interval_steps", "must be >= 1, got -1"},
      {"RestartBudgetNegative",
       [](v1::JobSpec* s) { s->set_restart_budget(-1); }, "spec.restart_budget",
       "must be >= 0, got -1"},
  };
}

class BadFieldTest : public ::testing::TestWithParam<BadFieldCase> {};

TEST_P(BadFieldTest, IsInvalidArgumentNamingTheField) {
  const BadFieldCase& test_case = GetParam();
  v1::JobSpec spec = FashionMnistSpec();
  test_case.mutate(&spec);
  absl::StatusOr<v1::JobSpec> normalized = NormalizeJobSpec(spec);
  EXPECT_EQ(normalized.status().code(), absl::StatusCode::kInvalidArgument)
      << normalized.status();
  EXPECT_THAT(std::string(normalized.status().message()),
              StartsWith(absl::StrCat(test_case.path, ": ")));
  EXPECT_THAT(std::string(normalized.status().message()),
              HasSubstr(test_case.why));
}

INSTANTIATE_TEST_SUITE_P(
    NormalizeJobSpecTest, BadFieldTest, ::testing::ValuesIn(BadFieldCases()),
    [](const ::testing::TestParamInfo<BadFieldCase>& info) {
      return info.param.name;
    });

v1::JobSpec Normalized(const v1::JobSpec& spec) {
  absl::StatusOr<v1::JobSpec> normalized = NormalizeJobSpec(spec);
  EXPECT_TRUE(normalized.ok()) << normalized.status();
  return normalized.value_or(v1::JobSpec());
}

v1::JobSpec WithLength(double epochs, int64_t global_batch) {
  v1::JobSpec spec = FashionMnistSpec();
  spec.set_epochs(epochs);
  spec.set_global_batch(global_batch);
  return Normalized(spec);
}

TEST(TotalStepsTest, Steps) {
  v1::JobSpec spec = FashionMnistSpec();
  spec.set_steps(12345);
  EXPECT_EQ(TotalSteps(Normalized(spec), 60000), 12345);
}

TEST(TotalStepsTest, EpochsRoundUp) {
  EXPECT_EQ(TotalSteps(WithLength(5, 256), 60000), 1172);  // 1171.875
  EXPECT_EQ(TotalSteps(WithLength(0.5, 100), 1000), 5);
  EXPECT_EQ(TotalSteps(WithLength(1, 3), 10), 4);
  EXPECT_EQ(TotalSteps(WithLength(1, 256), 100), 1);  // batch > epoch
  EXPECT_EQ(TotalSteps(WithLength(1e-300, 1), 1), 1);
}

TEST(TotalStepsTest, ExactMultipleDoesNotRoundUp) {
  EXPECT_EQ(TotalSteps(WithLength(2, 100), 1000), 20);
  EXPECT_EQ(TotalSteps(WithLength(3, 250), 60000), 720);
  EXPECT_EQ(TotalSteps(WithLength(1e6, 1), 1000), 1'000'000'000);
}

// Values whose double is not the decimal the user wrote: naive floating point
// gives 12 for the first (1.1 * 100 / 10 = 11.000000000000002) and exact
// binary arithmetic gives 2 for the second (0.1 is 0.1000000000000000055...).
TEST(TotalStepsTest, FractionalEpochsAreReadAsWritten) {
  EXPECT_EQ(TotalSteps(WithLength(1.1, 10), 100), 11);
  EXPECT_EQ(TotalSteps(WithLength(0.1, 100), 1000), 1);
  EXPECT_EQ(TotalSteps(WithLength(0.3, 1), 10), 3);
  EXPECT_EQ(TotalSteps(WithLength(0.25, 3), 10), 1);   // 0.8333
  EXPECT_EQ(TotalSteps(WithLength(2.5, 7), 100), 36);  // 35.714
}

TEST(TotalStepsTest, HugeDatasetDoesNotOverflow) {
  // 0.25 * 4e9 / 4096 = 244140.625.
  EXPECT_EQ(TotalSteps(WithLength(0.25, 4096), 4'000'000'000), 244141);
  // 1e6 * (2^63 - 1) / 2^24 is about 5.5e17 steps: fits, exactly.
  constexpr int64_t kMaxN = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(TotalSteps(WithLength(1e6, int64_t{1} << 24), kMaxN),
            549'755'813'888'000'000);
}

TEST(TotalStepsTest, SaturatesWhenStepsDoNotFitInt64) {
  constexpr int64_t kMaxN = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(TotalSteps(WithLength(2, 1), kMaxN), kMaxN);
}

TEST(ValidateJobSpecForDatasetTest, FashionMnistIsValid) {
  EXPECT_TRUE(
      ValidateJobSpecForDataset(Normalized(FashionMnistSpec()), 60000).ok());
}

TEST(ValidateJobSpecForDatasetTest, BatchMaySpanEpochs) {
  EXPECT_TRUE(ValidateJobSpecForDataset(WithLength(1, 256), 10).ok());
}

void ExpectInvalid(const absl::Status& status, const std::string& path,
                   const std::string& why) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith(path + ": "));
  EXPECT_THAT(std::string(status.message()), HasSubstr(why));
}

TEST(ValidateJobSpecForDatasetTest, EmptyDataset) {
  const v1::JobSpec spec = Normalized(FashionMnistSpec());
  ExpectInvalid(ValidateJobSpecForDataset(spec, 0), "spec.dataset",
                "must hold >= 1 example per epoch, got 0");
  ExpectInvalid(ValidateJobSpecForDataset(spec, -1), "spec.dataset", "got -1");
}

TEST(ValidateJobSpecForDatasetTest, TooManySteps) {
  ExpectInvalid(ValidateJobSpecForDataset(WithLength(2, 1),
                                          std::numeric_limits<int64_t>::max()),
                "spec.epochs", "is more than 9223372036854775807 steps");
}

TEST(ValidateJobSpecForDatasetTest, WarmupPlusCooldownFitInTheJob) {
  v1::JobSpec spec = FashionMnistSpec();
  spec.set_steps(100);
  spec.mutable_schedule()->set_decay(v1::ScheduleSpec::RSQRT);
  spec.mutable_schedule()->set_warmup_steps(60);
  spec.mutable_schedule()->set_cooldown_steps(40);
  EXPECT_TRUE(ValidateJobSpecForDataset(Normalized(spec), 1000).ok());

  spec.mutable_schedule()->set_cooldown_steps(41);
  ExpectInvalid(ValidateJobSpecForDataset(Normalized(spec), 1000),
                "spec.schedule.warmup_steps + spec.schedule.cooldown_steps",
                "must be <= the job's 100 steps, got 60 + 41");

  spec.mutable_schedule()->set_cooldown_steps(0);
  spec.mutable_schedule()->set_warmup_steps(101);
  ExpectInvalid(ValidateJobSpecForDataset(Normalized(spec), 1000),
                "spec.schedule.warmup_steps + spec.schedule.cooldown_steps",
                "got 101 + 0");
}

TEST(ValidateJobSpecForDatasetTest, WarmupCountsEpochSteps) {
  v1::JobSpec spec = WithLength(5, 256);  // 1172 steps of 60000 examples
  spec.mutable_schedule()->set_warmup_steps(1172);
  EXPECT_TRUE(ValidateJobSpecForDataset(spec, 60000).ok());
  spec.mutable_schedule()->set_warmup_steps(1173);
  ExpectInvalid(ValidateJobSpecForDataset(spec, 60000),
                "spec.schedule.warmup_steps + spec.schedule.cooldown_steps",
                "the job's 1172 steps");
}

TEST(ValidateJobSpecForDatasetTest, HugeWarmupAndCooldownDoNotOverflow) {
  v1::JobSpec spec = FashionMnistSpec();
  spec.set_steps(100);
  spec.mutable_schedule()->set_decay(v1::ScheduleSpec::RSQRT);
  spec.mutable_schedule()->set_warmup_steps(50);
  spec.mutable_schedule()->set_cooldown_steps(
      std::numeric_limits<int64_t>::max());
  ExpectInvalid(ValidateJobSpecForDataset(Normalized(spec), 1000),
                "spec.schedule.warmup_steps + spec.schedule.cooldown_steps",
                "must be <=");
}

TEST(ValidateJobSpecForDatasetTest, EveryRankGetsAnExample) {
  v1::JobSpec spec = FashionMnistSpec();
  spec.set_global_batch(4);
  spec.set_max_workers(4);
  EXPECT_TRUE(ValidateJobSpecForDataset(Normalized(spec), 1000).ok());
  spec.set_max_workers(5);
  ExpectInvalid(ValidateJobSpecForDataset(Normalized(spec), 1000),
                "spec.max_workers",
                "must be <= spec.global_batch (4) so every rank gets >= 1 "
                "example per step, got 5");
}

}  // namespace
}  // namespace podtrain::coordinator
