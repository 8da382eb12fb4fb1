#include "worker/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "dataset/file_util.h"
#include "dataset/test_util.h"

namespace podtrain::worker {
namespace {

using dataset::JoinPath;
using dataset::testing::NewTempDir;
using dataset::testing::ReadFileOrDie;
using dataset::testing::WriteFileOrDie;
using internal::WritePhase;

constexpr uint64_t kFingerprint = 0x5eed5eed12345678ULL;
constexpr int64_t kGlobalBatch = 64;
const char* const kFiles[] = {"model.tensors", "optimizer.tensors", "MANIFEST",
                              "DONE"};

std::string StepDir(const std::string& root, int64_t step) {
  char name[32];
  snprintf(name, sizeof(name), "step-%012ld", static_cast<long>(step));
  return JoinPath(root, name);
}

bool Exists(const std::string& path) {
  struct stat info;
  return lstat(path.c_str(), &info) == 0;
}

// The names in `dir`, without "." and "..".
std::set<std::string> ListDir(const std::string& dir) {
  std::set<std::string> names;
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) return names;
  while (const dirent* entry = readdir(handle)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.insert(name);
  }
  closedir(handle);
  return names;
}

// Replaces a file's contents without the fsyncs of WriteFileOrDie: the tests
// below rewrite files thousands of times.
void Overwrite(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), contents.size());
  out.close();
  ASSERT_TRUE(out.good()) << path;
}

std::string RngBytes(const torch::Tensor& state) {
  return std::string(static_cast<const char*>(state.data_ptr()),
                     state.nbytes());
}

// The default CPU generator's state, as a trainer would checkpoint it.
std::string GetRngState() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return RngBytes(generator.get_state());
}

void SetRngState(const std::string& bytes) {
  torch::Tensor state = torch::empty({static_cast<int64_t>(bytes.size())},
                                     torch::dtype(torch::kUInt8));
  std::memcpy(state.data_ptr(), bytes.data(), bytes.size());
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// A realistic state: an MLP's parameters, SGD momentum kept in bfloat16, a
// 0-d step counter and the generator state. `variant` changes every value.
CheckpointState MakeState(int64_t step, int64_t variant = 0,
                          int64_t hidden = 32) {
  torch::manual_seed(1000 * step + variant);
  torch::nn::Sequential mlp(torch::nn::Linear(16, hidden), torch::nn::ReLU(),
                            torch::nn::Linear(hidden, 10));
  CheckpointState state;
  state.step = step;
  state.job_fingerprint = kFingerprint;
  state.generation = variant;
  state.next_stream_position = (step + 1) * kGlobalBatch;
  for (const auto& parameter : mlp->named_parameters()) {
    state.model.push_back({parameter.key(), parameter.value().detach()});
    state.optimizer.push_back(
        {parameter.key() + ".momentum",
         torch::randn_like(parameter.value()).to(torch::kBFloat16)});
  }
  state.optimizer.push_back(
      {"step_count", torch::tensor(step + 1, torch::kInt64)});
  state.rng_state = GetRngState();
  return state;
}

// The tensor's values' bytes in row-major order (lazy negation and
// conjugation applied).
std::string Bytes(const torch::Tensor& tensor) {
  const torch::Tensor contiguous =
      tensor.resolve_conj().resolve_neg().contiguous();
  if (contiguous.nbytes() == 0) return "";
  return std::string(static_cast<const char*>(contiguous.data_ptr()),
                     contiguous.nbytes());
}

// Compares names, dtypes, shapes and raw bytes: NaN payloads and signed
// zeros must survive, which torch::equal would not check.
void ExpectBitExact(const std::vector<NamedTensor>& expected,
                    const std::vector<NamedTensor>& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(expected[i].name, actual[i].name);
    EXPECT_EQ(expected[i].tensor.scalar_type(), actual[i].tensor.scalar_type());
    EXPECT_EQ(expected[i].tensor.sizes(), actual[i].tensor.sizes());
    EXPECT_TRUE(actual[i].tensor.is_contiguous());
    EXPECT_TRUE(actual[i].tensor.device().is_cpu());
    EXPECT_TRUE(Bytes(expected[i].tensor) == Bytes(actual[i].tensor));
  }
}

