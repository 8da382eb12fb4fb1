// Training checkpoints: the whole training state of a data-parallel job —
// model tensors, optimizer state tensors, the last completed step, the RNG
// state, the sampler cursor and the job fingerprint — written as one
// directory that is either complete and verifiable or not a checkpoint at
// all. Checkpoints are podtrain's "committed lineage": resuming from one must
// continue the data stream exactly where it stopped, so a damaged one must
// never load silently.
//
// In data-parallel training every rank holds the same state, so rank 0 writes
// the checkpoint and any world size can load it (nothing in it depends on the
// world size).
//
// Directory layout under a root (one per job):
//   root/step-000000000042/     a checkpoint; `%012d` of its step
//     model.tensors             tensor file (below) of CheckpointState::model
//     optimizer.tensors         tensor file of CheckpointState::optimizer
//     MANIFEST                  scalar state + index of the tensor files
//     DONE                      written last: no DONE, no checkpoint
//   root/.tmp-step-000000000042-<random>/   a write in progress or abandoned
//
// Writing: the files go into a fresh `.tmp-step-...` directory, each fsynced;
// the directory is fsynced, renamed to `step-...` and the root fsynced; then
// DONE is written atomically (temporary file, fsync, rename, fsync). A crash
// at any point leaves complete checkpoints, `.tmp-*` directories, and at most
// one `step-*` directory without DONE, which readers refuse as incomplete and
// PruneCheckpoints eventually removes; never a `step-*` directory with DONE
// that does not verify.
//
// File formats (all integers little-endian; tensor bytes are stored as the
// host holds them, so this file does not compile on a big-endian host):
//
//   tensor file
//     header   magic "PTCKTEN1" (8 bytes), u32 version (= 1),
//              u32 tensor count, u32 crc32(the preceding 16 bytes)
//     records  for each tensor:
//                u32 name length, name bytes, u32 dtype code (kDtypes in
//                checkpoint.cc: float32 = 1, float64 = 2, float16 = 3,
//                bfloat16 = 4, int8 = 5, uint8 = 6, int16 = 7, int32 = 8,
//                int64 = 9, bool = 10, complex64 = 11, complex128 = 12),
//                u32 rank, i64 size of each dimension, u64 data length,
//                u32 crc32(every field of this record so far),
//                data (the elements in row-major order, `data length` bytes),
//                u32 crc32(data)
//     The file ends right after the last record.
//
//   MANIFEST
//     magic "PTCKMAN1" (8 bytes), u32 version (= 1), u32 reserved (= 0),
//     i64 step, u64 job fingerprint, i64 generation, i64 next stream position,
//     u64 rng state length, rng state bytes,
//     u32 file count (= 2), for each tensor file: u32 name length, name,
//       u64 size in bytes, u64 content digest (FNV-1a-64, stable_hash.h, of
//       the file's checksums in order, each as u32: header, then every
//       record's header and data checksums),
//     u32 crc32(every preceding byte of the MANIFEST)
//
//   DONE
//     the text "podtrain checkpoint step <step> manifest <the MANIFEST's
//     checksum, 8 hex digits>\n", which ties the marker to the MANIFEST.
//
// CRC-32 is zlib's. Every byte of every file is covered by a checksum, so
// corruption is DATA_LOSS naming the file (and the tensor where there is
// one), never a crash or a silently different state. The content digests
// catch intact files from another checkpoint. (They are not a CRC-32 of the
// whole file because that would not: a file made of chunks each followed by
// its own CRC-32 has a whole-file CRC-32 that depends only on the chunks'
// lengths.)
//
// Thread-safety: the functions share no state and are safe to call from any
// thread. On one root there must be at most one writer (WriteCheckpoint or
// PruneCheckpoints) at a time; readers may run alongside WriteCheckpoint and
// never load a partial checkpoint, but a checkpoint that PruneCheckpoints is
// removing disappears under them.
//
// Example (rank 0, every interval_steps):
//   ASSIGN_OR_RETURN(std::string path, WriteCheckpoint(root, state));
//   ... CommitCheckpoint(path) to the coordinator ...
//   RETURN_IF_ERROR(PruneCheckpoints(root, keep, committed_path));
// and on (re)start:
//   ASSIGN_OR_RETURN(CheckpointState state,
//                    ReadCheckpoint(resume_checkpoint, fingerprint));

