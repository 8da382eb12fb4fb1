// Ingest of Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) into podtrain
// datasets. Reads the gzip-compressed IDX files that Debian's
// dataset-fashion-mnist package installs:
//   <source_dir>/train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz
//   <source_dir>/t10k-images-idx3-ubyte.gz,  t10k-labels-idx1-ubyte.gz
// and writes two dataset directories (record shards + MANIFEST):
//   <out_dir>/train   60,000 examples
//   <out_dir>/test    10,000 examples
// with schema 28x28x1 and 10 classes. Records keep the IDX order and are
// split into contiguous shards of near-equal size
// (shard-00000-of-00008.rec, ...), so example id g is the g-th image of the
// IDX file.
//
// Ingest is deterministic: the same inputs and shard count give byte-identical
// shards and the same fingerprint, so re-running it over an existing dataset
// is safe. The MANIFEST is written last; shards of an earlier ingest that the
// new MANIFEST no longer lists are then removed. If ingest fails, no new
// MANIFEST is written (shard files written so far may remain).
//
// Thread-safety: IngestFashionMnist may run concurrently for different
// out_dirs.

#ifndef PODTRAIN_DATASET_FASHION_MNIST_H_
#define PODTRAIN_DATASET_FASHION_MNIST_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "dataset/manifest.h"

namespace podtrain::dataset {

inline constexpr int32_t kFashionMnistRows = 28;
inline constexpr int32_t kFashionMnistCols = 28;
inline constexpr int32_t kFashionMnistClasses = 10;

struct IngestOptions {
  std::string source_dir = "/usr/share/datasets/fashion-mnist";
  std::string out_dir;
  int32_t num_shards = 8;  // per split, in [1, 100000]
};

// Ingests both splits; returns the (train, test) manifests. Errors name the
// file and what is wrong: NOT_FOUND for a missing input; INVALID_ARGUMENT for
// a file that is not the expected IDX file (magic number, 28x28 dimensions,
// a label outside 0-9, image and label counts that disagree, trailing data);
// DATA_LOSS for a truncated or corrupt .gz; the OS's error for output that
// cannot be written.
absl::StatusOr<std::pair<Manifest, Manifest>> IngestFashionMnist(
    const IngestOptions& options);

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_FASHION_MNIST_H_