void ExpectSameState(const CheckpointState& expected,
                     const CheckpointState& actual) {
  EXPECT_EQ(expected.step, actual.step);
  EXPECT_EQ(expected.job_fingerprint, actual.job_fingerprint);
  EXPECT_EQ(expected.generation, actual.generation);
  EXPECT_EQ(expected.next_stream_position, actual.next_stream_position);
  EXPECT_TRUE(expected.rng_state == actual.rng_state);
  ExpectBitExact(expected.model, actual.model);
  ExpectBitExact(expected.optimizer, actual.optimizer);
}

std::string WriteOrDie(const std::string& root, const CheckpointState& state) {
  absl::StatusOr<std::string> path = WriteCheckpoint(root, state);
  EXPECT_TRUE(path.ok()) << path.status();
  return path.ok() ? *path : "";
}

// ---------------------------------------------------------------------------
// Round trips.

TEST(CheckpointTest, RoundTripIsBitExact) {
  const std::string root = NewTempDir("roundtrip");
  CheckpointState state = MakeState(7);
  // Values whose bits a lossy path would change.
  torch::Tensor special = torch::empty({6}, torch::kFloat32);
  const uint32_t bits[] = {0x7fc00001u, 0xffa00000u, 0x80000000u,
                           0x00000001u, 0x7f800000u, 0x3f800000u};
  std::memcpy(special.data_ptr(), bits, sizeof(bits));
  state.model.push_back({"special_floats", special});
  // A transposed view: stored (and compared) in row-major order.
  state.model.push_back(
      {"transposed", torch::arange(12, torch::kFloat64).reshape({3, 4}).t()});

  const std::string path = WriteOrDie(root, state);
  EXPECT_EQ(path, StepDir(root, 7));
  EXPECT_TRUE(Exists(JoinPath(path, "DONE")));
  // Only the checkpoint: no temporary directory or file left anywhere.
  EXPECT_EQ(ListDir(root), std::set<std::string>{"step-000000000007"});
  EXPECT_EQ(ListDir(path),
            (std::set<std::string>{"DONE", "MANIFEST", "model.tensors",
                                   "optimizer.tensors"}));

  absl::StatusOr<CheckpointState> loaded = ReadCheckpoint(path, kFingerprint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameState(state, *loaded);

  // The restored generator continues the same random stream.
  const torch::Tensor expected_draw = torch::randn({8});
  SetRngState(loaded->rng_state);
  const torch::Tensor restored_draw = torch::randn({8});
  SetRngState(state.rng_state);
  EXPECT_TRUE(torch::equal(torch::randn({8}), restored_draw));
  EXPECT_TRUE(torch::equal(expected_draw, restored_draw));

  // The loaded model tensors load into a fresh module.
  torch::nn::Sequential mlp(torch::nn::Linear(16, 32), torch::nn::ReLU(),
                            torch::nn::Linear(32, 10));
  torch::NoGradGuard no_grad;
  auto parameters = mlp->named_parameters();
  for (const NamedTensor& named : loaded->model) {
    if (parameters.contains(named.name)) {
      parameters[named.name].copy_(named.tensor);
    }
  }
  EXPECT_TRUE(torch::equal(parameters["0.weight"], state.model[0].tensor));
}

TEST(CheckpointTest, EveryDtypeAndZeroDimTensorRoundTrips) {
  const std::string root = NewTempDir("dtypes");
  const torch::ScalarType types[] = {
      torch::kFloat32, torch::kBFloat16,     torch::kFloat64,
      torch::kInt64,   torch::kInt32,        torch::kUInt8,
      torch::kFloat16, torch::kInt8,         torch::kInt16,
      torch::kBool,    torch::kComplexFloat, torch::kComplexDouble};
  CheckpointState state;
  state.step = 0;
  state.next_stream_position = kGlobalBatch;
  state.job_fingerprint = kFingerprint;
  torch::manual_seed(3);
  for (const torch::ScalarType type : types) {
    const std::string name = c10::toString(type);
    torch::Tensor matrix = (torch::randn({2, 3}) * 100).to(type);
    if (type == torch::kBool) matrix = torch::randn({2, 3}) > 0;
    state.model.push_back({name + "/matrix", matrix});
    state.model.push_back({name + "/scalar", matrix.flatten()[1]});  // 0-d
    state.model.push_back({name + "/empty", torch::empty({0, 5}, type)});
  }
  // A negative-bit view, lazily negated: its values must be stored.
  const torch::Tensor base = torch::randn({4});
  state.optimizer.push_back({"negated", torch::_neg_view(base)});
  state.optimizer.push_back(
      {"conjugated", torch::randn({3}, torch::kComplexFloat).conj()});

  const std::string path = WriteOrDie(root, state);
  absl::StatusOr<CheckpointState> loaded = ReadCheckpoint(path, kFingerprint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameState(state, *loaded);
  for (const NamedTensor& named : loaded->model) {
    if (absl::EndsWith(named.name, "/scalar")) {
      EXPECT_EQ(named.tensor.dim(), 0) << named.name;
    }
  }
  EXPECT_TRUE(torch::equal(loaded->optimizer[0].tensor, -base));
}

TEST(CheckpointTest, EmptyTensorListsRoundTrip) {
  const std::string root = NewTempDir("empty");
  CheckpointState state;
  state.step = 3;
  state.next_stream_position = 4;
  state.job_fingerprint = kFingerprint;
  const std::string path = WriteOrDie(root, state);
  absl::StatusOr<CheckpointState> loaded = ReadCheckpoint(path, kFingerprint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameState(state, *loaded);
}

// ---------------------------------------------------------------------------
// Refusals.

TEST(CheckpointTest, TruncatedFilesAreDataLossNamingTheFile) {
  const std::string root = NewTempDir("truncate");
  const CheckpointState state = MakeState(1);
  const std::string dir = WriteOrDie(root, state);
  for (const char* file : kFiles) {
    const std::string path = JoinPath(dir, file);
    const std::string pristine = ReadFileOrDie(path);
    const size_t size = pristine.size();
    for (const size_t cut : {size_t{0}, size_t{1}, size_t{7}, size / 3,
                             size / 2, size - 5, size - 4, size - 1}) {
      SCOPED_TRACE(absl::StrCat(file, " cut to ", cut, " of ", size));
      Overwrite(path, pristine.substr(0, cut));
      const absl::StatusOr<CheckpointState> loaded =
          ReadCheckpoint(dir, kFingerprint);
      EXPECT_TRUE(absl::IsDataLoss(loaded.status())) << loaded.status();
      EXPECT_TRUE(absl::StrContains(loaded.status().message(), path))
          << loaded.status();
    }
    // Appended bytes are damage too.
    Overwrite(path, pristine + "x");
    EXPECT_TRUE(absl::IsDataLoss(ReadCheckpoint(dir, kFingerprint).status()))
        << file;
    WriteFileOrDie(path, pristine);
  }
  ASSERT_TRUE(ReadCheckpoint(dir, kFingerprint).ok());

  // A cut inside a tensor's data names that tensor and says why.
  const std::string path = JoinPath(dir, "optimizer.tensors");
  const std::string pristine = ReadFileOrDie(path);
  WriteFileOrDie(path, pristine.substr(0, pristine.size() - 9));
  const absl::Status status = ReadCheckpoint(dir, kFingerprint).status();
  EXPECT_TRUE(absl::IsDataLoss(status));
  EXPECT_TRUE(absl::StrContains(status.message(), "tensor 'step_count'"))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "MANIFEST says")) << status;
}

TEST(CheckpointTest, EveryFlippedByteIsDataLossNamingTheFile) {
  const std::string root = NewTempDir("flip");
  const CheckpointState state = MakeState(2, 0, /*hidden=*/3);
  const std::string dir = WriteOrDie(root, state);
  for (const char* file : kFiles) {
    const std::string path = JoinPath(dir, file);
    const std::string pristine = ReadFileOrDie(path);
    // CRC-32 catches every single-byte change; try each byte, two ways.
    for (size_t offset = 0; offset < pristine.size(); ++offset) {
      for (const uint8_t mask : {0x01, 0xff}) {
        std::string damaged = pristine;
        damaged[offset] ^= mask;
        Overwrite(path, damaged);
        const absl::Status status = ReadCheckpoint(dir, kFingerprint).status();
        ASSERT_TRUE(absl::IsDataLoss(status))
            << file << " byte " << offset << ": " << status;
        ASSERT_TRUE(absl::StrContains(status.message(), path)) << status;
      }
    }
    WriteFileOrDie(path, pristine);
  }
  ASSERT_TRUE(ReadCheckpoint(dir, kFingerprint).ok());

  // A flip in a tensor's data names the tensor.
  const std::string path = JoinPath(dir, "model.tensors");
  std::string damaged = ReadFileOrDie(path);
  damaged[damaged.size() - 5] ^= 0x40;  // last data byte of the last tensor
  Overwrite(path, damaged);
  const absl::Status status = ReadCheckpoint(dir, kFingerprint).status();
  EXPECT_TRUE(absl::StrContains(status.message(), "tensor '2.bias'")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "data checksum mismatch"))
      << status;
}

