#include "dataset/manifest.h"

#include <errno.h>
#include <sys/stat.h>

#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/stable_hash.h"

namespace podtrain::dataset {
namespace {

// Schema dimensions are capped so that height * width * channels cannot
// overflow and one example stays a sane size.
constexpr int64_t kMaxPixelsPerExample = int64_t{1} << 31;

bool HasControlCharacter(absl::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool HasWhitespace(absl::string_view text) {
  for (const char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return true;
  }
  return false;
}

absl::Status ValidateName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("dataset name is empty");
  if (HasControlCharacter(name) || absl::StripAsciiWhitespace(name) != name) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset name \"", absl::CHexEscape(name),
        "\" has control characters or leading or trailing whitespace"));
  }
  return absl::OkStatus();
}

// Shard paths are relative to the dataset directory and stay inside it, so a
// dataset directory can be moved or copied as a whole.
absl::Status ValidateShardPath(absl::string_view path) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard path \"", absl::CHexEscape(path), "\" ", why));
  };
  if (path.empty()) return bad("is empty (only synthetic shards have none)");
  if (HasWhitespace(path) || HasControlCharacter(path)) {
    return bad("contains whitespace or control characters");
  }
  if (path.front() == '/') return bad("is absolute; it must be relative");
  for (const absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return bad("leaves the dataset directory (\"..\")");
  }
  return absl::OkStatus();
}

absl::Status ValidateShard(const Manifest& manifest, int64_t index,
                           absl::flat_hash_set<absl::string_view>* paths) {
  const ShardInfo& shard = manifest.shards[index];
  const auto context = absl::StrCat("shard ", index);
  if (manifest.synthetic) {
    if (!shard.path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": a synthetic shard has no file, but path is \"",
          absl::CHexEscape(shard.path), "\""));
    }
  } else {
    RETURN_IF_ERROR(WithContext(ValidateShardPath(shard.path), context));
    if (!paths->insert(shard.path).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": path \"", shard.path, "\" is listed twice"));
    }
  }
  if (shard.records < 0 || shard.bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, ": records (", shard.records, ") and bytes (",
                     shard.bytes, ") must be non-negative"));
  }
  return absl::OkStatus();
}

void AppendShardLine(const ShardInfo& shard, std::string* out) {
  absl::StrAppend(out, "shard path=", shard.path, " records=", shard.records,
                  " bytes=", shard.bytes,
                  " digest=", FingerprintHex(shard.digest), "\n");
}

// Parses MANIFEST text line by line, in the fixed order WriteManifest uses,
// with errors that name the file and line.
class ManifestParser {
 public:
  ManifestParser(absl::string_view text, absl::string_view file_name)
      : lines_(absl::StrSplit(text, '\n')), file_name_(file_name) {}

  absl::StatusOr<Manifest> Parse();

 private:
  // Moves to the next line that is neither blank nor a comment, which must
  // start with `key`, and returns the rest of it. Running out of lines is
  // DATA_LOSS (a truncated file); another key is INVALID_ARGUMENT.
  absl::StatusOr<absl::string_view> ExpectLine(absl::string_view key,
                                               absl::string_view what);
  // Whether a line that is neither blank nor a comment follows the current
  // one; moves to it.
  bool NextSignificantLine();
  absl::Status LineError(absl::string_view what) const;

  absl::StatusOr<Schema> ParseSchema(absl::string_view text) const;
  absl::StatusOr<bool> ParseBool(absl::string_view text) const;
  absl::StatusOr<ShardInfo> ParseShard(absl::string_view text) const;
  // Splits "k1=v1 k2=v2" into the values of `keys` (each required once, any
  // order, nothing else allowed).
  absl::StatusOr<std::vector<absl::string_view>> ParseFields(
      absl::string_view text, const std::vector<absl::string_view>& keys,
      absl::string_view line_kind) const;
  absl::StatusOr<int64_t> ParseCount(absl::string_view field,
                                     absl::string_view text) const;
  absl::StatusOr<int32_t> ParseDimension(absl::string_view field,
                                         absl::string_view text) const;
  absl::StatusOr<uint64_t> ParseHex64(absl::string_view field,
                                      absl::string_view text) const;

  const std::vector<absl::string_view> lines_;
  const std::string file_name_;
  int64_t line_index_ = -1;  // of the current line; reported 1-based
};

