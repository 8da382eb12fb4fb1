#include "worker/gradient_buckets.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace podtrain::worker {
namespace {

bool Hooked(const torch::Tensor& param) {
  return param.defined() && param.requires_grad();
}

int64_t Bytes(const torch::Tensor& tensor) {
  return tensor.numel() * static_cast<int64_t>(tensor.element_size());
}

// Runs after AccumulateGrad has added this backward's gradient into .grad().
class AfterAccumulation final : public torch::autograd::FunctionPostHook {
 public:
  explicit AfterAccumulation(std::function<void()> callback)
      : callback_(std::move(callback)) {}
  torch::autograd::variable_list operator()(
      const torch::autograd::variable_list& outputs,
      const torch::autograd::variable_list& /*inputs*/) override {
    callback_();
    return outputs;
  }

 private:
  const std::function<void()> callback_;
};

}  // namespace

std::vector<std::vector<size_t>> AssignBuckets(
    const std::vector<torch::Tensor>& parameters,
    const GradientBucketOptions& options) {
  // One bucket being filled per (dtype, device), as DDP does: a flat buffer
  // holds one dtype on one device.
  struct Open {
    torch::ScalarType dtype;
    torch::Device device;
    std::vector<size_t> params;
    int64_t bytes = 0;
  };
  std::vector<Open> open;
  std::vector<std::vector<size_t>> buckets;
  const auto limit = [&] {
    return buckets.empty() ? options.first_bucket_bytes : options.bucket_bytes;
  };
  const auto close = [&](Open& bucket) {
    buckets.push_back(std::move(bucket.params));
    bucket.params.clear();
    bucket.bytes = 0;
  };
  for (size_t i = parameters.size(); i-- > 0;) {
    const torch::Tensor& param = parameters[i];
    if (!Hooked(param)) continue;
    Open* bucket = nullptr;
    for (Open& candidate : open) {
      if (candidate.dtype == param.scalar_type() &&
          candidate.device == param.device()) {
        bucket = &candidate;
      }
    }
    if (bucket == nullptr) {
      open.push_back(Open{param.scalar_type(), param.device(), {}, 0});
      bucket = &open.back();
    }
    const int64_t bytes = Bytes(param);
    if (!bucket->params.empty() && bucket->bytes + bytes > limit()) {
      close(*bucket);
    }
    bucket->params.push_back(i);
    bucket->bytes += bytes;
    if (bucket->bytes >= limit()) close(*bucket);
  }
  for (Open& bucket : open) {
    if (!bucket.params.empty()) close(bucket);
  }
  return buckets;
}

int64_t ReduceBufferBytes(const std::vector<torch::Tensor>& parameters) {
  // A bucket's bytes rounded up are at most its parameters' bytes rounded
  // up one by one.
  int64_t bytes = 0;
  for (const torch::Tensor& param : parameters) {
    if (Hooked(param)) bytes += ReservedReduceBufferBytes(Bytes(param));
  }
  return bytes;
}

