#include "cli/job_commands.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "coordinator/job_spec.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "services/grpc_status.h"

namespace podtrain::cli {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::OneofDescriptor;

// Shortest text that reads back as `value`: "0.1", not "0.10000000000000001".
std::string FormatDouble(double value) {
  char text[32];
  const std::to_chars_result result =
      std::to_chars(text, text + sizeof(text), value);
  return std::string(text, result.ptr);
}

std::string ToString(google::protobuf::StringPiece text) {
  return std::string(text.data(), text.size());
}

}  // namespace

// ---------------------------------------------------------------------------
// Token, names, request ids
// ---------------------------------------------------------------------------

absl::StatusOr<std::string> ReadBearerToken(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string contents, dataset::ReadFileToString(path));
  const std::string token(absl::StripAsciiWhitespace(contents));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, " is empty"));
  }
  return token;
}

absl::StatusOr<std::string> NormalizeJobName(absl::string_view job) {
  absl::string_view id = job;
  absl::ConsumePrefix(&id, "jobs/");
  int64_t number = 0;
  const bool digits =
      !id.empty() && std::all_of(id.begin(), id.end(), absl::ascii_isdigit);
  if (!digits || !absl::SimpleAtoi(id, &number) || number < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", job,
        "' is not a job name: use jobs/000001, 000001 or 1 (ids start at 1)"));
  }
  return absl::StrFormat("jobs/%06d", number);
}

std::string NewRequestId() {
  // absl::BitGen is seeded from the OS's entropy in every process, so two
  // invocations never share a sequence.
  absl::BitGen random;
  uint64_t high = absl::Uniform<uint64_t>(random);
  uint64_t low = absl::Uniform<uint64_t>(random);
  high = (high & ~uint64_t{0xF000}) | 0x4000;                    // version 4
  low = (low & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);  // variant 1
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", high >> 32,
                         (high >> 16) & 0xFFFF, high & 0xFFFF, low >> 48,
                         low & 0xFFFFFFFFFFFF);
}

// ---------------------------------------------------------------------------
// Spec files
// ---------------------------------------------------------------------------

namespace {

// Keeps the first error the text-format parser reports, as
// "file:line:column: message".
class FirstTextFormatError : public google::protobuf::io::ErrorCollector {
 public:
  explicit FirstTextFormatError(std::string filename)
      : filename_(std::move(filename)) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!error_.empty()) return;
    // The parser counts from 0; editors count from 1.
    error_ = line < 0 ? absl::StrCat(filename_, ": ", message)
                      : absl::StrCat(filename_, ":", line + 1, ":", column + 1,
                                     ": ", message);
  }
  const std::string& error() const { return error_; }

 private:
  const std::string filename_;
  std::string error_;
};

absl::StatusOr<v1::JobSpec> ParseTextJobSpec(const std::string& text,
                                             const std::string& filename) {
  FirstTextFormatError error(filename);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&error);
  v1::JobSpec spec;
  if (!parser.ParseFromString(text, &spec)) {
    return absl::InvalidArgumentError(
        error.error().empty() ? filename + ": not a JobSpec" : error.error());
  }
  return spec;
}

absl::StatusOr<v1::JobSpec> ParseJsonJobSpec(const std::string& json,
                                             const std::string& filename) {
  v1::JobSpec spec;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &spec);
  if (!status.ok()) {
    // protobuf's JSON parser gives no line, but names the field, as
    // "(model.loss): invalid value ...", or quotes the text near a syntax
    // error.
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": ", ToString(status.message())));
  }
  return spec;
}

// What a YAML node is, for "expected X, got Y" messages.
std::string NodeKind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return absl::StrCat("'", node.Scalar(), "'");
    default:
      return "nothing";
  }
}

// YAML 1.2's spellings of the non-finite floats, and protobuf JSON's.
std::optional<std::string> YamlSpecialFloat(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == ".inf" || lower == "+.inf") return "Infinity";
  if (lower == "-.inf") return "-Infinity";
  if (lower == ".nan") return "NaN";
  return std::nullopt;
}

