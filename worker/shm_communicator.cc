#include "worker/shm_communicator.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/coordinator_store.h"

namespace podtrain::worker {
namespace {

constexpr uint64_t kMagic = 0x31'6e'61'72'74'64'6f'70;  // "podtran1"
// Waiting: spin this long before sleeping (a peer in step is usually this
// close), and look at the peers' locks this often while asleep.
constexpr auto kSpinFor = std::chrono::microseconds(20);
constexpr absl::Duration kCheckEvery = absl::Milliseconds(5);
constexpr int64_t kAlign = 64;  // sub-ranges start on their own cache line

// The segment's first page. Everything a rank changes after forming is an
// atomic, on a cache line of its own.
struct Header {
  uint64_t magic;
  uint64_t nonce[2];
  int64_t world_size;
  int64_t slot_bytes;
  int64_t buffer_bytes;  // each rank's NewReduceBuffer region
  // Bumped by every publisher; sleepers futex-wait on it.
  alignas(64) std::atomic<uint32_t> epoch;
  std::atomic<uint32_t> sleepers;
  // -1 until a rank aborts or fails; then that rank.
  alignas(64) std::atomic<int32_t> failed_rank;
};

// One rank's progress: the last operation (a chunk, or a tensor in the
// buffer regions) it made available, reduced, finished with.
struct alignas(64) Progress {
  std::atomic<int64_t> arrived;
  std::atomic<int64_t> reduced;
  std::atomic<int64_t> done;
  // What operation `arrived` is, written before it: every peer checks it
  // matches its own. Stable until every rank has published `reduced` for it.
  std::atomic<int64_t> op_offset;  // in the buffer region; -1: slot path
  std::atomic<int64_t> op_bytes;
  std::atomic<int32_t> op_dtype;  // c10::ScalarType
};

// The sum of a buffer-region tensor is written out in blocks of this many
// bytes, so each block is still in cache when it is copied to the peers.
constexpr int64_t kSumBlockBytes = 256 << 10;

static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);

int64_t RoundUp(int64_t value, int64_t to) {
  return (value + to - 1) / to * to;
}

int64_t ProgressOffset() { return RoundUp(sizeof(Header), 4096); }
int64_t DataOffset(int64_t world_size) {
  return RoundUp(ProgressOffset() + world_size * sizeof(Progress), 4096);
}
int64_t BuffersOffset(int64_t world_size, int64_t slot_bytes) {
  return DataOffset(world_size) + world_size * 2 * slot_bytes;
}
int64_t SegmentBytes(int64_t world_size, int64_t slot_bytes,
                     int64_t buffer_bytes) {
  return BuffersOffset(world_size, slot_bytes) + world_size * buffer_bytes;
}

std::string ErrnoText(int error) { return std::strerror(error); }

// A mapped segment and the descriptor whose lock says this rank is alive.
class Segment {
 public:
  Segment(std::string name, int fd, void* base, int64_t bytes)
      : name_(std::move(name)),
        fd_(fd),
        base_(static_cast<char*>(base)),
        bytes_(bytes) {}
  ~Segment() {
    munmap(base_, bytes_);
    close(fd_);
  }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  const std::string& name() const { return name_; }
  Header& header() const { return *reinterpret_cast<Header*>(base_); }
  Progress& progress(int rank) const {
    return reinterpret_cast<Progress*>(base_ + ProgressOffset())[rank];
  }
  char* slot(int rank, int64_t parity) const {
    const Header& h = header();
    return base_ + DataOffset(h.world_size) +
           (rank * 2 + parity) * h.slot_bytes;
  }
  int64_t buffer_bytes() const { return header().buffer_bytes; }
  char* buffer(int rank) const {
    const Header& h = header();
    return base_ + BuffersOffset(h.world_size, h.slot_bytes) +
           rank * h.buffer_bytes;
  }