TEST(CheckpointTest, MissingFilesAreDataLoss) {
  const std::string root = NewTempDir("missing");
  const std::string dir = WriteOrDie(root, MakeState(1));
  for (const char* file : {"model.tensors", "optimizer.tensors", "MANIFEST"}) {
    const std::string path = JoinPath(dir, file);
    const std::string pristine = ReadFileOrDie(path);
    ASSERT_EQ(unlink(path.c_str()), 0);
    const absl::Status status = ReadCheckpoint(dir, kFingerprint).status();
    EXPECT_TRUE(absl::IsDataLoss(status)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), path)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "missing")) << status;
    WriteFileOrDie(path, pristine);
  }
}

TEST(CheckpointTest, FileOfAnotherCheckpointIsDataLoss) {
  const std::string root = NewTempDir("swap");
  const std::string first = WriteOrDie(root, MakeState(1));
  const std::string second = WriteOrDie(root, MakeState(2));
  // Each file is intact on its own; only the MANIFEST's index can tell.
  ASSERT_NE(ReadFileOrDie(JoinPath(first, "model.tensors")),
            ReadFileOrDie(JoinPath(second, "model.tensors")));
  WriteFileOrDie(JoinPath(first, "model.tensors"),
                 ReadFileOrDie(JoinPath(second, "model.tensors")));
  const absl::Status status = ReadCheckpoint(first, kFingerprint).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "model.tensors")) << status;

  // A DONE from another checkpoint does not complete this one.
  const std::string third = WriteOrDie(root, MakeState(3));
  WriteFileOrDie(JoinPath(third, "DONE"),
                 ReadFileOrDie(JoinPath(second, "DONE")));
  EXPECT_TRUE(absl::IsDataLoss(ReadCheckpoint(third, kFingerprint).status()));
}