absl::StatusOr<Manifest> ManifestParser::Parse() {
  Manifest manifest;
  ASSIGN_OR_RETURN(absl::string_view format,
                   ExpectLine("format", "the format line"));
  if (format != kManifestFormat) {
    return LineError(
        absl::StrCat("unsupported manifest format \"", absl::CHexEscape(format),
                     "\" (this build reads ", kManifestFormat, ")"));
  }
  ASSIGN_OR_RETURN(absl::string_view name, ExpectLine("name", "the name"));
  manifest.name = std::string(name);
  ASSIGN_OR_RETURN(absl::string_view schema,
                   ExpectLine("schema", "the schema"));
  ASSIGN_OR_RETURN(manifest.schema, ParseSchema(schema));
  ASSIGN_OR_RETURN(absl::string_view synthetic,
                   ExpectLine("synthetic", "the synthetic flag"));
  ASSIGN_OR_RETURN(manifest.synthetic, ParseBool(synthetic));

  ASSIGN_OR_RETURN(absl::string_view examples_text,
                   ExpectLine("examples", "the example count"));
  ASSIGN_OR_RETURN(const int64_t examples,
                   ParseCount("examples", examples_text));
  const int64_t examples_line = line_index_;
  ASSIGN_OR_RETURN(absl::string_view shards_text,
                   ExpectLine("shards", "the shard count"));
  ASSIGN_OR_RETURN(const int64_t num_shards, ParseCount("shards", shards_text));
  for (int64_t i = 0; i < num_shards; ++i) {
    ASSIGN_OR_RETURN(
        absl::string_view shard,
        ExpectLine("shard", absl::StrCat("shard ", i, " of ", num_shards)));
    ASSIGN_OR_RETURN(ShardInfo info, ParseShard(shard));
    manifest.shards.push_back(std::move(info));
  }
  ASSIGN_OR_RETURN(absl::string_view fingerprint_text,
                   ExpectLine("fingerprint", "the fingerprint"));
  ASSIGN_OR_RETURN(const uint64_t fingerprint,
                   ParseHex64("fingerprint", fingerprint_text));
  if (NextSignificantLine()) {
    return LineError("unexpected line after the fingerprint");
  }

  RETURN_IF_ERROR(WithContext(ValidateManifest(manifest), file_name_));
  if (manifest.num_examples() != examples) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_name_, ":", examples_line + 1, ": examples is ", examples,
        " but the shards hold ", manifest.num_examples()));
  }
  if (manifest.Fingerprint() != fingerprint) {
    return absl::DataLossError(absl::StrCat(
        file_name_, ": recorded fingerprint ", FingerprintHex(fingerprint),
        " does not match the contents (",
        FingerprintHex(manifest.Fingerprint()),
        "); the file was edited or damaged"));
  }
  return manifest;
}

bool ManifestParser::NextSignificantLine() {
  while (++line_index_ < static_cast<int64_t>(lines_.size())) {
    const absl::string_view line =
        absl::StripAsciiWhitespace(lines_[line_index_]);
    if (!line.empty() && line.front() != '#') return true;
  }
  return false;
}

absl::StatusOr<absl::string_view> ManifestParser::ExpectLine(
    absl::string_view key, absl::string_view what) {
  if (!NextSignificantLine()) {
    return absl::DataLossError(absl::StrCat(file_name_, ": ends before ", what,
                                            " (\"", key,
                                            "\" line); truncated?"));
  }
  const absl::string_view line =
      absl::StripAsciiWhitespace(lines_[line_index_]);
  const std::pair<absl::string_view, absl::string_view> key_value =
      absl::StrSplit(line, absl::MaxSplits(' ', 1));
  if (key_value.first != key) {
    return LineError(absl::StrCat("expected a \"", key, "\" line (", what,
                                  "), found \"", absl::CHexEscape(line), "\""));
  }
  return key_value.second;
}

absl::Status ManifestParser::LineError(absl::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrCat(file_name_, ":", line_index_ + 1, ": ", what));
}

absl::StatusOr<std::vector<absl::string_view>> ManifestParser::ParseFields(
    absl::string_view text, const std::vector<absl::string_view>& keys,
    absl::string_view line_kind) const {
  std::vector<absl::string_view> values(keys.size());
  std::vector<bool> seen(keys.size(), false);
  for (const absl::string_view field :
       absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    const std::pair<absl::string_view, absl::string_view> key_value =
        absl::StrSplit(field, absl::MaxSplits('=', 1));
    size_t k = 0;
    while (k < keys.size() && keys[k] != key_value.first) ++k;
    if (k == keys.size() || field.find('=') == absl::string_view::npos) {
      return LineError(absl::StrCat("unexpected ", line_kind, " field \"",
                                    absl::CHexEscape(field), "\""));
    }
    if (seen[k]) {
      return LineError(
          absl::StrCat(line_kind, " field \"", keys[k], "\" appears twice"));
    }
    seen[k] = true;
    values[k] = key_value.second;
  }
  for (size_t k = 0; k < keys.size(); ++k) {
    if (!seen[k]) {
      return LineError(
          absl::StrCat(line_kind, " line lacks the \"", keys[k], "\" field"));
    }
  }
  return values;
}