  // Takes the lock on byte `rank`: held for as long as this process lives.
  absl::Status LockRank(int rank) const {
    struct flock lock = {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = rank;
    lock.l_len = 1;
    if (fcntl(fd_, F_OFD_SETLK, &lock) != 0) {
      return absl::UnavailableError(
          absl::StrCat("locking byte ", rank, ": ", ErrnoText(errno)));
    }
    return absl::OkStatus();
  }

  // Whether some process (other than through this descriptor) holds the
  // lock on byte `rank`, i.e. whether that rank's process is alive.
  bool RankAlive(int rank) const {
    struct flock lock = {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = rank;
    lock.l_len = 1;
    if (fcntl(fd_, F_OFD_GETLK, &lock) != 0) return true;  // cannot tell
    return lock.l_type != F_UNLCK;
  }

 private:
  const std::string name_;
  const int fd_;
  char* const base_;
  const int64_t bytes_;
};

void Wake(Header& header) {
  header.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (header.sleepers.load(std::memory_order_seq_cst) > 0) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header.epoch), FUTEX_WAKE,
            INT32_MAX, nullptr, nullptr, 0);
  }
}

// Creates, sizes (pages reserved) and maps a new segment; fills the header.
absl::StatusOr<std::unique_ptr<Segment>> CreateSegment(
    const std::string& name, int64_t world_size, int64_t slot_bytes,
    int64_t buffer_bytes, const uint64_t nonce[2]) {
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("shm_open(", name, "): ", ErrnoText(errno)));
  }
  const int64_t bytes = SegmentBytes(world_size, slot_bytes, buffer_bytes);
  const auto fail = [&](absl::string_view what, int error) {
    close(fd);
    shm_unlink(name.c_str());
    return absl::UnavailableError(absl::StrCat(
        what, " of ", bytes, " bytes in ", name, ": ", ErrnoText(error)));
  };
  // Reserving the pages now makes a full /dev/shm an error here instead of
  // a SIGBUS at the first write into a page tmpfs cannot back.
  if (const int error = posix_fallocate(fd, 0, bytes); error != 0) {
    return fail("reserving the segment", error);
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return fail("mapping the segment", errno);
  auto segment = std::make_unique<Segment>(name, fd, base, bytes);
  Header& header = segment->header();
  header.magic = kMagic;
  header.nonce[0] = nonce[0];
  header.nonce[1] = nonce[1];
  header.world_size = world_size;
  header.slot_bytes = slot_bytes;
  header.buffer_bytes = buffer_bytes;
  header.failed_rank.store(-1);
  return segment;
}

// Opens and maps rank 0's segment and checks it is the one announced.
absl::StatusOr<std::unique_ptr<Segment>> OpenSegment(const std::string& name,
                                                     int64_t world_size,
                                                     int64_t slot_bytes,
                                                     int64_t buffer_bytes,
                                                     const uint64_t nonce[2]) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("shm_open(", name, "): ", ErrnoText(errno)));
  }
  const int64_t bytes = SegmentBytes(world_size, slot_bytes, buffer_bytes);
  struct stat info = {};
  if (fstat(fd, &info) != 0 || info.st_size != bytes) {
    close(fd);
    return absl::UnavailableError(
        absl::StrCat(name, " has ", info.st_size, " bytes, expected ", bytes));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("mapping ", name, ": ", ErrnoText(error)));
  }
  auto segment = std::make_unique<Segment>(name, fd, base, bytes);
  const Header& header = segment->header();
  if (header.magic != kMagic || header.nonce[0] != nonce[0] ||
      header.nonce[1] != nonce[1] || header.world_size != world_size ||
      header.slot_bytes != slot_bytes || header.buffer_bytes != buffer_bytes) {
    // Same name, different segment: another host's /dev/shm, or another
    // container's.
    return absl::UnavailableError(
        absl::StrCat(name, " is not the segment rank 0 announced"));
  }
  return segment;
}

// The status of the store exception being handled.
absl::Status StoreFailure(absl::string_view what) {
  try {
    throw;
  } catch (const CoordinatorStoreError& e) {
    return absl::Status(e.status().code(),
                        absl::StrCat(what, ": ", e.status().message()));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
  }
}

std::vector<char> Bytes(absl::string_view text) {
  return std::vector<char>(text.begin(), text.end());
}