GradientBuckets::GradientBuckets(std::vector<torch::Tensor> parameters,
                                 Communicator* communicator,
                                 GradientBucketOptions options)
    : params_(std::move(parameters)),
      communicator_(communicator),
      overlap_(options.overlap) {
  const std::vector<std::vector<size_t>> assignment =
      AssignBuckets(params_, options);
  bucket_of_.assign(params_.size(), 0);
  slot_in_bucket_.assign(params_.size(), 0);
  hook_handles_.assign(params_.size(), 0);
  for (size_t b = 0; b < assignment.size(); ++b) {
    Bucket bucket;
    bucket.params = assignment[b];
    int64_t elements = 0;
    for (size_t slot = 0; slot < bucket.params.size(); ++slot) {
      const size_t p = bucket.params[slot];
      bucket_of_[p] = b;
      slot_in_bucket_[p] = slot;
      bucket.offsets.push_back(elements);
      elements += params_[p].numel();
      bucket.bytes += Bytes(params_[p]);
    }
    const torch::Tensor& first = params_[bucket.params.front()];
    // Where the communicator reduces fastest: shared memory reduces its own
    // buffers without copying them in and out.
    bucket.buffer =
        communicator_->NewReduceBuffer(elements, torch::TensorOptions()
                                                     .dtype(first.scalar_type())
                                                     .device(first.device()));
    buckets_.push_back(std::move(bucket));
  }
  {
    absl::MutexLock lock(&mu_);
    arrived_.assign(params_.size(), false);
    ResetStepLocked();
  }
  accumulators_.resize(params_.size());
  for (size_t p = 0; p < params_.size(); ++p) {
    if (!Hooked(params_[p])) continue;
    {
      torch::NoGradGuard no_grad;
      AdoptGrad(p);
    }
    // The hook holds `this`, not the parameter (that would be a cycle
    // through the parameter's own hook list); the destructor removes it.
    // Holding the accumulator keeps the node, and so its hook, alive.
    accumulators_[p] = torch::autograd::impl::grad_accumulator(params_[p]);
    hook_handles_[p] = accumulators_[p]->add_post_hook(
        std::make_unique<AfterAccumulation>([this, p] { OnGradient(p); }));
  }
  if (overlap_)
    thread_ = std::thread(&GradientBuckets::CommunicationLoop, this);
}

GradientBuckets::~GradientBuckets() {
  for (size_t p = 0; p < params_.size(); ++p) {
    if (accumulators_[p] != nullptr) {
      accumulators_[p]->del_post_hook(hook_handles_[p]);
    }
  }
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

torch::Tensor GradientBuckets::Slot(size_t param) const {
  const Bucket& bucket = buckets_[bucket_of_[param]];
  return bucket.buffer
      .narrow(0, bucket.offsets[slot_in_bucket_[param]], params_[param].numel())
      .view(params_[param].sizes());
}

void GradientBuckets::AdoptGrad(size_t param) {
  torch::Tensor grad = params_[param].grad();
  const torch::Tensor slot = Slot(param);
  if (grad.defined() && grad.data_ptr() == slot.data_ptr() &&
      grad.sizes() == slot.sizes() && grad.strides() == slot.strides()) {
    return;  // already the bucket's view: nothing to copy
  }
  if (grad.defined() && !grad.is_sparse()) {
    slot.copy_(grad);
  } else {
    slot.zero_();
  }
  params_[param].mutable_grad() = slot;
}

void GradientBuckets::OnGradient(size_t param) {
  {
    absl::MutexLock lock(&mu_);
    if (arrived_[param]) {
      if (error_.ok()) {
        error_ = absl::FailedPreconditionError(absl::StrCat(
            "the gradient of parameter ", param,
            " arrived twice before FinishReduction (a second backward "
            "without reducing the first)"));
      }
      return;
    }
    arrived_[param] = true;
    ++hooks_this_step_;
  }
  const torch::Tensor grad = params_[param].grad();
  const bool sparse = grad.defined() && grad.is_sparse();
  {
    // Autograd accumulated in place into the bucket's view unless .grad()
    // was replaced (set to none, assigned): then copy it back into the
    // bucket once. Only this thread writes this slice until the bucket is
    // launched.
    torch::NoGradGuard no_grad;
    if (!sparse) AdoptGrad(param);
  }
  absl::MutexLock lock(&mu_);
  if (sparse && error_.ok()) {
    error_ = absl::InvalidArgumentError(absl::StrCat(
        "parameter ", param, " has a sparse gradient; buckets are dense"));
  }
  Bucket& bucket = buckets_[bucket_of_[param]];
  if (--bucket.pending == 0 && overlap_) LaunchLocked(bucket_of_[param]);
}

void GradientBuckets::LaunchLocked(size_t b) {
  buckets_[b].launched = true;
  buckets_[b].hooks_at_launch = hooks_this_step_;
}

void GradientBuckets::CommunicationLoop() {
  while (true) {
    size_t b;
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (next_to_reduce_ < buckets_.size() &&
                             buckets_[next_to_reduce_].launched);
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      b = next_to_reduce_;
    }
    ReduceBucket(b);
  }
}

