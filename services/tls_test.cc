// TLS end to end in one process: PEM files are checked with errors naming
// the file, and a real CoordinatorServer on 127.0.0.1 with mutual TLS serves
// a client holding a certificate from the right CA and refuses, before any
// call reaches the coordinator, a client without a certificate, a plaintext
// client, a client that trusts another CA and a client whose certificate
// another CA signed. Its plaintext health-only port answers probes.
//
// Certificates are made once per run with the openssl command in
// $TEST_TMPDIR: a CA, a server certificate for IP 127.0.0.1 and localhost,
// a client certificate, and a second CA with a client certificate of its own.

#include "services/tls.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "proto/health.grpc.pb.h"
#include "proto/job.grpc.pb.h"
#include "services/channel.h"
#include "services/coordinator_server.h"

namespace podtrain::services {
namespace {

using ::testing::HasSubstr;

// A directory of its own under $TEST_TMPDIR, created empty.
std::string FreshDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(base ? base : "/tmp", "/", name);
  const std::string command = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  if (std::system(command.c_str()) != 0) std::abort();
  return dir;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

// The test's PKI, made once (key generation dominates: EC P-256 keeps it
// to milliseconds).
class Pki {
 public:
  static const Pki& Get() {
    static const Pki* pki = new Pki(FreshDir("tls_test_pki"));
    return *pki;
  }

  std::string File(const std::string& name) const { return dir_ + "/" + name; }

 private:
  explicit Pki(std::string dir) : dir_(std::move(dir)) {
    MakeCa("ca");
    MakeCa("other_ca");
    MakeLeaf("server", "ca",
             "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
             "extendedKeyUsage=serverAuth\n");
    MakeLeaf("client", "ca", "extendedKeyUsage=clientAuth\n");
    MakeLeaf("other_client", "other_ca", "extendedKeyUsage=clientAuth\n");
  }

  void Run(const std::string& command) const {
    const std::string line =
        absl::StrCat("cd '", dir_, "' && ", command, " 2>>openssl.log");
    if (std::system(line.c_str()) != 0) {
      ADD_FAILURE() << "failed: " << command << "\n"
                    << ReadFile(File("openssl.log"));
      std::abort();
    }
  }

  void MakeCa(const std::string& name) const {
    Run(absl::StrCat(
        "/usr/bin/openssl req -x509 -newkey ec -pkeyopt "
        "ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=podtrain-test-",
        name, " -keyout ", name, ".key -out ", name, ".crt"));
  }

  void MakeLeaf(const std::string& name, const std::string& ca,
                const std::string& extensions) const {
    WriteFile(File(name + ".ext"), extensions);
    Run(absl::StrCat(
        "/usr/bin/openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1",
        " -nodes -subj /CN=", name, " -keyout ", name, ".key -out ", name,
        ".csr"));
    Run(absl::StrCat("/usr/bin/openssl x509 -req -in ", name, ".csr -CA ", ca,
                     ".crt -CAkey ", ca, ".key -set_serial ", ++serial_,
                     " -days 2 -extfile ", name, ".ext -out ", name, ".crt"));
  }

  std::string dir_;
  mutable int serial_ = 1;
};

TlsOptions ServerTls() {
  const Pki& pki = Pki::Get();
  return {.ca_file = pki.File("ca.crt"),
          .cert_file = pki.File("server.crt"),
          .key_file = pki.File("server.key")};
}

std::shared_ptr<grpc::ChannelCredentials> ClientCredentials(
    const TlsOptions& options) {
  auto credentials = MakeChannelCredentials(options);
  EXPECT_TRUE(credentials.ok()) << credentials.status();
  return credentials.ok() ? *credentials : nullptr;
}

// ---------------------------------------------------------------------------
// Files and credentials
// ---------------------------------------------------------------------------

TEST(TlsFilesTest, TlsRequestedWhenAnyFileIsNamed) {
  EXPECT_FALSE(TlsRequested({}));
  EXPECT_FALSE(TlsRequested({.require_client_cert = false}));
  EXPECT_TRUE(TlsRequested({.ca_file = "ca.crt"}));
  EXPECT_TRUE(TlsRequested({.cert_file = "c.crt"}));
  EXPECT_TRUE(TlsRequested({.key_file = "c.key"}));
}

TEST(TlsFilesTest, ReadsCertificatesAndBundles) {
  const Pki& pki = Pki::Get();
  auto ca = ReadPemCertificates(pki.File("ca.crt"));
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_EQ(*ca, ReadFile(pki.File("ca.crt")));

  const std::string bundle = pki.File("bundle.crt");
  WriteFile(bundle,
            ReadFile(pki.File("ca.crt")) + ReadFile(pki.File("other_ca.crt")));
  EXPECT_TRUE(ReadPemCertificates(bundle).ok());
}

TEST(TlsFilesTest, MissingUnreadableEmptyOrNonPemFilesNameTheFile) {
  const std::string dir = FreshDir("tls_files_test");
  const std::string missing = dir + "/missing.crt";
  absl::StatusOr<std::string> read = ReadPemCertificates(missing);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr(missing));