class SharedMemoryCommunicator final : public Communicator {
 public:
  SharedMemoryCommunicator(const CommunicatorOptions& options,
                           std::shared_ptr<Segment> segment,
                           std::unique_ptr<Communicator> transport)
      : rank_(options.rank),
        world_size_(options.world_size),
        timeout_(options.timeout),
        segment_(std::move(segment)),
        transport_(std::move(transport)) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  absl::Status AllReduceSum(torch::Tensor& tensor) override {
    if (!broken_.ok()) return broken_;
    if (!tensor.defined() || !tensor.device().is_cpu()) {
      return transport_->AllReduceSum(tensor);  // names what is wrong
    }
    torch::Tensor work = tensor.contiguous();
    absl::Status status;
    switch (work.scalar_type()) {
      case torch::kFloat32:
      case torch::kFloat64:
      case torch::kInt32:
      case torch::kInt64:
        status = InBuffers(work) ? ReduceInBuffers(work) : Reduce(work);
        break;
      default:
        return transport_->AllReduceSum(tensor);  // INVALID_ARGUMENT
    }
    if (status.ok() && aborted_.load()) status = AbortedStatus();
    if (!status.ok()) return Fail("AllReduceSum", work, status);
    if (!work.is_same(tensor)) {
      torch::NoGradGuard no_grad;
      tensor.copy_(work);
    }
    return absl::OkStatus();
  }

  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    if (!broken_.ok()) return broken_;
    absl::Status status = transport_->Broadcast(tensor, root);
    if (!status.ok() && status.code() != absl::StatusCode::kInvalidArgument) {
      MarkFailed();
      broken_ = status;
    }
    return status;
  }

  absl::Status Barrier() override {
    if (!broken_.ok()) return broken_;
    absl::Status status = transport_->Barrier();
    if (!status.ok()) {
      MarkFailed();
      broken_ = status;
    }
    return status;
  }

  void Abort() override {
    aborted_.store(true);
    MarkFailed();
    transport_->Abort();
  }

  torch::Tensor NewReduceBuffer(int64_t numel,
                                const torch::TensorOptions& options) override {
    const int64_t bytes =
        numel * static_cast<int64_t>(c10::elementSize(
                    c10::typeMetaToScalarType(options.dtype())));
    const int64_t reserved = ReservedReduceBufferBytes(bytes);
    if (!options.device().is_cpu() || !Reducible(options.dtype()) ||
        buffer_used_ + reserved > segment_->buffer_bytes()) {
      return Communicator::NewReduceBuffer(numel, options);
    }
    char* const data = segment_->buffer(rank_) + buffer_used_;
    buffer_used_ += reserved;
    std::memset(data, 0, bytes);
    // The tensor keeps the mapping: gradients that are views of a bucket
    // may outlive this communicator (the next generation replaces them).
    return torch::from_blob(
        data, {numel}, [keep = segment_](void*) {}, options);
  }

 private:
  static bool Reducible(caffe2::TypeMeta dtype) {
    return dtype == torch::kFloat32 || dtype == torch::kFloat64 ||
           dtype == torch::kInt32 || dtype == torch::kInt64;
  }

  // Whether `work` lies in this rank's buffer region (came from
  // NewReduceBuffer).
  bool InBuffers(const torch::Tensor& work) const {
    const char* const region = segment_->buffer(rank_);
    const char* const data = static_cast<const char*>(work.data_ptr());
    const int64_t bytes = work.numel() * work.element_size();
    return segment_->buffer_bytes() > 0 && data >= region &&
           data + bytes <= region + segment_->buffer_bytes();
  }
  absl::Status AbortedStatus() const {
    return absl::AbortedError(absl::StrCat(
        "shared-memory communicator of rank ", rank_, " was aborted"));
  }

  // Tells every rank of the segment that this world is over.
  void MarkFailed() {
    Header& header = segment_->header();
    int32_t none = -1;
    header.failed_rank.compare_exchange_strong(none, rank_);
    Wake(header);
  }

  absl::Status Fail(absl::string_view what, const torch::Tensor& work,
                    const absl::Status& status) {
    MarkFailed();
    transport_->Abort();
    broken_ = absl::Status(
        status.code(),
        absl::StrCat(what, " of ", work.numel() * work.element_size(),
                     " bytes (rank ", rank_, " of ", world_size_,
                     ", shared memory): ", status.message()));
    return broken_;
  }

  // Why waiting must stop: this rank aborted, a peer marked the segment, or
  // a peer's process is gone. OK to keep waiting.
  absl::Status CheckWorld(bool look_at_peers) const {
    if (aborted_.load()) return AbortedStatus();
    const int32_t failed =
        segment_->header().failed_rank.load(std::memory_order_acquire);
    if (failed >= 0 && failed != rank_) {
      return absl::UnavailableError(absl::StrCat(
          "rank ", failed, " aborted or failed the world's collectives"));
    }
    if (failed == rank_) return AbortedStatus();
    if (look_at_peers) {
      for (int peer = 0; peer < world_size_; ++peer) {
        if (peer != rank_ && !segment_->RankAlive(peer)) {
          return absl::UnavailableError(
              absl::StrCat("rank ", peer, "'s process exited"));
        }
      }
    }
    return absl::OkStatus();
  }

  // Waits until every rank's `field` has reached `seq`.
  absl::Status WaitAll(std::atomic<int64_t> Progress::*field, int64_t seq,
                       absl::Time deadline, absl::string_view phase) {
    const auto ready = [&] {
      for (int r = 0; r < world_size_; ++r) {
        if ((segment_->progress(r).*field).load(std::memory_order_acquire) <
            seq) {
          return false;
        }
      }
      return true;
    };
    const auto spin_until = std::chrono::steady_clock::now() + kSpinFor;
    do {
      for (int i = 0; i < 64; ++i) {
        if (ready()) return absl::OkStatus();
        __builtin_ia32_pause();
      }
    } while (std::chrono::steady_clock::now() < spin_until);

    Header& header = segment_->header();
    absl::Time next_check = absl::Now();
    while (true) {
      if (ready()) return absl::OkStatus();
      const absl::Time now = absl::Now();
      const bool look_at_peers = now >= next_check;
      if (look_at_peers) next_check = now + kCheckEvery;
      if (absl::Status world = CheckWorld(look_at_peers); !world.ok()) {
        return absl::Status(
            world.code(),
            absl::StrCat("while waiting to ", phase, ": ", world.message()));
      }
      if (now >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "waited ", absl::FormatDuration(timeout_), " to ", phase));
      }
      header.sleepers.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t epoch = header.epoch.load(std::memory_order_seq_cst);
      if (!ready() && header.failed_rank.load() < 0 && !aborted_.load()) {
        const absl::Duration nap =
            std::min(deadline, next_check) - now + absl::Microseconds(100);
        const timespec wait = absl::ToTimespec(nap);
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header.epoch),
                FUTEX_WAIT, epoch, &wait, nullptr, 0);
      }
      header.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  // What this rank's next `arrived` is (see Progress).
  void Describe(int64_t offset, int64_t bytes, torch::ScalarType dtype) {
    Progress& mine = segment_->progress(rank_);
    mine.op_offset.store(offset, std::memory_order_relaxed);
    mine.op_bytes.store(bytes, std::memory_order_relaxed);
    mine.op_dtype.store(static_cast<int32_t>(dtype), std::memory_order_relaxed);
  }

  static std::string OperationText(const Progress& progress) {
    const int64_t offset = progress.op_offset.load(std::memory_order_relaxed);
    return absl::StrCat(
        progress.op_bytes.load(std::memory_order_relaxed), " bytes of ",
        c10::toString(static_cast<torch::ScalarType>(
            progress.op_dtype.load(std::memory_order_relaxed))),
        offset < 0 ? std::string(" through the slots")
                   : absl::StrCat(" at offset ", offset, " of its buffers"));
  }

  // After every rank has arrived: INTERNAL unless all reduce the same thing.
  absl::Status CheckSameOperation() const {
    const Progress& mine = segment_->progress(rank_);
    for (int r = 0; r < world_size_; ++r) {
      const Progress& theirs = segment_->progress(r);
      if (theirs.op_offset.load(std::memory_order_relaxed) !=
              mine.op_offset.load(std::memory_order_relaxed) ||
          theirs.op_bytes.load(std::memory_order_relaxed) !=
              mine.op_bytes.load(std::memory_order_relaxed) ||
          theirs.op_dtype.load(std::memory_order_relaxed) !=
              mine.op_dtype.load(std::memory_order_relaxed)) {
        return absl::InternalError(
            absl::StrCat("the ranks' collectives differ: rank ", r,
                         " all-reduces ", OperationText(theirs), " where rank ",
                         rank_, " all-reduces ", OperationText(mine)));
      }
    }
    return absl::OkStatus();
  }

  // Publishes operation `seq` (what it reduces, see Progress) as arrived,
  // waits for every rank's, and checks they all reduce the same thing.
  absl::Status Arrive(int64_t seq, int64_t offset, int64_t bytes,
                      torch::ScalarType dtype, absl::Time deadline,
                      absl::string_view phase) {
    Describe(offset, bytes, dtype);
    Publish(&Progress::arrived, seq);
    RETURN_IF_ERROR(WaitAll(&Progress::arrived, seq, deadline, phase));
    return CheckSameOperation();
  }

  // Rank r's sub-range of an operation of n elements: [lo, hi).
  std::pair<int64_t, int64_t> SubRange(int64_t n, int64_t element,
                                       int r) const {
    const int64_t part =
        RoundUp((n + world_size_ - 1) / world_size_, kAlign / element);
    const int64_t lo = std::min(n, r * part);
    return {lo, std::min(n, lo + part)};
  }

  void Publish(std::atomic<int64_t> Progress::*field, int64_t seq) {
    (segment_->progress(rank_).*field).store(seq, std::memory_order_release);
    Wake(segment_->header());
  }

  // The chunked all-reduce of the header comment, in place on `work`.
  absl::Status Reduce(torch::Tensor& work) {
    const int64_t element = work.element_size();
    const int64_t total = work.numel();
    const int64_t chunk_elements = segment_->header().slot_bytes / element;
    char* const data = static_cast<char*>(work.data_ptr());
    const absl::Time deadline = absl::Now() + timeout_;
    for (int64_t begin = 0; begin < total; begin += chunk_elements) {
      const int64_t n = std::min(chunk_elements, total - begin);
      const int64_t seq = ++seq_;
      const int64_t parity = seq % 2;
      char* const source = data + begin * element;

      // Everyone has finished reading this buffer's previous chunk.
      if (absl::Status s =
              WaitAll(&Progress::done, seq - 2, deadline, "reuse a buffer");
          !s.ok()) {
        return s;
      }
      std::memcpy(segment_->slot(rank_, parity), source, n * element);
      RETURN_IF_ERROR(Arrive(seq, /*offset=*/-1, n * element,
                             work.scalar_type(), deadline,
                             "see every rank's chunk"));

      const auto [lo, hi] = SubRange(n, element, rank_);
      if (hi > lo) {
        torch::NoGradGuard no_grad;
        const auto view = [&](int r) {
          return torch::from_blob(segment_->slot(r, parity) + lo * element,
                                  {hi - lo}, work.options());
        };
        torch::Tensor mine = view(rank_);
        for (int r = 0; r < world_size_; ++r) {
          if (r != rank_) mine.add_(view(r));
        }
      }
      Publish(&Progress::reduced, seq);
      if (absl::Status s = WaitAll(&Progress::reduced, seq, deadline,
                                   "see every rank's reduced part");
          !s.ok()) {
        return s;
      }
      for (int r = 0; r < world_size_; ++r) {
        const auto [r_lo, r_hi] = SubRange(n, element, r);
        if (r_hi > r_lo) {
          std::memcpy(source + r_lo * element,
                      segment_->slot(r, parity) + r_lo * element,
                      (r_hi - r_lo) * element);
        }
      }
      Publish(&Progress::done, seq);
    }
    return absl::OkStatus();
  }

  // The all-reduce of a tensor in the buffer regions (header comment): no
  // copies, two waits.
  absl::Status ReduceInBuffers(torch::Tensor& work) {
    const int64_t element = work.element_size();
    const int64_t total = work.numel();
    if (total == 0) return absl::OkStatus();
    const int64_t offset =
        static_cast<char*>(work.data_ptr()) - segment_->buffer(rank_);
    const absl::Time deadline = absl::Now() + timeout_;
    const int64_t seq = ++seq_;
    RETURN_IF_ERROR(Arrive(seq, offset, total * element, work.scalar_type(),
                           deadline, "see every rank's buffer"));

    const auto [lo, hi] = SubRange(total, element, rank_);
    const int64_t block = kSumBlockBytes / element;
    torch::NoGradGuard no_grad;
    for (int64_t begin = lo; begin < hi; begin += block) {
      const int64_t n = std::min(block, hi - begin);
      const auto view = [&](int r) {
        return torch::from_blob(segment_->buffer(r) + offset + begin * element,
                                {n}, work.options());
      };
      // Summed into rank 0's buffer in rank order, then copied to the
      // others: every rank ends with the same bits.
      torch::Tensor sum = view(0);
      for (int r = 1; r < world_size_; ++r) sum.add_(view(r));
      for (int r = 1; r < world_size_; ++r) view(r).copy_(sum);
    }
    // `done` too: the slot path's next chunks wait on it to reuse a slot.
    segment_->progress(rank_).done.store(seq, std::memory_order_release);
    Publish(&Progress::reduced, seq);
    return WaitAll(&Progress::reduced, seq, deadline, "see every rank's sums");
  }

  const int rank_;
  const int world_size_;
  const absl::Duration timeout_;
  // Shared with the tensors NewReduceBuffer handed out.
  const std::shared_ptr<Segment> segment_;
  const std::unique_ptr<Communicator> transport_;
  std::atomic<bool> aborted_{false};

  // Used only by the thread issuing operations.
  int64_t seq_ = 0;  // operations through the segment so far, every rank alike
  int64_t buffer_used_ = 0;  // bytes of this rank's buffer region handed out
  absl::Status broken_;  // the first failure; every later operation's result
};