TEST(CheckpointTest, DirectoryNameMustMatchItsStep) {
  const std::string root = NewTempDir("rename");
  const std::string dir = WriteOrDie(root, MakeState(4));
  // Copied elsewhere under another name it still loads...
  const std::string backup = JoinPath(root, "backup");
  ASSERT_EQ(rename(dir.c_str(), backup.c_str()), 0);
  EXPECT_TRUE(ReadCheckpoint(backup, kFingerprint).ok());
  // ...but a step-* name for another step is a mix-up.
  const std::string wrong = StepDir(root, 5);
  ASSERT_EQ(rename(backup.c_str(), wrong.c_str()), 0);
  const absl::Status status = ReadCheckpoint(wrong, kFingerprint).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
}

TEST(CheckpointTest, DirectoryWithoutDoneIsIncomplete) {
  const std::string root = NewTempDir("incomplete");
  const std::string dir = WriteOrDie(root, MakeState(1));
  ASSERT_EQ(unlink(JoinPath(dir, "DONE").c_str()), 0);
  const absl::Status status = ReadCheckpoint(dir, kFingerprint).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "incomplete")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), dir)) << status;
  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> listed =
      ListCheckpoints(root);
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

TEST(CheckpointTest, FingerprintMismatchIsFailedPrecondition) {
  const std::string root = NewTempDir("fingerprint");
  const std::string dir = WriteOrDie(root, MakeState(1));
  const absl::Status status = ReadCheckpoint(dir, kFingerprint + 1).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "belongs to a different job or dataset"))
      << status;
}

TEST(CheckpointTest, MissingDirectoryIsNotFound) {
  const std::string root = NewTempDir("absent");
  const absl::Status status =
      ReadCheckpoint(StepDir(root, 1), kFingerprint).status();
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_TRUE(absl::IsNotFound(ListCheckpoints(JoinPath(root, "no")).status()));
  EXPECT_TRUE(absl::IsNotFound(
      FindLatestValidCheckpoint(JoinPath(root, "no"), kFingerprint).status()));
}

