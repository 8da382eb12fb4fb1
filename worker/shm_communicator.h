// A shared-memory fast path for the all-reduce of ranks on one host, on top
// of a Gloo communicator of the same world (worker/collectives.h).
//
// Gloo has no shared-memory transport: ranks on one machine all-reduce over
// loopback TCP, which on the reference MLP (7.45 MB of gradients, 2 ranks)
// costs ~7.5 ms of kernel copies per step, where OpenMPI's shared-memory
// path takes ~0.7 ms (bench/RESULTS.md, allreduce). NCCL has the same idea
// for GPUs in one node. With this wrapper, AllReduceSum of a float32,
// float64, int32 or int64 CPU tensor runs through one shared segment;
// Broadcast and Barrier (rare: start-up and state checks) stay on Gloo.
//
// Forming: rank 0 creates a POSIX shared-memory segment with a random name
// and a random 128-bit nonce, reserving its pages (so a full /dev/shm is an
// error now, not a SIGBUS mid-step), and publishes name and nonce through
// the generation's store. Every other rank opens and maps it and checks the
// nonce, then every rank publishes whether it could; only when all could
// does the world use the segment (rank 0 then unlinks the name, so nothing
// is left in /dev/shm whatever happens later). Ranks on different hosts, or
// in containers without a shared /dev/shm, fall back to Gloo alone. The
// decision is the same on every rank, because every rank reads every
// rank's answer.
//
// The all-reduce of a tensor from NewReduceBuffer (GradientBuckets' bucket
// buffers): every rank's buffers live in the segment, at the same offsets
// on every rank, so no copy is needed. Once all have arrived, rank r sums
// sub-range r of every rank's buffer, in rank order, and writes the sum into
// sub-range r of every rank's buffer; once all have, the reduction is done.
// Two waits a tensor and a third of the memory traffic of the slot path
// below. Each rank's buffer region is SharedMemoryOptions.buffer_bytes; a
// request beyond it gets ordinary memory (and the slot path). Every
// operation also publishes what it reduces (offset, bytes, dtype), and
// ranks whose operations differ fail with INTERNAL naming both, instead of
// summing unrelated memory.
//
// The all-reduce of any other tensor goes through in chunks of at most
// slot_bytes.
// Each rank copies its chunk into its own slot; once all have, rank r sums
// sub-range r of every rank's slot, in rank order, into its own slot; once
// all have, every rank copies each rank's reduced sub-range out. Every
// element is summed once, by one rank, in one order, so every rank ends
// with the same bits. Slots alternate between two buffers, so a rank waits
// for the others to finish reading a buffer only two chunks later.
//
// Waiting spins briefly, then sleeps on a futex in the segment (publishers
// wake sleepers), checking every few milliseconds:
//   * Abort() on this rank: ABORTED. Abort() also marks the segment, and a
//     rank that fails marks it too, so every peer's pending and later
//     operations fail at once (UNAVAILABLE, naming the rank) — as closing
//     Gloo's connections does.
//   * A peer that died (crash, SIGKILL): each rank holds an open-file-
//     description lock on byte `rank` of the segment; the kernel drops it
//     when the process dies, and a waiter that finds the lock gone fails
//     with UNAVAILABLE naming the rank. This works across PID namespaces.
//   * The operation's timeout: DEADLINE_EXCEEDED.
// After any failure the communicator is broken for good (collectives.h),
// and the Gloo communicator underneath is aborted too.
//
// Thread-safety: as Communicator: one thread issues operations (they run
// on that thread, no handoff), Abort() from any thread at any time.

#ifndef PODTRAIN_WORKER_SHM_COMMUNICATOR_H_
#define PODTRAIN_WORKER_SHM_COMMUNICATOR_H_

#include <gloo/rendezvous/store.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "worker/collectives.h"

namespace podtrain::worker {

struct SharedMemoryOptions {
  // Bytes of one rank's slot; a chunk of a tensor fills at most one. The
  // segment holds 2 slots per rank.
  int64_t slot_bytes = int64_t{1} << 20;
  // Bytes of each rank's region for NewReduceBuffer, a multiple of
  // kReduceBufferAlign (GradientBuckets::ReduceBufferBytes says how much a
  // model's buckets take). 0: none. When /dev/shm cannot hold the regions
  // (a container's 64 MB default), the segment is made without them and
  // every tensor takes the slot path.
  int64_t buffer_bytes = 0;
};

// Returns a communicator whose AllReduceSum goes through shared memory when
// every rank of the world can map one segment, else `transport` itself.
// `transport` must be a communicator of the same world (same rank, world
// size) with no operation issued yet; `store` is the generation's store
// (as for ConnectGloo). A world of one returns `transport`.
// Errors: INVALID_ARGUMENT for bad options or a mismatched transport;
// DEADLINE_EXCEEDED / UNAVAILABLE when the store fails. A segment that
// cannot be created or shared is not an error: it is logged and the world
// runs on `transport`.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectSharedMemory(
    const CommunicatorOptions& options, const SharedMemoryOptions& shm_options,
    std::shared_ptr<gloo::rendezvous::Store> store,
    std::unique_ptr<Communicator> transport);

// Whether `communicator` is one ConnectSharedMemory built (its all-reduce
// goes through shared memory).
bool UsesSharedMemory(const Communicator& communicator);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_SHM_COMMUNICATOR_H_