  // A directory: open succeeds, read fails (root can read any mode bits, so
  // this is the unreadable file a test running as root can make).
  read = ReadPemCertificates(dir);
  EXPECT_FALSE(read.ok());
  EXPECT_THAT(read.status().message(), HasSubstr("cannot read " + dir));

  const std::string empty = dir + "/empty.crt";
  WriteFile(empty, "\n\n");
  read = ReadPemCertificates(empty);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(),
              HasSubstr("certificate file " + empty + " is empty"));

  const std::string der = dir + "/binary.crt";
  WriteFile(der, "0\x82\x01\x0a not pem at all");
  read = ReadPemCertificates(der);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(der + " is not PEM"));

  read = ReadPemPrivateKey(missing);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr(missing));
}

TEST(TlsFilesTest, SwappedCertificateAndKeyAreNamed) {
  const Pki& pki = Pki::Get();
  absl::StatusOr<std::string> read =
      ReadPemCertificates(pki.File("client.key"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      read.status().message(),
      HasSubstr(pki.File("client.key") + " is PEM but holds no certificate"));

  read = ReadPemPrivateKey(pki.File("client.crt"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      read.status().message(),
      HasSubstr(pki.File("client.crt") + " is PEM but holds no private key"));
  EXPECT_TRUE(ReadPemPrivateKey(pki.File("client.key")).ok());
}

TEST(TlsFilesTest, CorruptBlocksAreRefused) {
  const Pki& pki = Pki::Get();
  const std::string dir = FreshDir("tls_corrupt_test");
  const std::string garbage = dir + "/garbage.crt";
  WriteFile(garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
            "-----END CERTIFICATE-----\n");
  absl::StatusOr<std::string> read = ReadPemCertificates(garbage);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(),
              HasSubstr("certificate file " + garbage + " holds no valid"));

  // A good certificate followed by a bad one: gRPC would use the good one
  // and drop the other silently, so the file is refused.
  const std::string half = dir + "/half.crt";
  WriteFile(half, ReadFile(pki.File("ca.crt")) + ReadFile(garbage));
  read = ReadPemCertificates(half);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(half + " holds a PEM"));

  const std::string bad_key = dir + "/garbage.key";
  WriteFile(bad_key,
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"
            "-----END PRIVATE KEY-----\n");
  read = ReadPemPrivateKey(bad_key);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(),
              HasSubstr("private key file " + bad_key + " holds no valid"));
}

TEST(TlsFilesTest, EncryptedKeyIsRefusedWithoutPrompting) {
  const Pki& pki = Pki::Get();
  const std::string encrypted = pki.File("encrypted.key");
  const std::string command =
      absl::StrCat("/usr/bin/openssl pkey -in '", pki.File("client.key"),
                   "' -aes256 -passout pass:secret -out '", encrypted, "'");
  ASSERT_EQ(std::system(command.c_str()), 0);
  // stdin is the test runner's, not a terminal; a prompt would still block
  // on it, which the test's timeout would report.
  const absl::StatusOr<std::string> read = ReadPemPrivateKey(encrypted);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(),
              HasSubstr(encrypted + " holds no valid unencrypted"));
}