TEST(CheckpointTest, InvalidStateIsRefusedBeforeWriting) {
  const std::string root = NewTempDir("invalid");
  std::vector<CheckpointState> invalid(6, MakeState(2));
  invalid[0].step = -1;
  invalid[1].next_stream_position = 3 * kGlobalBatch + 1;
  invalid[2].model.push_back(invalid[2].model[0]);  // duplicate name
  invalid[3].optimizer.push_back({"undefined", torch::Tensor()});
  invalid[4].model.push_back(
      {"quantized",
       torch::quantize_per_tensor(torch::ones({2}), 0.1, 0, torch::kQInt8)});
  invalid[5].model.push_back({"", torch::ones({1})});
  for (size_t i = 0; i < invalid.size(); ++i) {
    const absl::Status status = WriteCheckpoint(root, invalid[i]).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << i << ": " << status;
  }
  EXPECT_TRUE(ListDir(root).empty());
}

// ---------------------------------------------------------------------------
// Write failures.

TEST(CheckpointTest, UnusableRootIsAClearError) {
  const std::string base = NewTempDir("unusable");
  const std::string file = JoinPath(base, "file");
  WriteFileOrDie(file, "not a directory");
  for (const std::string& root : {file, JoinPath(file, "ckpt")}) {
    const absl::Status status = WriteCheckpoint(root, MakeState(1)).status();
    EXPECT_FALSE(status.ok());
    EXPECT_TRUE(absl::StrContains(status.message(), root)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "not a directory"))
        << status;
  }
}

TEST(CheckpointTest, UnwritableRootIsPermissionDenied) {
  const std::string base = NewTempDir("readonly");
  const std::string root = JoinPath(base, "ckpt");
  ASSERT_EQ(mkdir(root.c_str(), 0555), 0);
  const CheckpointState state = MakeState(1);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Root ignores permission bits, so become nobody to meet them.
    if (geteuid() == 0 && (setresgid(65534, 65534, 65534) != 0 ||
                           setresuid(65534, 65534, 65534) != 0)) {
      _exit(2);
    }
    const absl::Status status = WriteCheckpoint(root, state).status();
    const std::string report =
        absl::StrCat(static_cast<int>(status.code()), " ", status.message());
    (void)!write(fds[1], report.data(), report.size());
    _exit(0);
  }
  close(fds[1]);
  std::string report;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0)
    report.append(buffer, n);
  close(fds[0]);
  int wait_status = 0;
  ASSERT_EQ(waitpid(pid, &wait_status, 0), pid);
  ASSERT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  const std::vector<std::string> parts =
      absl::StrSplit(report, absl::MaxSplits(' ', 1));
  ASSERT_EQ(parts.size(), 2u) << report;
  int code = 0;
  ASSERT_TRUE(absl::SimpleAtoi(parts[0], &code));
  EXPECT_EQ(static_cast<absl::StatusCode>(code),
            absl::StatusCode::kPermissionDenied)
      << report;
  EXPECT_TRUE(absl::StrContains(parts[1], root)) << report;
  EXPECT_TRUE(absl::StrContains(parts[1], "Permission denied")) << report;
  EXPECT_TRUE(ListDir(root).empty());
}

// Plants a symlink to /dev/full where the writer is about to create `file`,
// so that its writes fail with ENOSPC as on a full disk.
TEST(CheckpointTest, FullDiskIsResourceExhaustedAndLeavesNoCheckpoint) {
  struct Case {
    WritePhase phase;
    const char* file;
  };
  const Case cases[] = {
      {WritePhase::kTempDirCreated, "model.tensors"},
      {WritePhase::kModelWritten, "optimizer.tensors"},
      {WritePhase::kOptimizerWritten, "MANIFEST"},
      {WritePhase::kRenamed, "DONE.tmp"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string root = NewTempDir("full");
    const absl::Status status =
        internal::WriteCheckpointWithHook(
            root, MakeState(5),
            [&](WritePhase phase, const std::string& dir) {
              if (phase != c.phase) return;
              const std::string target = JoinPath(dir, c.file);
              ASSERT_EQ(symlink("/dev/full", target.c_str()), 0) << target;
            })
            .status();
    EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "No space")) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), c.file)) << status;
    // Nothing left: no checkpoint, no temporary directory.
    EXPECT_TRUE(ListDir(root).empty()) << absl::StrJoin(ListDir(root), " ");
  }
}