// Rank 0's part of forming: a segment, announced as
// "<name> <nonce hex> <nonce hex> <buffer bytes>" (or "- <why>" when it
// cannot be made). Without room for the buffer regions, one without them.
std::unique_ptr<Segment> CreateAndAnnounce(const CommunicatorOptions& options,
                                           const SharedMemoryOptions& shm,
                                           gloo::rendezvous::Store& store) {
  absl::BitGen random;
  const uint64_t nonce[2] = {absl::Uniform<uint64_t>(random),
                             absl::Uniform<uint64_t>(random)};
  const std::string name =
      absl::StrCat("/podtrain-", getpid(), "-", absl::Hex(nonce[0]));
  int64_t buffer_bytes = shm.buffer_bytes;
  absl::StatusOr<std::unique_ptr<Segment>> segment = CreateSegment(
      name, options.world_size, shm.slot_bytes, buffer_bytes, nonce);
  if (!segment.ok() && buffer_bytes > 0) {
    LOG(WARNING) << "shared-memory all-reduce without its copy-free buffers ("
                 << options.world_size << " x " << buffer_bytes
                 << " bytes), every tensor through the slots: "
                 << segment.status();
    buffer_bytes = 0;
    segment = CreateSegment(name, options.world_size, shm.slot_bytes,
                            buffer_bytes, nonce);
  }
  if (!segment.ok()) {
    LOG(INFO) << "no shared-memory all-reduce: " << segment.status();
    store.set("shm/segment",
              Bytes(absl::StrCat("- ", segment.status().message())));
    return nullptr;
  }
  try {
    store.set("shm/segment",
              Bytes(absl::StrCat(name, " ", absl::Hex(nonce[0]), " ",
                                 absl::Hex(nonce[1]), " ", buffer_bytes)));
  } catch (...) {
    shm_unlink(name.c_str());
    throw;
  }
  return *std::move(segment);
}

