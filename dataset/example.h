// One training example (an image and its class label) and its record
// payload encoding: one label byte followed by height * width * channels
// pixel bytes, row-major, channels last (HWC), as in the IDX files.
//
// Thread-safety: plain values and pure functions.

#ifndef PODTRAIN_DATASET_EXAMPLE_H_
#define PODTRAIN_DATASET_EXAMPLE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dataset/manifest.h"

namespace podtrain::dataset {

struct Example {
  int32_t label = 0;
  std::string pixels;  // height * width * channels uint8 values, HWC
};

// height * width * channels.
int64_t PixelCount(const Schema& schema);

// The record payload for `example`: its label as one byte, then its pixels.
// REQUIRES: 0 <= example.label < 256.
std::string EncodeExample(const Example& example);

// Parses a payload written by EncodeExample. DATA_LOSS if its size is not
// 1 + PixelCount(schema) or its label is not below schema.num_classes.
absl::StatusOr<Example> DecodeExample(absl::string_view payload,
                                      const Schema& schema);

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_EXAMPLE_H_