// Converts a YAML tree into protobuf JSON (a google.protobuf.Struct) guided
// by the message's descriptor. YAML scalars are untyped text, so the field's
// type decides whether `10` is a number or a string; checking each value
// here, where the node's line is known, lets errors point at the line.
// Numbers travel as JSON strings, which protobuf's JSON parser accepts for
// every numeric type (and which keep 64-bit integers exact).
class YamlToJson {
 public:
  explicit YamlToJson(std::string filename) : filename_(std::move(filename)) {}

  absl::Status Message(const YAML::Node& node, const Descriptor& type,
                       const std::string& path,
                       google::protobuf::Struct* out) const {
    if (!node.IsMap()) {
      return Error(node, path,
                   absl::StrCat("expected a mapping of ", type.name(),
                                " fields, got ", NodeKind(node)));
    }
    std::map<int, int> line_of_field;  // field number -> line it was set on
    std::map<const OneofDescriptor*, const FieldDescriptor*> oneof_set;
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) {
        return Error(key, path, "a key must be a field name");
      }
      const FieldDescriptor* field = FindField(type, key.Scalar());
      if (field == nullptr) {
        return Error(key, absl::StrCat(path, ".", key.Scalar()),
                     absl::StrCat("unknown field; ", type.name(),
                                  " has: ", FieldNames(type)));
      }
      const std::string field_path = absl::StrCat(path, ".", field->name());
      const auto [first, inserted] =
          line_of_field.emplace(field->number(), key.Mark().line + 1);
      if (!inserted) {
        return Error(
            key, field_path,
            absl::StrCat("set twice (first on line ", first->second, ")"));
      }
      if (entry.second.IsNull()) continue;  // `key:` leaves it unset
      RETURN_IF_ERROR(CheckOneof(key, *field, field_path, &oneof_set));
      google::protobuf::Value value;
      RETURN_IF_ERROR(Field(entry.second, *field, field_path, &value));
      (*out->mutable_fields())[field->name()] = std::move(value);
    }
    return absl::OkStatus();
  }

 private:
  static const FieldDescriptor* FindField(const Descriptor& type,
                                          const std::string& key) {
    const FieldDescriptor* field = type.FindFieldByName(key);
    return field != nullptr ? field : type.FindFieldByCamelcaseName(key);
  }

  static std::string FieldNames(const Descriptor& type) {
    std::vector<std::string> names;
    for (int i = 0; i < type.field_count(); ++i) {
      names.push_back(type.field(i)->name());
    }
    return absl::StrJoin(names, ", ");
  }

  // At most one member of a oneof (JobSpec.length: epochs or steps).
  absl::Status CheckOneof(
      const YAML::Node& key, const FieldDescriptor& field,
      const std::string& path,
      std::map<const OneofDescriptor*, const FieldDescriptor*>* set) const {
    const OneofDescriptor* oneof = field.real_containing_oneof();
    if (oneof == nullptr) return absl::OkStatus();
    const auto [other, inserted] = set->emplace(oneof, &field);
    if (inserted) return absl::OkStatus();
    return Error(
        key, path,
        absl::StrCat("cannot be set together with ", other->second->name(),
                     " (set one of ", oneof->name(), ")"));
  }

  absl::Status Field(const YAML::Node& node, const FieldDescriptor& field,
                     const std::string& path,
                     google::protobuf::Value* out) const {
    if (field.is_map()) {
      return Error(node, path, "map fields are not supported in YAML specs");
    }
    if (!field.is_repeated()) return Single(node, field, path, out);
    if (!node.IsSequence()) {
      return Error(node, path,
                   absl::StrCat("expected a list, got ", NodeKind(node)));
    }
    google::protobuf::ListValue* list = out->mutable_list_value();
    for (size_t i = 0; i < node.size(); ++i) {
      RETURN_IF_ERROR(Single(node[i], field, absl::StrCat(path, "[", i, "]"),
                             list->add_values()));
    }
    return absl::OkStatus();
  }

  absl::Status Single(const YAML::Node& node, const FieldDescriptor& field,
                      const std::string& path,
                      google::protobuf::Value* out) const {
    if (field.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      const Descriptor& type = *field.message_type();
      // Well-known types have JSON forms of their own (a Timestamp is a
      // string); JobSpec has none, so they are refused rather than guessed.
      if (type.file()->package() == "google.protobuf") {
        return Error(node, path,
                     absl::StrCat(type.full_name(),
                                  " fields are not supported in YAML specs"));
      }
      return Message(node, type, path, out->mutable_struct_value());
    }
    if (!node.IsScalar()) {
      return Error(
          node, path,
          absl::StrCat("expected a single value, got ", NodeKind(node)));
    }
    return Scalar(node, field, path, out);
  }

  absl::Status Scalar(const YAML::Node& node, const FieldDescriptor& field,
                      const std::string& path,
                      google::protobuf::Value* out) const {
    const std::string& text = node.Scalar();
    switch (field.cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        out->set_string_value(text);
        return absl::OkStatus();
      case FieldDescriptor::CPPTYPE_BOOL: {
        bool value = false;
        if (!YAML::convert<bool>::decode(node, value)) {
          return Expected(node, path, "true or false");
        }
        out->set_bool_value(value);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_INT32:
        return Integer<int32_t>(node, path, "an integer (int32)", out);
      case FieldDescriptor::CPPTYPE_INT64:
        return Integer<int64_t>(node, path, "an integer (int64)", out);
      case FieldDescriptor::CPPTYPE_UINT32:
        return Integer<uint32_t>(node, path, "an integer >= 0 (uint32)", out);
      case FieldDescriptor::CPPTYPE_UINT64:
        return Integer<uint64_t>(node, path, "an integer >= 0 (uint64)", out);
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT:
        return Float(node, path, out);
      case FieldDescriptor::CPPTYPE_ENUM:
        return Enum(node, *field.enum_type(), path, out);
      default:
        return Error(node, path, "unsupported field type");
    }
  }

  template <typename Int>
  absl::Status Integer(const YAML::Node& node, const std::string& path,
                       absl::string_view expected,
                       google::protobuf::Value* out) const {
    Int value = 0;
    if (!absl::SimpleAtoi(node.Scalar(), &value)) {
      return Expected(node, path, expected);
    }
    out->set_string_value(absl::StrCat(value));
    return absl::OkStatus();
  }

  absl::Status Float(const YAML::Node& node, const std::string& path,
                     google::protobuf::Value* out) const {
    if (auto special = YamlSpecialFloat(node.Scalar())) {
      out->set_string_value(*special);
      return absl::OkStatus();
    }
    double value = 0;
    if (!absl::SimpleAtod(node.Scalar(), &value)) {
      return Expected(node, path, "a number");
    }
    if (std::isnan(value)) {
      out->set_string_value("NaN");
    } else if (std::isinf(value)) {
      out->set_string_value(value > 0 ? "Infinity" : "-Infinity");
    } else {
      out->set_string_value(FormatDouble(value));
    }
    return absl::OkStatus();
  }

  absl::Status Enum(const YAML::Node& node,
                    const google::protobuf::EnumDescriptor& type,
                    const std::string& path,
                    google::protobuf::Value* out) const {
    const std::string& text = node.Scalar();
    int32_t number = 0;
    if (absl::SimpleAtoi(text, &number)) {  // proto3 enums are open
      out->set_number_value(number);
      return absl::OkStatus();
    }
    if (type.FindValueByName(text) == nullptr) {
      std::vector<std::string> names;
      for (int i = 0; i < type.value_count(); ++i) {
        names.push_back(type.value(i)->name());
      }
      return Error(node, path,
                   absl::StrCat("unknown value '", text,
                                "'; one of: ", absl::StrJoin(names, ", ")));
    }
    out->set_string_value(text);
    return absl::OkStatus();
  }

  absl::Status Expected(const YAML::Node& node, const std::string& path,
                        absl::string_view expected) const {
    return Error(node, path,
                 absl::StrCat("expected ", expected, ", got ", NodeKind(node)));
  }

  // "job.yaml:4:12: spec.model.hidden[1]: why". yaml-cpp counts from 0.
  absl::Status Error(const YAML::Node& node, absl::string_view path,
                     absl::string_view why) const {
    const YAML::Mark mark = node.Mark();
    const std::string where =
        mark.is_null()
            ? filename_
            : absl::StrCat(filename_, ":", mark.line + 1, ":", mark.column + 1);
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", path, ": ", why));
  }

  const std::string filename_;
};

}  // namespace