absl::StatusOr<Schema> ManifestParser::ParseSchema(
    absl::string_view text) const {
  ASSIGN_OR_RETURN(
      const std::vector<absl::string_view> values,
      ParseFields(text, {"height", "width", "channels", "num_classes"},
                  "schema"));
  Schema schema;
  ASSIGN_OR_RETURN(schema.height, ParseDimension("height", values[0]));
  ASSIGN_OR_RETURN(schema.width, ParseDimension("width", values[1]));
  ASSIGN_OR_RETURN(schema.channels, ParseDimension("channels", values[2]));
  ASSIGN_OR_RETURN(schema.num_classes,
                   ParseDimension("num_classes", values[3]));
  return schema;
}

absl::StatusOr<bool> ManifestParser::ParseBool(absl::string_view text) const {
  if (text == "true") return true;
  if (text == "false") return false;
  return LineError(
      absl::StrCat("synthetic must be \"true\" or \"false\", not \"",
                   absl::CHexEscape(text), "\""));
}

absl::StatusOr<ShardInfo> ManifestParser::ParseShard(
    absl::string_view text) const {
  ASSIGN_OR_RETURN(
      const std::vector<absl::string_view> values,
      ParseFields(text, {"path", "records", "bytes", "digest"}, "shard"));
  ShardInfo shard;
  shard.path = std::string(values[0]);
  ASSIGN_OR_RETURN(shard.records, ParseCount("records", values[1]));
  ASSIGN_OR_RETURN(shard.bytes, ParseCount("bytes", values[2]));
  ASSIGN_OR_RETURN(shard.digest, ParseHex64("digest", values[3]));
  return shard;
}

absl::StatusOr<int64_t> ManifestParser::ParseCount(
    absl::string_view field, absl::string_view text) const {
  int64_t value;
  if (text.empty() || !absl::ascii_isdigit(text[0]) ||
      !absl::SimpleAtoi(text, &value)) {
    return LineError(absl::StrCat(field, " \"", absl::CHexEscape(text),
                                  "\" is not a non-negative integer"));
  }
  return value;
}

absl::StatusOr<int32_t> ManifestParser::ParseDimension(
    absl::string_view field, absl::string_view text) const {
  ASSIGN_OR_RETURN(const int64_t value, ParseCount(field, text));
  if (value > std::numeric_limits<int32_t>::max()) {
    return LineError(absl::StrCat(field, " ", value, " is too large"));
  }
  return static_cast<int32_t>(value);
}

absl::StatusOr<uint64_t> ManifestParser::ParseHex64(
    absl::string_view field, absl::string_view text) const {
  uint64_t value = 0;
  bool all_hex = text.size() == 16;
  for (const char c : text) all_hex = all_hex && absl::ascii_isxdigit(c);
  if (!all_hex || !absl::SimpleHexAtoi(text, &value)) {
    return LineError(absl::StrCat(field, " \"", absl::CHexEscape(text),
                                  "\" is not 16 hex digits"));
  }
  return value;
}

}  // namespace

int64_t Manifest::num_examples() const {
  int64_t total = 0;
  for (const ShardInfo& shard : shards) total += shard.records;
  return total;
}

std::vector<int64_t> Manifest::ShardSizes() const {
  std::vector<int64_t> sizes;
  sizes.reserve(shards.size());
  for (const ShardInfo& shard : shards) sizes.push_back(shard.records);
  return sizes;
}

uint64_t Manifest::Fingerprint() const {
  Fnv1a64 hash;
  hash.AddString(kManifestFormat);  // a new format gets new fingerprints
  hash.AddString(name);
  hash.AddU32(schema.height);
  hash.AddU32(schema.width);
  hash.AddU32(schema.channels);
  hash.AddU32(schema.num_classes);
  hash.AddU32(synthetic ? 1 : 0);
  hash.AddU64(shards.size());
  for (const ShardInfo& shard : shards) {
    hash.AddString(shard.path);
    hash.AddU64(shard.records);
    hash.AddU64(shard.digest);
  }
  return hash.value();
}