#ifndef PODTRAIN_WORKER_CHECKPOINT_H_
#define PODTRAIN_WORKER_CHECKPOINT_H_

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace podtrain::worker {

// One tensor of the training state and the name it is restored by (e.g. a
// module's parameter name, "fc1.weight", or "fc1.weight.momentum").
struct NamedTensor {
  std::string name;
  // Any dtype listed in the file format above, any shape (0-d included),
  // any strides; stored contiguous. Loaded tensors are contiguous, on the
  // CPU, and do not require grad.
  torch::Tensor tensor;
};

struct CheckpointState {
  // The last completed optimizer step. REQUIRES (to write): >= 0.
  int64_t step = -1;
  // Identifies the job spec and the dataset; ReadCheckpoint refuses a
  // checkpoint with a different one.
  uint64_t job_fingerprint = 0;
  // The generation that wrote the checkpoint; informational only.
  int64_t generation = 0;
  // Opaque bytes: the torch generator state (Generator::get_state()).
  std::string rng_state;
  // The sampler cursor, (step + 1) * global_batch: the first stream position
  // the next step consumes. Both the writer and the reader check that it is
  // a positive multiple of step + 1 (the global batch is fixed per job).
  int64_t next_stream_position = 0;
  // Tensor names must be unique and non-empty within each list; order is
  // kept.
  std::vector<NamedTensor> model;
  std::vector<NamedTensor> optimizer;
};

// Writes `state` as the directory root/step-<%012d step>, creating `root` if
// needed, and returns its path. The files go into a temporary directory that
// is renamed into place, then DONE is written (see the top of this file).
// Errors name the path and the OS's reason (ENOSPC is RESOURCE_EXHAUSTED
// "No space left on device", EACCES PERMISSION_DENIED, ...); an invalid state
// (step < 0, bad cursor, undefined or unsupported tensor, duplicate name) is
// INVALID_ARGUMENT. A failed write removes its temporary directory and
// leaves no new `step-*` directory (unless the process dies first; see the
// top of this file).
//
// If root already has a directory for this step it is replaced: an
// incomplete one is deleted first; a complete one (e.g. written before a
// restart but never committed) is moved aside and deleted once the new one
// has its DONE. REQUIRES: `state.step` is not the step of the coordinator's
// committed checkpoint — a crash in the middle of a replacement leaves no
// complete checkpoint for the step.
absl::StatusOr<std::string> WriteCheckpoint(const std::string& root,
                                            const CheckpointState& state);

// Loads the checkpoint directory `path` and verifies it: DONE present and
// matching the MANIFEST, magics, versions, every checksum and size, the
// cursor, and that its job fingerprint equals `expected_fingerprint`.
// Possible errors:
//   NOT_FOUND            `path` does not exist.
//   FAILED_PRECONDITION  no DONE marker: the checkpoint is incomplete (its
//                        write did not finish); or the job fingerprint
//                        differs: the checkpoint belongs to a different job
//                        or dataset.
//   DATA_LOSS            a file is missing, truncated or corrupt; the message
//                        names the file and, inside a tensor file, the
//                        tensor.
//   UNIMPLEMENTED        an intact file of a newer format version.
//   others               I/O errors naming the file.
absl::StatusOr<CheckpointState> ReadCheckpoint(const std::string& path,
                                               uint64_t expected_fingerprint);

// The complete checkpoints under `root` (those with DONE; not otherwise
// verified) as (step, path), by increasing step. NOT_FOUND if `root` does not
// exist.
absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> ListCheckpoints(
    const std::string& root);

// Keeps the newest `keep` complete checkpoints under `root` and removes the
// older ones. Also removes what crashed or failed writes left behind and is
// older than the newest complete checkpoint: `.tmp-*` directories and `step-*`
// directories without DONE. (Newer ones may be a write in progress.) Never
// removes `protect` (the coordinator's committed checkpoint; may be empty),
// compared by identity, so any spelling of its path works. A checkpoint is
// first renamed to a `.tmp-*` name, so a crash mid-removal never leaves a
// damaged `step-*` directory behind. Tries every removal and returns the
// first error. INVALID_ARGUMENT if keep < 1.
absl::Status PruneCheckpoints(const std::string& root, int keep,
                              const std::string& protect);

// The newest checkpoint under `root` that ReadCheckpoint would load: tries
// `step-*` directories newest first, skipping — with a warning in the log
// saying why — incomplete ones and ones that fail with DATA_LOSS, so a crash
// or damage falls back to the previous checkpoint. Any other error (a
// fingerprint mismatch, an unknown version, an I/O error) is returned rather
// than skipped: falling back past it would silently discard a checkpoint
// that is probably fine. NOT_FOUND if no checkpoint qualifies (the message
// lists what was skipped) or `root` does not exist. This reads every tensor
// of the checkpoint it returns; the caller reads it again with
// ReadCheckpoint.
absl::StatusOr<std::string> FindLatestValidCheckpoint(
    const std::string& root, uint64_t expected_fingerprint);

namespace internal {

// The points between the phases of WriteCheckpoint, for fault-injection
// tests.
enum class WritePhase {
  kTempDirCreated,    // dir: the temporary directory, still empty
  kModelWritten,      // dir: temporary directory; model.tensors fsynced
  kOptimizerWritten,  // dir: temporary directory; optimizer.tensors fsynced
  kManifestWritten,   // dir: temporary directory; MANIFEST fsynced
  kTempDirSynced,     // dir: temporary directory, fsynced
  kFinalDirCleared,   // dir: the final directory's path, now free (an
                      // earlier checkpoint of the step moved aside)
  kRenamed,           // dir: the final directory, root fsynced, no DONE yet
  kDoneWritten,       // dir: the final directory, complete
};

// WriteCheckpoint calling `hook(phase, dir)` at each phase boundary (an empty
// hook is never called). Tests use it to kill the process at a chosen point
// or to plant files (e.g. a symlink to /dev/full) in the directory.
absl::StatusOr<std::string> WriteCheckpointWithHook(
    const std::string& root, const CheckpointState& state,
    const std::function<void(WritePhase phase, const std::string& dir)>& hook);

}  // namespace internal
}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_CHECKPOINT_H_