void GradientBuckets::ReduceBucket(size_t b) {
  bool skip;
  {
    absl::MutexLock lock(&mu_);
    // After a failure the communicator is broken: skip the rest rather
    // than wait on collectives that cannot succeed.
    skip = !error_.ok();
  }
  absl::Status status;
  absl::Duration took;
  if (!skip) {
    torch::Tensor buffer = buckets_[b].buffer;
    const absl::Time start = absl::Now();
    status = communicator_->AllReduceSum(buffer);
    took = absl::Now() - start;
  }
  absl::MutexLock lock(&mu_);
  reduce_time_ += took;
  if (!skip && status.ok()) reduce_bytes_ += buckets_[b].bytes;
  if (!status.ok() && error_.ok()) {
    error_ = WithContext(status, absl::StrCat("all-reducing gradient bucket ",
                                              b, " of ", buckets_.size(), " (",
                                              buckets_[b].bytes, " bytes)"));
  }
  ++next_to_reduce_;
}

absl::Status GradientBuckets::FinishReduction() {
  // Launch what backward left: parameters without a gradient this step
  // contribute their current .grad() (zeros if none). Backward is over, so
  // no hook runs concurrently.
  for (size_t p = 0; p < params_.size(); ++p) {
    if (!Hooked(params_[p])) continue;
    bool arrived;
    {
      absl::MutexLock lock(&mu_);
      arrived = arrived_[p];
    }
    if (!arrived) OnGradient(p);
  }
  const absl::Time wait_start = absl::Now();
  if (!overlap_) {
    // Every bucket now, on this thread, in index order: all of it shows as
    // the wait.
    for (size_t b = 0; b < buckets_.size(); ++b) {
      {
        absl::MutexLock lock(&mu_);
        LaunchLocked(b);
      }
      ReduceBucket(b);
    }
  }
  absl::Status error;
  {
    absl::MutexLock lock(&mu_);
    const auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return next_to_reduce_ == buckets_.size();
    };
    mu_.Await(absl::Condition(&done));
    // After a failure error_ stays set, so every later step skips its
    // collectives and returns it here.
    error = error_;
  }
  const absl::Duration waited = absl::Now() - wait_start;
  // Every .grad() is a view of its bucket, reduced in place: nothing to copy.
  absl::MutexLock lock(&mu_);
  last_reduce_seconds_ = absl::ToDoubleSeconds(reduce_time_);
  last_reduce_bytes_ = reduce_bytes_;
  last_wait_seconds_ = absl::ToDoubleSeconds(waited);
  last_overlapped_ = 0;
  for (const Bucket& bucket : buckets_) {
    if (bucket.hooks_at_launch >= 0 &&
        bucket.hooks_at_launch < hooks_this_step_) {
      ++last_overlapped_;
    }
  }
  ResetStepLocked();
  return error;
}

absl::Status GradientBuckets::ReduceNow() {
  {
    absl::MutexLock lock(&mu_);
    if (hooks_this_step_ > 0) {
      return absl::FailedPreconditionError(
          "ReduceNow after backward hooks fired this step; call "
          "FinishReduction instead");
    }
  }
  return FinishReduction();
}

void GradientBuckets::ResetStepLocked() {
  arrived_.assign(params_.size(), false);
  hooks_this_step_ = 0;
  next_to_reduce_ = 0;
  reduce_time_ = absl::ZeroDuration();
  reduce_bytes_ = 0;
  for (Bucket& bucket : buckets_) {
    bucket.pending = static_cast<int>(bucket.params.size());
    bucket.launched = false;
    bucket.hooks_at_launch = -1;
  }
}

double GradientBuckets::last_reduce_seconds() const {
  absl::MutexLock lock(&mu_);
  return last_reduce_seconds_;
}

int64_t GradientBuckets::last_reduce_bytes() const {
  absl::MutexLock lock(&mu_);
  return last_reduce_bytes_;
}

double GradientBuckets::last_wait_seconds() const {
  absl::MutexLock lock(&mu_);
  return last_wait_seconds_;
}

int GradientBuckets::last_buckets_launched_before_last_grad() const {
  absl::MutexLock lock(&mu_);
  return last_overlapped_;
}

}  // namespace podtrain::worker