TEST(TlsFilesTest, ServerCredentialsNeedCertificateKeyAndCa) {
  const Pki& pki = Pki::Get();
  EXPECT_TRUE(MakeServerCredentials(ServerTls()).ok());

  TlsOptions options = ServerTls();
  options.key_file = "";
  auto credentials = MakeServerCredentials(options);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(), HasSubstr("key_file"));

  options = ServerTls();
  options.ca_file = "";
  credentials = MakeServerCredentials(options);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(), HasSubstr("ca_file"));
  options.require_client_cert = false;  // server-only TLS needs no CA
  EXPECT_TRUE(MakeServerCredentials(options).ok());

  options = ServerTls();
  options.ca_file = pki.File("no-such-ca.crt");
  credentials = MakeServerCredentials(options);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(credentials.status().message(), HasSubstr(options.ca_file));

  options = ServerTls();
  options.key_file = pki.File("client.key");
  credentials = MakeServerCredentials(options);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(),
              HasSubstr(pki.File("client.key") +
                        " does not belong to the certificate in " +
                        pki.File("server.crt")));
}

TEST(TlsFilesTest, ChannelCredentialsNeedCertificateAndKeyTogether) {
  const Pki& pki = Pki::Get();
  EXPECT_TRUE(MakeChannelCredentials({.ca_file = pki.File("ca.crt")}).ok());
  EXPECT_TRUE(MakeChannelCredentials({.ca_file = pki.File("ca.crt"),
                                      .cert_file = pki.File("client.crt"),
                                      .key_file = pki.File("client.key")})
                  .ok());
  auto credentials = MakeChannelCredentials(
      {.ca_file = pki.File("ca.crt"), .cert_file = pki.File("client.crt")});
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(), HasSubstr("key_file"));

  credentials = MakeChannelCredentials({.ca_file = pki.File("ca.crt"),
                                        .cert_file = pki.File("client.crt"),
                                        .key_file = pki.File("server.key")});
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(),
              HasSubstr(pki.File("server.key") + " does not belong"));
}