absl::StatusOr<v1::JobSpec> ParseYamlJobSpec(absl::string_view yaml,
                                             const std::string& filename) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        filename, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": ", e.what()));
  }
  if (documents.empty() || documents[0].IsNull()) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": holds no JobSpec (the file is empty)"));
  }
  if (documents.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        filename, ":", documents[1].Mark().line + 1,
        ": a second YAML document;", " a spec file holds one JobSpec"));
  }
  google::protobuf::Struct tree;
  RETURN_IF_ERROR(YamlToJson(filename).Message(
      documents[0], *v1::JobSpec::descriptor(), "spec", &tree));
  std::string json;
  const auto printed = google::protobuf::util::MessageToJsonString(tree, &json);
  if (!printed.ok()) {
    return absl::InternalError(absl::StrCat(
        filename, ": cannot convert to JSON: ", ToString(printed.message())));
  }
  return ParseJsonJobSpec(json, filename);
}

absl::StatusOr<v1::JobSpec> ReadJobSpecFile(const std::string& path) {
  const bool text = absl::EndsWith(path, ".textproto") ||
                    absl::EndsWith(path, ".txtpb") ||
                    absl::EndsWith(path, ".pbtxt");
  const bool json = absl::EndsWith(path, ".json");
  const bool yaml =
      absl::EndsWith(path, ".yaml") || absl::EndsWith(path, ".yml");
  if (!text && !json && !yaml) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": unknown spec format; name the file .textproto, "
                     ".txtpb, .pbtxt, .json, .yaml or .yml"));
  }
  ASSIGN_OR_RETURN(const std::string contents, dataset::ReadFileToString(path));
  if (text) return ParseTextJobSpec(contents, path);
  if (json) return ParseJsonJobSpec(contents, path);
  return ParseYamlJobSpec(contents, path);
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

