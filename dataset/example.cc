#include "dataset/example.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace podtrain::dataset {

int64_t PixelCount(const Schema& schema) {
  return int64_t{schema.height} * schema.width * schema.channels;
}

std::string EncodeExample(const Example& example) {
  DCHECK(example.label >= 0 && example.label < 256) << example.label;
  std::string payload;
  payload.reserve(1 + example.pixels.size());
  payload.push_back(static_cast<char>(example.label));
  payload.append(example.pixels);
  return payload;
}

absl::StatusOr<Example> DecodeExample(absl::string_view payload,
                                      const Schema& schema) {
  const int64_t pixels = PixelCount(schema);
  if (static_cast<int64_t>(payload.size()) != 1 + pixels) {
    return absl::DataLossError(absl::StrCat(
        "example payload is ", payload.size(), " bytes; schema ", schema.height,
        "x", schema.width, "x", schema.channels, " needs ", 1 + pixels,
        " (1 label byte + ", pixels, " pixel bytes)"));
  }
  Example example;
  example.label = static_cast<uint8_t>(payload[0]);
  if (example.label >= schema.num_classes) {
    return absl::DataLossError(absl::StrCat("example label ", example.label,
                                            " is out of range for ",
                                            schema.num_classes, " classes"));
  }
  example.pixels = std::string(payload.substr(1));
  return example;
}

}  // namespace podtrain::dataset