// ---------------------------------------------------------------------------
// Replacing, listing, pruning, falling back.

TEST(CheckpointTest, RewritingAStepReplacesIt) {
  const std::string root = NewTempDir("replace");
  const CheckpointState first = MakeState(3, 1);
  const CheckpointState second = MakeState(3, 2);
  WriteOrDie(root, first);
  const std::string path = WriteOrDie(root, second);
  absl::StatusOr<CheckpointState> loaded = ReadCheckpoint(path, kFingerprint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameState(second, *loaded);
  EXPECT_EQ(ListDir(root), std::set<std::string>{"step-000000000003"});

  // An incomplete directory of the step is replaced too.
  ASSERT_EQ(unlink(JoinPath(path, "DONE").c_str()), 0);
  WriteOrDie(root, first);
  loaded = ReadCheckpoint(path, kFingerprint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameState(first, *loaded);
  EXPECT_EQ(ListDir(root), std::set<std::string>{"step-000000000003"});

  // A replacement that fails puts the earlier checkpoint back.
  const absl::Status status =
      internal::WriteCheckpointWithHook(
          root, second,
          [&](WritePhase phase, const std::string& dir) {
            if (phase != WritePhase::kRenamed) return;
            ASSERT_EQ(symlink("/dev/full", JoinPath(dir, "DONE.tmp").c_str()),
                      0);
          })
          .status();
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  loaded = ReadCheckpoint(path, kFingerprint);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameState(first, *loaded);
  EXPECT_EQ(ListDir(root), std::set<std::string>{"step-000000000003"});
}

TEST(CheckpointTest, ListCheckpointsReturnsCompleteOnesByStep) {
  const std::string root = NewTempDir("list");
  for (const int64_t step : {12, 3, 100}) WriteOrDie(root, MakeState(step));
  const std::string incomplete = WriteOrDie(root, MakeState(50));
  ASSERT_EQ(unlink(JoinPath(incomplete, "DONE").c_str()), 0);
  // Names this library does not write are ignored.
  ASSERT_EQ(mkdir(JoinPath(root, ".tmp-step-000000000200-abc").c_str(), 0755),
            0);
  ASSERT_EQ(mkdir(JoinPath(root, "step-7").c_str(), 0755), 0);
  WriteFileOrDie(JoinPath(root, "step-7/DONE"), "");
  WriteFileOrDie(JoinPath(root, "step-000000000009"), "a file");
  WriteFileOrDie(JoinPath(root, "notes.txt"), "");

  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> listed =
      ListCheckpoints(root);
  ASSERT_TRUE(listed.ok()) << listed.status();
  const std::vector<std::pair<int64_t, std::string>> expected = {
      {3, StepDir(root, 3)},
      {12, StepDir(root, 12)},
      {100, StepDir(root, 100)}};
  EXPECT_EQ(*listed, expected);
}

TEST(CheckpointTest, PruneKeepsNewestAndProtectedAndRemovesStaleLeftovers) {
  const std::string root = NewTempDir("prune");
  for (int64_t step = 1; step <= 6; ++step) WriteOrDie(root, MakeState(step));
  // Leftovers of crashed writes: older ones go, newer ones may be in flight.
  for (const char* name :
       {".tmp-step-000000000003-0123456789abcdef", ".tmp-step-000000000009-x",
        "step-000000000000", "step-000000000008", "unrelated"}) {
    ASSERT_EQ(mkdir(JoinPath(root, name).c_str(), 0755), 0);
    WriteFileOrDie(JoinPath(JoinPath(root, name), "model.tensors"), "partial");
  }
  // The protected checkpoint, spelled differently from how it was written.
  const std::string protect = JoinPath(root, "./step-000000000002/");

  ASSERT_TRUE(PruneCheckpoints(root, 2, protect).ok());
  EXPECT_EQ(ListDir(root),
            (std::set<std::string>{
                "step-000000000002", "step-000000000005", "step-000000000006",
                ".tmp-step-000000000009-x", "step-000000000008", "unrelated"}));
  for (const int64_t step : {2, 5, 6}) {
    EXPECT_TRUE(ReadCheckpoint(StepDir(root, step), kFingerprint).ok()) << step;
  }

  // Once a newer checkpoint is complete, the newer leftovers are stale too.
  WriteOrDie(root, MakeState(10));
  ASSERT_TRUE(PruneCheckpoints(root, 1, "").ok());
  EXPECT_EQ(ListDir(root),
            (std::set<std::string>{"step-000000000010", "unrelated"}));

  EXPECT_TRUE(absl::IsInvalidArgument(PruneCheckpoints(root, 0, "")));
  EXPECT_TRUE(
      absl::IsNotFound(PruneCheckpoints(JoinPath(root, "absent"), 1, "")));
}

TEST(CheckpointTest, FindLatestValidFallsBackPastDamagedAndIncomplete) {
  const std::string root = NewTempDir("latest");
  EXPECT_TRUE(
      absl::IsNotFound(FindLatestValidCheckpoint(root, kFingerprint).status()));
  for (int64_t step = 1; step <= 4; ++step) WriteOrDie(root, MakeState(step));

  absl::StatusOr<std::string> latest =
      FindLatestValidCheckpoint(root, kFingerprint);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, StepDir(root, 4));

  // Newest damaged: the previous one is used.
  const std::string model4 = JoinPath(StepDir(root, 4), "model.tensors");
  std::string damaged = ReadFileOrDie(model4);
  damaged[damaged.size() / 2] ^= 0x10;
  WriteFileOrDie(model4, damaged);
  latest = FindLatestValidCheckpoint(root, kFingerprint);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, StepDir(root, 3));

  // Next one incomplete, and a newer one that a crash left without DONE.
  ASSERT_EQ(unlink(JoinPath(StepDir(root, 3), "DONE").c_str()), 0);
  const std::string crashed = WriteOrDie(root, MakeState(9));
  ASSERT_EQ(unlink(JoinPath(crashed, "DONE").c_str()), 0);
  latest = FindLatestValidCheckpoint(root, kFingerprint);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, StepDir(root, 2));

  // Another job's checkpoints are not skipped past: that is an error.
  const absl::Status mismatch =
      FindLatestValidCheckpoint(root, kFingerprint + 1).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(mismatch)) << mismatch;

  // Nothing valid left: NOT_FOUND saying what was skipped.
  ASSERT_EQ(unlink(JoinPath(StepDir(root, 2), "MANIFEST").c_str()), 0);
  ASSERT_EQ(unlink(JoinPath(StepDir(root, 1), "optimizer.tensors").c_str()), 0);
  const absl::Status none =
      FindLatestValidCheckpoint(root, kFingerprint).status();
  EXPECT_TRUE(absl::IsNotFound(none)) << none;
  EXPECT_TRUE(absl::StrContains(none.message(), "skipped")) << none;
  EXPECT_TRUE(absl::StrContains(none.message(), "incomplete")) << none;
}