namespace {

void PrepareContext(const ClientOptions& client, absl::Time deadline,
                    grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(deadline));
  if (!client.bearer_token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", client.bearer_token));
  }
}

// What to check when gRPC reports a connection that broke during setup: a
// TLS coordinator drops a plaintext or certificate-less client with no more
// than "Socket closed", and a failed handshake names no file.
std::string TlsHint(const ClientOptions& client, absl::string_view message) {
  const bool setup_failed =
      absl::StrContains(message, "Socket closed") ||
      absl::StrContains(absl::AsciiStrToLower(message), "handshake");
  if (!setup_failed) return "";
  if (client.channel_credentials == nullptr) {
    return " (if the coordinator serves TLS, give --tls_ca, and --tls_cert "
           "and --tls_key if it requires client certificates)";
  }
  return " (TLS: check that --tls_ca signed the coordinator's certificate "
         "and, if it requires client certificates, that --tls_cert and "
         "--tls_key hold one its CA signed)";
}

// The status a command reports for a failed call: the code unchanged, the
// message with what a user needs to act on it.
absl::Status Explain(const ClientOptions& client, const grpc::Status& status,
                     int attempts) {
  const absl::Status error = services::FromGrpcStatus(status);
  switch (error.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the coordinator at ", client.coordinator, " (",
          attempts, attempts == 1 ? " attempt" : " attempts",
          "): ", error.message(), TlsHint(client, error.message())));
    case absl::StatusCode::kDeadlineExceeded:
      return absl::DeadlineExceededError(absl::StrCat(
          "no answer from the coordinator at ", client.coordinator, " within ",
          absl::FormatDuration(client.timeout), ": ", error.message()));
    case absl::StatusCode::kCancelled:
      // The client never cancels a unary call, so the server did: it is
      // shutting down.
      return absl::CancelledError(absl::StrCat(
          "the coordinator at ", client.coordinator,
          " cancelled the call (shutting down?): ", error.message()));
    case absl::StatusCode::kUnauthenticated:
      return absl::UnauthenticatedError(
          absl::StrCat(error.message(),
                       " (give the coordinator's token with --token_file or "
                       "PODTRAIN_TOKEN_FILE)"));
    default:
      return error;
  }
}

}  // namespace

