// The Gloo backend of Communicator (worker/collectives.h): CPU tensors over
// TCP, with Debian's libgloo-dev (facebookincubator/gloo at 5b14351,
// 2022-05-18).
//
// Forming the world: every rank creates a TCP device on options.hostname and
// calls gloo::rendezvous::Context::connectFullMesh through `store` (normally
// a CoordinatorStore on the generation's prefix), all bounded by
// options.timeout. A world of one needs no store and touches no network:
// every collective over one rank is the identity.
//
// Each operation runs gloo's algorithm (ring all-reduce, one-to-all
// broadcast, barrier) with its own tag — taken from a per-communicator
// counter, so the n-th operation of every rank gets the same tag — and with
// options.timeout as gloo's timeout.
//
// How Abort() and failures are made prompt (what this relies on in gloo):
//   * Abort(), a caller-side timeout, and any failed operation make gloo
//     signal every pair of the context: each pair fails every operation
//     pending on it with an IoException and closes its socket, so local
//     waiters wake and every peer's pending operations fail within
//     milliseconds ("Connection closed by peer") instead of waiting out
//     their timeout. This is gloo's own reaction to an operation timing out
//     (tcp::UnboundBuffer::waitRecv -> tcp::Context::signalException ->
//     tcp::Pair::signalExceptionExternal on every pair). Debian's package
//     ships gloo/transport/tcp/pair.h without the gloo/common/memory.h it
//     includes, so the pairs cannot be named here; instead a 1 ms receive
//     on a private buffer that nothing sends to triggers that path through
//     public API only (gloo::Context::createUnboundBuffer, waitRecv).
//   * Signalling does not reach a segment already being read from a socket
//     (tcp::Pair::signalException skips the pair's in-progress read), which
//     then ends only with its data or gloo's timeout. So operations run on
//     a private "op thread", and the caller waits for the result, Abort()
//     or the timeout, whichever comes first: the caller is always released
//     promptly. Everything the op thread touches (the context, the tensor's
//     storage) is jointly owned, so an op thread left behind finishes
//     harmlessly by gloo's timeout.
//   * Gloo reports errors by throwing gloo::IoException (I/O, timeouts) and
//     gloo::EnforceNotMet (broken invariants); the store throws
//     CoordinatorStoreError. All are caught here and become absl::Status:
//     a timeout DEADLINE_EXCEEDED, other I/O UNAVAILABLE, Abort() ABORTED,
//     invariants INTERNAL.
//
// Every rank must issue the same operations with the same sizes: gloo
// checks sizes on its device thread, and a mismatch there throws where
// nothing can catch it, terminating the process (seen in testing when an
// aborted rank's stale operation met a peer's new one; closing every
// connection on Abort() is what rules that out).
//
// Thread-safety: as Communicator (one thread for operations, Abort() from
// any). ConnectGloo is thread-safe; each rank has its own device, so ranks
// may be threads of one process (as in the tests).

#ifndef PODTRAIN_WORKER_GLOO_COMMUNICATOR_H_
#define PODTRAIN_WORKER_GLOO_COMMUNICATOR_H_

#include <gloo/rendezvous/store.h>

#include <memory>

#include "absl/status/statusor.h"
#include "worker/collectives.h"

namespace podtrain::worker {

// Forms the world of options.world_size ranks (this one being
// options.rank) and returns its communicator. `store` may be null only for
// a world of one. AllReduceSum takes float32, float64, int32 or int64 CPU
// tensors; Broadcast takes any CPU tensor.
// Errors: INVALID_ARGUMENT for bad options; DEADLINE_EXCEEDED if the peers
// did not all show up within options.timeout; UNAVAILABLE if the store or a
// peer could not be reached.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectGloo(
    const CommunicatorOptions& options,
    std::shared_ptr<gloo::rendezvous::Store> store);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_GLOO_COMMUNICATOR_H_