// ---------------------------------------------------------------------------
// Crash consistency.

// Checks what a crash may leave under `root`: complete checkpoints that load
// and equal one of the states written for their step, `step-*` directories
// without DONE that every reader refuses, and `.tmp-*` directories; nothing
// else.
void ExpectOnlyCompleteOrRecognizablyIncomplete(
    const std::string& root,
    const std::map<int64_t, std::vector<CheckpointState>>& written) {
  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> listed =
      ListCheckpoints(root);
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::set<std::string> complete;
  for (const auto& [step, path] : *listed) complete.insert(path);
  for (const std::string& name : ListDir(root)) {
    const std::string path = JoinPath(root, name);
    if (absl::StartsWith(name, ".tmp-step-")) continue;
    ASSERT_TRUE(absl::StartsWith(name, "step-")) << name;
    absl::StatusOr<CheckpointState> loaded = ReadCheckpoint(path, kFingerprint);
    if (!Exists(JoinPath(path, "DONE"))) {
      EXPECT_TRUE(absl::IsFailedPrecondition(loaded.status()))
          << loaded.status();
      EXPECT_EQ(complete.count(path), 0u) << path;
      continue;
    }
    ASSERT_TRUE(loaded.ok()) << path << ": " << loaded.status();
    EXPECT_EQ(complete.count(path), 1u) << path;
    // The generation tells which attempt this is; it must match that attempt
    // bit for bit (no mix of two attempts' files).
    bool matched = false;
    for (const CheckpointState& attempt : written.at(loaded->step)) {
      if (attempt.generation != loaded->generation) continue;
      matched = true;
      ExpectSameState(attempt, *loaded);
    }
    EXPECT_TRUE(matched) << path;
  }
}