bool operator==(const ShardInfo& a, const ShardInfo& b) {
  return a.path == b.path && a.records == b.records && a.digest == b.digest &&
         a.bytes == b.bytes;
}

bool operator==(const Schema& a, const Schema& b) {
  return a.height == b.height && a.width == b.width &&
         a.channels == b.channels && a.num_classes == b.num_classes;
}

bool operator==(const Manifest& a, const Manifest& b) {
  return a.name == b.name && a.schema == b.schema &&
         a.synthetic == b.synthetic && a.shards == b.shards;
}

std::string FingerprintHex(uint64_t fingerprint) {
  return absl::StrFormat("%016x", fingerprint);
}

std::vector<int64_t> EqualShardSizes(int64_t total, int64_t parts) {
  std::vector<int64_t> sizes(parts, total / parts);
  for (int64_t i = 0; i < total % parts; ++i) ++sizes[i];
  return sizes;
}

absl::Status ValidateSchema(const Schema& schema) {
  const std::pair<const char*, int32_t> dimensions[] = {
      {"height", schema.height},
      {"width", schema.width},
      {"channels", schema.channels}};
  for (const auto& [field, value] : dimensions) {
    if (value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("schema ", field, " is ", value, "; it must be >= 1"));
    }
  }
  if (schema.num_classes < 1 || schema.num_classes > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("schema num_classes is ", schema.num_classes,
                     "; it must be in [1, 256] (labels are one byte)"));
  }
  const int64_t pixels = int64_t{schema.height} * schema.width;
  if (pixels > kMaxPixelsPerExample ||
      pixels * schema.channels > kMaxPixelsPerExample) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schema ", schema.height, "x", schema.width, "x", schema.channels,
        " has more than 2^31 pixel bytes per example"));
  }
  return absl::OkStatus();
}

absl::Status ValidateManifest(const Manifest& manifest) {
  RETURN_IF_ERROR(ValidateName(manifest.name));
  RETURN_IF_ERROR(ValidateSchema(manifest.schema));
  if (manifest.shards.empty()) {
    return absl::InvalidArgumentError("a dataset needs at least one shard");
  }
  absl::flat_hash_set<absl::string_view> paths;
  int64_t total = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(manifest.shards.size()); ++i) {
    RETURN_IF_ERROR(ValidateShard(manifest, i, &paths));
    if (manifest.shards[i].records >
        std::numeric_limits<int64_t>::max() - total) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the shards hold more than 2^63 examples (at shard ", i, ")"));
    }
    total += manifest.shards[i].records;
  }
  return absl::OkStatus();
}

std::string ManifestToText(const Manifest& manifest) {
  std::string out = absl::StrFormat(
      "# podtrain dataset manifest. Written by podtrain; do not edit: the\n"
      "# fingerprint on the last line covers every other line.\n"
      "format %s\n"
      "name %s\n"
      "schema height=%d width=%d channels=%d num_classes=%d\n"
      "synthetic %s\n"
      "examples %d\n"
      "shards %d\n",
      kManifestFormat, manifest.name, manifest.schema.height,
      manifest.schema.width, manifest.schema.channels,
      manifest.schema.num_classes, manifest.synthetic ? "true" : "false",
      manifest.num_examples(), manifest.shards.size());
  for (const ShardInfo& shard : manifest.shards) AppendShardLine(shard, &out);
  absl::StrAppend(&out, "fingerprint ", FingerprintHex(manifest.Fingerprint()),
                  "\n");
  return out;
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view text,
                                       absl::string_view file_name) {
  return ManifestParser(text, file_name).Parse();
}

std::string ManifestPath(absl::string_view dir) {
  return JoinPath(dir, kManifestFileName);
}

absl::Status WriteManifest(const std::string& dir, const Manifest& manifest) {
  const std::string path = ManifestPath(dir);
  RETURN_IF_ERROR(WithContext(ValidateManifest(manifest),
                              absl::StrCat("refusing to write ", path)));
  return WriteFileAtomically(path, ManifestToText(manifest));
}

absl::StatusOr<Manifest> ReadManifest(const std::string& dir) {
  struct stat info;
  if (stat(dir.c_str(), &info) != 0) {
    return PosixError("cannot open dataset directory", dir, errno);
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset directory ", dir,
                     " is not a directory (pass the directory "
                     "that holds MANIFEST, not a file)"));
  }
  const std::string path = ManifestPath(dir);
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  return ParseManifest(text, path);
}

}  // namespace podtrain::dataset