// Another rank's part: the announced segment, or null when it cannot be
// mapped here.
std::unique_ptr<Segment> OpenAnnounced(const CommunicatorOptions& options,
                                       const SharedMemoryOptions& shm,
                                       gloo::rendezvous::Store& store) {
  store.wait({"shm/segment"}, absl::ToChronoMilliseconds(options.timeout));
  const std::vector<char> value = store.get("shm/segment");
  const std::vector<std::string> fields =
      absl::StrSplit(std::string(value.begin(), value.end()), ' ');
  uint64_t nonce[2];
  int64_t buffer_bytes;
  if (fields.size() != 4 || !absl::SimpleHexAtoi(fields[1], &nonce[0]) ||
      !absl::SimpleHexAtoi(fields[2], &nonce[1]) ||
      !absl::SimpleAtoi(fields[3], &buffer_bytes)) {
    return nullptr;  // rank 0 could not make one; it logged why
  }
  absl::StatusOr<std::unique_ptr<Segment>> segment = OpenSegment(
      fields[0], options.world_size, shm.slot_bytes, buffer_bytes, nonce);
  if (!segment.ok()) {
    LOG(INFO) << "no shared-memory all-reduce (rank " << options.rank
              << "): " << segment.status();
    return nullptr;
  }
  return *std::move(segment);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> ConnectSharedMemory(
    const CommunicatorOptions& options, const SharedMemoryOptions& shm_options,
    std::shared_ptr<gloo::rendezvous::Store> store,
    std::unique_ptr<Communicator> transport) {
  if (transport == nullptr || transport->rank() != options.rank ||
      transport->world_size() != options.world_size) {
    return absl::InvalidArgumentError(
        "ConnectSharedMemory: the transport must be a communicator of the "
        "same rank and world size");
  }
  if (shm_options.slot_bytes < 4096 || shm_options.slot_bytes % 4096 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared-memory slot_bytes must be a positive multiple of 4096, got ",
        shm_options.slot_bytes));
  }
  if (shm_options.buffer_bytes < 0 ||
      shm_options.buffer_bytes % kReduceBufferAlign != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared-memory buffer_bytes must be a non-negative multiple of ",
        kReduceBufferAlign, ", got ", shm_options.buffer_bytes));
  }
  if (options.world_size == 1) return transport;
  if (store == nullptr) {
    return absl::InvalidArgumentError(
        "a world of more than one rank needs a rendezvous store");
  }
  std::unique_ptr<Segment> segment;
  bool everyone = true;
  try {
    segment = options.rank == 0
                  ? CreateAndAnnounce(options, shm_options, *store)
                  : OpenAnnounced(options, shm_options, *store);
    bool mine = false;
    if (segment != nullptr) {
      const absl::Status locked = segment->LockRank(options.rank);
      if (locked.ok()) {
        mine = true;
      } else {
        LOG(INFO) << "no shared-memory all-reduce (rank " << options.rank
                  << "): " << locked;
      }
    }
    store.get()->set(absl::StrCat("shm/attached/", options.rank),
                     Bytes(mine ? "1" : "0"));
    std::vector<std::string> keys;
    for (int r = 0; r < options.world_size; ++r) {
      keys.push_back(absl::StrCat("shm/attached/", r));
    }
    store->wait(keys, absl::ToChronoMilliseconds(options.timeout));
    for (const std::string& key : keys) {
      const std::vector<char> value = store->get(key);
      everyone = everyone && value.size() == 1 && value[0] == '1';
    }
  } catch (...) {
    if (options.rank == 0 && segment != nullptr) {
      shm_unlink(segment->name().c_str());
    }
    return StoreFailure(absl::StrCat("forming the shared-memory all-reduce (",
                                     "rank ", options.rank, " of ",
                                     options.world_size, ")"));
  }
  if (options.rank == 0 && segment != nullptr) {
    // Every rank that could open it has (or never will): the name can go,
    // so nothing is left in /dev/shm however the world ends.
    shm_unlink(segment->name().c_str());
  }
  if (!everyone) return transport;
  if (options.rank == 0) {
    LOG(INFO) << "all-reduce of " << options.world_size
              << " ranks through shared memory ("
              << SegmentBytes(options.world_size, shm_options.slot_bytes,
                              segment->buffer_bytes())
              << " bytes, " << segment->buffer_bytes()
              << " of copy-free buffers a rank)";
  }
  return std::unique_ptr<Communicator>(
      std::make_unique<SharedMemoryCommunicator>(options, std::move(segment),
                                                 std::move(transport)));
}

bool UsesSharedMemory(const Communicator& communicator) {
  return dynamic_cast<const SharedMemoryCommunicator*>(&communicator) !=
         nullptr;
}

}  // namespace podtrain::worker