// Runs WriteCheckpoint in a child process that dies by SIGKILL either at
// `kill_phase` (through the hook) or, if none, when the parent kills it after
// `delay`.
void WriteAndKill(const std::string& root, const CheckpointState& state,
                  const WritePhase* kill_phase,
                  std::chrono::microseconds delay) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const absl::Status status =
        internal::WriteCheckpointWithHook(
            root, state,
            [&](WritePhase phase, const std::string&) {
              if (kill_phase != nullptr && phase == *kill_phase) {
                raise(SIGKILL);
              }
            })
            .status();
    _exit(status.ok() ? 0 : 1);
  }
  if (kill_phase == nullptr) {
    std::this_thread::sleep_for(delay);
    kill(pid, SIGKILL);
  }
  int wait_status = 0;
  ASSERT_EQ(waitpid(pid, &wait_status, 0), pid);
  if (kill_phase != nullptr) {
    EXPECT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL);
  } else if (WIFEXITED(wait_status)) {
    EXPECT_EQ(WEXITSTATUS(wait_status), 0);  // finished before the kill
  }
}

TEST(CheckpointTest, KilledWritesNeverLeaveADamagedCheckpoint) {
  const std::string root = NewTempDir("crash");
  const WritePhase phases[] = {
      WritePhase::kTempDirCreated,   WritePhase::kModelWritten,
      WritePhase::kOptimizerWritten, WritePhase::kManifestWritten,
      WritePhase::kTempDirSynced,    WritePhase::kFinalDirCleared,
      WritePhase::kRenamed,          WritePhase::kDoneWritten};
  constexpr int kPhaseRuns = 2 * 8;
  constexpr int kRandomRuns = 30;

  // How long one write takes here, to spread the random kills over it.
  const std::string timing_root = NewTempDir("timing");
  const CheckpointState timing_state = MakeState(1);
  const auto start = std::chrono::steady_clock::now();
  WriteOrDie(timing_root, timing_state);
  const auto write_time = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  std::mt19937_64 random(20240501);
  std::uniform_int_distribution<int64_t> delay_us(
      0, std::max<int64_t>(1000, write_time.count() * 3 / 2));

  std::map<int64_t, std::vector<CheckpointState>> written;
  for (int run = 0; run < kPhaseRuns + kRandomRuns; ++run) {
    // Two attempts per step, so that half the writes replace a checkpoint
    // (complete or not) that an earlier attempt left.
    const int64_t step = run / 2;
    written[step].push_back(MakeState(step, /*variant=*/run));
    SCOPED_TRACE(absl::StrCat("run ", run, " step ", step));
    if (run < kPhaseRuns) {
      WriteAndKill(root, written[step].back(), &phases[run % 8],
                   std::chrono::microseconds(0));
    } else {
      WriteAndKill(root, written[step].back(), nullptr,
                   std::chrono::microseconds(delay_us(random)));
    }
    ExpectOnlyCompleteOrRecognizablyIncomplete(root, written);
    if (run % 6 == 5) {
      ASSERT_TRUE(PruneCheckpoints(root, 3, "").ok());
      ExpectOnlyCompleteOrRecognizablyIncomplete(root, written);
    }
  }

  // After all that, writing works and the newest checkpoint is found.
  const int64_t last = (kPhaseRuns + kRandomRuns) / 2;
  written[last].push_back(MakeState(last, 1000));
  const std::string path = WriteOrDie(root, written[last].back());
  absl::StatusOr<std::string> latest =
      FindLatestValidCheckpoint(root, kFingerprint);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, path);
  ASSERT_TRUE(PruneCheckpoints(root, 1, "").ok());
  EXPECT_EQ(ListDir(root), std::set<std::string>{path.substr(root.size() + 1)});
}

}  // namespace
}  // namespace podtrain::worker