absl::Status CallCoordinator(
    const ClientOptions& client, bool idempotent,
    const std::function<grpc::Status(grpc::ClientContext*)>& attempt) {
  const absl::Time deadline = absl::Now() + client.timeout;
  absl::Duration backoff = client.initial_backoff;
  absl::BitGen random;
  for (int attempts = 1;; ++attempts) {
    grpc::ClientContext context;
    PrepareContext(client, deadline, &context);
    const grpc::Status status = attempt(&context);
    const absl::Duration wait = backoff * absl::Uniform(random, 0.8, 1.2);
    const bool retry =
        idempotent && status.error_code() == grpc::StatusCode::UNAVAILABLE &&
        attempts <= client.max_retries && absl::Now() + wait < deadline;
    if (!retry) {
      if (status.ok()) return absl::OkStatus();
      return Explain(client, status, attempts);
    }
    absl::SleepFor(wait);
    backoff *= 2;
  }
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

namespace {

std::string FormatTimestamp(const google::protobuf::Timestamp& timestamp) {
  const absl::Time time = absl::FromUnixSeconds(timestamp.seconds()) +
                          absl::Nanoseconds(timestamp.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", time, absl::UTCTimeZone());
}

absl::Status PrintJson(const google::protobuf::Message& message,
                       std::ostream& out) {
  google::protobuf::util::JsonPrintOptions options;
  // Machine readers should not have to know proto3's defaults: print
  // generation 0 and the like instead of leaving them out.
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print JSON: ", ToString(status.message())));
  }
  out << json << "\n";
  return absl::OkStatus();
}

std::string FormatLength(const v1::JobSpec& spec) {
  switch (spec.length_case()) {
    case v1::JobSpec::kEpochs:
      return absl::StrCat(FormatDouble(spec.epochs()), " epochs");
    case v1::JobSpec::kSteps:
      return absl::StrCat(spec.steps(), " steps");
    default:
      return "unset";
  }
}

std::string FormatModel(const v1::ModelSpec& model) {
  return absl::StrCat(model.name(), " [", absl::StrJoin(model.hidden(), ", "),
                      "], ", model.num_classes(), " classes, ",
                      v1::ModelSpec::Loss_Name(model.loss()));
}

void PrintJobText(const v1::Job& job, std::ostream& out) {
  const v1::JobSpec& spec = job.spec();
  const auto line = [&out](absl::string_view label, absl::string_view value) {
    out << absl::StrFormat("%-16s%s\n", absl::StrCat(label, ":"), value);
  };
  line("name", job.name());
  if (!spec.display_name().empty()) line("display_name", spec.display_name());
  line("state", job.state_message().empty()
                    ? v1::JobState_Name(job.state())
                    : absl::StrCat(v1::JobState_Name(job.state()), ": ",
                                   job.state_message()));
  line("dataset", spec.dataset());
  line("model", FormatModel(spec.model()));
  line("length", absl::StrCat(FormatLength(spec), ", global batch ",
                              spec.global_batch(), ", seed ", spec.seed()));
  line("workers", absl::StrCat(spec.min_workers(), "..", spec.max_workers(),
                               " (world size ", job.world_size(),
                               ", generation ", job.generation(), ")"));
  line("steps", absl::StrCat("latest ", job.latest_step(), ", committed ",
                             job.committed_step()));
  line("restarts", absl::StrCat(job.restarts(), " of ", spec.restart_budget()));
  line("created", FormatTimestamp(job.create_time()));
  if (job.has_end_time()) line("ended", FormatTimestamp(job.end_time()));
}

absl::Status PrintJob(const v1::Job& job, const ClientOptions& client,
                      std::ostream& out) {
  if (client.output == OutputFormat::kJson) return PrintJson(job, out);
  PrintJobText(job, out);
  return absl::OkStatus();
}

constexpr char kListRow[] = "%-12s %-10s %5s %5s %8s  %-20s  %s\n";

void PrintListHeader(std::ostream& out) {
  out << absl::StrFormat(kListRow, "NAME", "STATE", "WORLD", "GEN", "STEP",
                         "CREATED", "DISPLAY_NAME");
}

void PrintListRow(const v1::Job& job, std::ostream& out) {
  out << absl::StrFormat(
      kListRow, job.name(), v1::JobState_Name(job.state()),
      absl::StrCat(job.world_size()), absl::StrCat(job.generation()),
      absl::StrCat(job.latest_step()), FormatTimestamp(job.create_time()),
      job.spec().display_name());
}

}  // namespace

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

namespace {

absl::StatusOr<v1::Job> GetJob(const std::string& name,
                               const ClientOptions& client,
                               v1::JobService::StubInterface* stub) {
  v1::GetJobRequest request;
  request.set_name(name);
  v1::Job job;
  RETURN_IF_ERROR(CallCoordinator(client, /*idempotent=*/true,
                                  [&](grpc::ClientContext* context) {
                                    return stub->GetJob(context, request, &job);
                                  }));
  return job;
}

}  // namespace

absl::Status RunSubmit(const SubmitCommand& command,
                       const ClientOptions& client,
                       v1::JobService::StubInterface* stub, std::ostream& out) {
  v1::CreateJobRequest request;
  ASSIGN_OR_RETURN(*request.mutable_spec(), ReadJobSpecFile(command.spec_file));
  // One id for every attempt: a retry after a lost reply returns the job the
  // first attempt made instead of making a second one.
  request.set_request_id(command.request_id.empty() ? NewRequestId()
                                                    : command.request_id);
  v1::Job job;
  RETURN_IF_ERROR(CallCoordinator(
      client, /*idempotent=*/true, [&](grpc::ClientContext* context) {
        return stub->CreateJob(context, request, &job);
      }));
  return PrintJob(job, client, out);
}

absl::Status RunGet(const JobCommand& command, const ClientOptions& client,
                    v1::JobService::StubInterface* stub, std::ostream& out) {
  ASSIGN_OR_RETURN(const std::string name, NormalizeJobName(command.job));
  ASSIGN_OR_RETURN(const v1::Job job, GetJob(name, client, stub));
  return PrintJob(job, client, out);
}

absl::Status RunCancel(const JobCommand& command, const ClientOptions& client,
                       v1::JobService::StubInterface* stub, std::ostream& out) {
  v1::CancelJobRequest request;
  ASSIGN_OR_RETURN(*request.mutable_name(), NormalizeJobName(command.job));
  v1::Job job;
  RETURN_IF_ERROR(CallCoordinator(
      client, /*idempotent=*/false, [&](grpc::ClientContext* context) {
        return stub->CancelJob(context, request, &job);
      }));
  return PrintJob(job, client, out);
}

absl::Status RunList(const ListCommand& command, const ClientOptions& client,
                     v1::JobService::StubInterface* stub, std::ostream& out) {
  const bool text = client.output == OutputFormat::kText;
  v1::ListJobsRequest request;
  request.set_page_size(command.page_size);
  std::set<std::string> tokens_seen;
  int64_t listed = 0;
  if (text) PrintListHeader(out);
  while (true) {
    v1::ListJobsResponse response;
    RETURN_IF_ERROR(CallCoordinator(
        client, /*idempotent=*/true, [&](grpc::ClientContext* context) {
          return stub->ListJobs(context, request, &response);
        }));
    for (const v1::Job& job : response.jobs()) {
      if (text) {
        PrintListRow(job, out);
      } else {
        RETURN_IF_ERROR(PrintJson(job, out));
      }
    }
    listed += response.jobs_size();
    const std::string& token = response.next_page_token();
    if (token.empty()) break;
    if (!command.all) {
      if (text) out << "(more jobs: run with --all to list every page)\n";
      break;
    }
    // A server that hands out a token twice would page forever.
    if (!tokens_seen.insert(token).second) {
      return absl::InternalError(absl::StrCat(
          "the coordinator returned page token '", token, "' twice"));
    }
    request.set_page_token(token);
  }
  if (text && listed == 0) out << "(no jobs)\n";
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

int WatchExitCode(const v1::Job& job) {
  return job.state() == v1::SUCCEEDED ? 0 : 1;
}

std::string DescribeEnd(const v1::Job& job) {
  std::string text =
      absl::StrCat(job.name(), " ended ", v1::JobState_Name(job.state()));
  if (!job.state_message().empty()) {
    absl::StrAppend(&text, ": ", job.state_message());
  }
  return text;
}

std::string FormatEvent(const v1::JobEvent& event,
                        const ProgressContext& context) {
  const v1::Job& job = event.job();
  switch (event.event_case()) {
    case v1::JobEvent::kStateChanged: {
      std::string line = absl::StrCat(
          "state ", v1::JobState_Name(event.state_changed().from()), " -> ",
          v1::JobState_Name(event.state_changed().to()));
      if (!job.state_message().empty()) {
        absl::StrAppend(&line, ": ", job.state_message());
      }
      return line;
    }
    case v1::JobEvent::kGenerationChanged: {
      const auto& changed = event.generation_changed();
      return absl::StrCat("generation ", changed.generation(), ": world size ",
                          changed.world_size(), " (", changed.reason(), ")");
    }
    case v1::JobEvent::kStepProgress: {
      const auto& progress = event.step_progress();
      // Steps count from 0: step s done means s + 1 steps done.
      const int64_t done = progress.step() + 1;
      std::string line = absl::StrCat("step ", done);
      if (context.total_steps)
        absl::StrAppend(&line, "/", *context.total_steps);
      if (context.examples_per_epoch && *context.examples_per_epoch > 0) {
        const double epochs = static_cast<double>(done) *
                              job.spec().global_batch() /
                              *context.examples_per_epoch;
        absl::StrAppend(&line, absl::StrFormat("  epoch %.2f", epochs));
      }
      absl::StrAppend(
          &line,
          absl::StrFormat("  %.0f ex/s  loss %.4f  world %d  gen %d",
                          progress.examples_per_second(), progress.loss(),
                          job.world_size(), job.generation()));
      return line;
    }
    case v1::JobEvent::kCheckpointCommitted:
      return absl::StrCat("checkpoint of step ",
                          event.checkpoint_committed().step(),
                          " committed: ", event.checkpoint_committed().path());
    case v1::JobEvent::kCheckpointRejected:
      return absl::StrCat(
          "checkpoint of step ", event.checkpoint_rejected().step(),
          " rejected (", event.checkpoint_rejected().reason(),
          "); resuming after step ", event.checkpoint_rejected().resume_step());
    default:
      return absl::StrCat("event ", event.ShortDebugString());
  }
}

namespace {

// The job's total steps and, when its MANIFEST is readable from here (one
// machine, or a shared file system), its examples per epoch.
ProgressContext MakeProgressContext(const v1::Job& job) {
  ProgressContext context;
  if (job.spec().length_case() == v1::JobSpec::kSteps) {
    context.total_steps = job.spec().steps();
  }
  absl::StatusOr<dataset::Manifest> manifest =
      dataset::ReadManifest(job.spec().dataset());
  if (manifest.ok() && manifest->num_examples() > 0) {
    context.examples_per_epoch = manifest->num_examples();
    context.total_steps =
        coordinator::TotalSteps(job.spec(), manifest->num_examples());
  }
  return context;
}

// Prints events as text; in live mode consecutive step lines share one
// terminal line.
class EventPrinter {
 public:
  EventPrinter(const ProgressContext& context, bool live, std::ostream& out)
      : context_(context), live_(live), out_(out) {}
  ~EventPrinter() { EndLiveLine(); }

  void Print(const v1::JobEvent& event) {
    const std::string line = FormatEvent(event, context_);
    const std::string time = absl::FormatTime(
        "%H:%M:%S", absl::FromUnixSeconds(event.time().seconds()),
        absl::LocalTimeZone());
    if (live_ && event.has_step_progress()) {
      // "\r" returns to the line's start and "\x1b[K" clears what a longer
      // previous line left.
      out_ << "\r" << time << "  " << line << "\x1b[K" << std::flush;
      live_line_open_ = true;
      return;
    }
    EndLiveLine();
    out_ << time << "  " << line << "\n" << std::flush;
  }

  void Line(absl::string_view text) {
    EndLiveLine();
    out_ << text << "\n" << std::flush;
  }

 private:
  void EndLiveLine() {
    if (live_line_open_) out_ << "\n";
    live_line_open_ = false;
  }

  const ProgressContext context_;
  const bool live_;
  std::ostream& out_;
  bool live_line_open_ = false;
};

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED ||
         state == v1::CANCELLED;
}

}  // namespace

absl::StatusOr<v1::Job> RunWatch(const WatchCommand& command,
                                 const ClientOptions& client,
                                 v1::JobService::StubInterface* stub,
                                 std::ostream& out) {
  ASSIGN_OR_RETURN(const std::string name, NormalizeJobName(command.job));
  // A unary GetJob first: NOT_FOUND and an unreachable coordinator are
  // reported (and retried) like any other command's, and the spec gives the
  // progress lines their totals.
  ASSIGN_OR_RETURN(v1::Job job, GetJob(name, client, stub));
  const bool text = client.output == OutputFormat::kText;
  EventPrinter printer(MakeProgressContext(job), command.live, out);
  if (text) {
    printer.Line(absl::StrCat("watching ", name, " (",
                              v1::JobState_Name(job.state()), ") on ",
                              client.coordinator));
  }

  grpc::ClientContext context;
  PrepareContext(client, absl::Now() + client.watch_timeout, &context);
  v1::WatchJobRequest request;
  request.set_name(name);
  std::unique_ptr<grpc::ClientReaderInterface<v1::JobEvent>> stream =
      stub->WatchJob(&context, request);
  v1::JobEvent event;
  while (stream->Read(&event)) {
    job = event.job();
    if (text) {
      printer.Print(event);
      continue;
    }
    const absl::Status printed = PrintJson(event, out);
    if (!printed.ok()) {
      context.TryCancel();  // so Finish does not wait for the job to end
      stream->Finish();
      return printed;
    }
    out << std::flush;
  }
  const grpc::Status finished = stream->Finish();
  if (!finished.ok()) {
    const absl::Status error = services::FromGrpcStatus(finished);
    std::string message =
        absl::StrCat("watch of ", name, " on the coordinator at ",
                     client.coordinator, " broke: ", error.message());
    if (absl::IsDeadlineExceeded(error)) {
      absl::StrAppend(&message, " (the job did not end within ",
                      absl::FormatDuration(client.watch_timeout),
                      "; run watch again)");
    }
    return absl::Status(error.code(), message);
  }
  // The stream ends OK once the job has ended and every event was sent. Its
  // last event normally says how; a coordinator restarted since the job
  // ended has no events left for it, so ask.
  if (!IsTerminal(job.state())) {
    ASSIGN_OR_RETURN(job, GetJob(name, client, stub));
  }
  if (!IsTerminal(job.state())) {
    return absl::UnknownError(
        absl::StrCat("watch of ", name, " ended while the job is still ",
                     v1::JobState_Name(job.state()), "; run watch again"));
  }
  if (text) printer.Line(DescribeEnd(job));
  return job;
}

}  // namespace podtrain::cli