// ---------------------------------------------------------------------------
// A coordinator serving mutual TLS
// ---------------------------------------------------------------------------

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    dataset::Schema schema;
    schema.height = 28;
    schema.width = 28;
    schema.channels = 1;
    schema.num_classes = 10;
    ASSERT_TRUE(dataset::CreateDirectories(dir_ + "/data").ok());
    ASSERT_TRUE(dataset::WriteManifest(
                    dir_ + "/data",
                    dataset::MakeSyntheticManifest("d", 1000, 10, schema))
                    .ok());
  }

  void StartServer(const TlsOptions& tls) {
    CoordinatorServerOptions options;
    options.address = "127.0.0.1:0";
    options.tls = tls;
    options.plaintext_health_address = "127.0.0.1:0";
    options.metrics_address = "";
    options.coordinator.journal_path = dir_ + "/journal.db";
    auto server = CoordinatorServer::Start(options, RealClock());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  std::unique_ptr<v1::JobService::Stub> Jobs(
      std::shared_ptr<grpc::ChannelCredentials> credentials) {
    return v1::JobService::NewStub(
        MakeCoordinatorChannel(address_, std::move(credentials)));
  }

  // A client that holds a certificate the coordinator accepts.
  std::unique_ptr<v1::JobService::Stub> TrustedJobs() {
    const Pki& pki = Pki::Get();
    return Jobs(ClientCredentials({.ca_file = pki.File("ca.crt"),
                                   .cert_file = pki.File("client.crt"),
                                   .key_file = pki.File("client.key")}));
  }

  grpc::Status CreateJob(v1::JobService::Stub* jobs, v1::Job* job) {
    v1::CreateJobRequest request;
    v1::JobSpec* spec = request.mutable_spec();
    spec->set_dataset(dir_ + "/data");
    spec->mutable_model()->set_name("mlp");
    spec->mutable_model()->add_hidden(8);
    spec->mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
    spec->mutable_schedule()->set_base_learning_rate(0.1);
    spec->set_global_batch(10);
    spec->set_steps(5);
    spec->mutable_checkpoint()->set_directory(dir_ + "/checkpoints");
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return jobs->CreateJob(&context, request, job);
  }

  // The jobs the coordinator holds, asked by a trusted client.
  int CountJobs() {
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    const grpc::Status status =
        TrustedJobs()->ListJobs(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.jobs_size();
  }

  // A client the coordinator must refuse: its CreateJob fails in the
  // handshake (UNAVAILABLE) and no job exists afterwards.
  void ExpectRefused(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    v1::Job job;
    const grpc::Status status =
        CreateJob(Jobs(std::move(credentials)).get(), &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << status.error_code() << ": " << status.error_message();
    EXPECT_EQ(CountJobs(), 0);
  }

  std::string dir_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
};

TEST_F(TlsServerTest, ClientWithCertificateCreatesAndGetsJob) {
  StartServer(ServerTls());
  auto jobs = TrustedJobs();
  v1::Job created;
  const grpc::Status status = CreateJob(jobs.get(), &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(created.name(), "jobs/000001");

  v1::GetJobRequest request;
  request.set_name(created.name());
  v1::Job job;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  ASSERT_TRUE(jobs->GetJob(&context, request, &job).ok());
  EXPECT_EQ(job.name(), created.name());
  EXPECT_EQ(job.spec().steps(), 5);
  EXPECT_EQ(CountJobs(), 1);
}

TEST_F(TlsServerTest, ClientWithoutCertificateIsRefused) {
  StartServer(ServerTls());
  ExpectRefused(ClientCredentials({.ca_file = Pki::Get().File("ca.crt")}));
}

TEST_F(TlsServerTest, PlaintextClientIsRefused) {
  StartServer(ServerTls());
  ExpectRefused(grpc::InsecureChannelCredentials());
}

TEST_F(TlsServerTest, ClientTrustingAnotherCaIsRefused) {
  StartServer(ServerTls());
  const Pki& pki = Pki::Get();
  ExpectRefused(ClientCredentials({.ca_file = pki.File("other_ca.crt"),
                                   .cert_file = pki.File("client.crt"),
                                   .key_file = pki.File("client.key")}));
}

TEST_F(TlsServerTest, ClientCertificateFromAnotherCaIsRefused) {
  StartServer(ServerTls());
  const Pki& pki = Pki::Get();
  ExpectRefused(ClientCredentials({.ca_file = pki.File("ca.crt"),
                                   .cert_file = pki.File("other_client.crt"),
                                   .key_file = pki.File("other_client.key")}));
}

TEST_F(TlsServerTest, ServerOnlyTlsAcceptsClientsWithoutCertificates) {
  TlsOptions tls = ServerTls();
  tls.require_client_cert = false;
  StartServer(tls);
  v1::Job job;
  const grpc::Status status = CreateJob(
      Jobs(ClientCredentials({.ca_file = Pki::Get().File("ca.crt")})).get(),
      &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(job.name(), "jobs/000001");
}

TEST_F(TlsServerTest, PlaintextHealthPortServesOnlyHealth) {
  StartServer(ServerTls());
  ASSERT_NE(server_->health_port(), 0);
  ASSERT_NE(server_->health_port(), server_->port());
  const std::string health_address =
      absl::StrCat("127.0.0.1:", server_->health_port());
  auto channel = MakeCoordinatorChannel(health_address);

  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  const grpc::Status status = health->Check(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // The job API is not there in plaintext.
  v1::Job job;
  const grpc::Status create =
      CreateJob(v1::JobService::NewStub(channel).get(), &job);
  EXPECT_EQ(create.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << create.error_message();
  EXPECT_EQ(CountJobs(), 0);

  // Shutdown closes it: probes stop passing.
  server_->Shutdown();
  grpc::ClientContext after;
  after.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  EXPECT_FALSE(health->Check(&after, request, &response).ok());
}

TEST_F(TlsServerTest, BadTlsFileFailsStartBeforeTheJournalIsOpened) {
  CoordinatorServerOptions options;
  options.address = "127.0.0.1:0";
  options.tls = ServerTls();
  options.tls->cert_file = dir_ + "/no-such-server.crt";
  options.plaintext_health_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.coordinator.journal_path = dir_ + "/journal.db";
  auto server = CoordinatorServer::Start(options, RealClock());
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(server.status().message(), HasSubstr(options.tls->cert_file));
  EXPECT_NE(access(options.coordinator.journal_path.c_str(), F_OK), 0);
}

}  // namespace
}  // namespace podtrain::services
