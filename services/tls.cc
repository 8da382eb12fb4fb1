#include "services/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace podtrain::services {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  }
  std::string contents;
  char chunk[1 << 14];
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error_number = errno;
      close(fd);
      return absl::ErrnoToStatus(error_number,
                                 absl::StrCat("cannot read ", path));
    }
    if (n == 0) break;
    contents.append(chunk, n);
  }
  close(fd);
  return contents;
}

// The oldest queued OpenSSL error as text (OpenSSL queues errors per
// thread; the queue is cleared so a later check starts clean).
std::string TakeOpenSslError() {
  const unsigned long code = ERR_peek_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// Refuses to prompt for a passphrase: without this callback OpenSSL asks on
// the terminal, which would hang a server started by a supervisor.
int NoPassphrase(char*, int, int, void*) { return -1; }

// File contents that the PEM parsers can be given: present, in PEM form,
// with a block whose label ends in `label` ("CERTIFICATE", "PRIVATE KEY").
// The label check turns a swapped cert and key file into a message that
// says so instead of OpenSSL's "no start line".
absl::StatusOr<std::string> ReadPemText(const std::string& path,
                                        const char* what, const char* label) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file ", path, " is empty"));
  }
  if (!absl::StrContains(text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " file ", path, " is not PEM (no '-----BEGIN ...' line)"));
  }
  if (!absl::StrContains(text, absl::StrCat(label, "-----"))) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file ", path, " is PEM but holds no ", what,
                     " (no '-----BEGIN ...", label, "-----' block)"));
  }
  return text;
}

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The first certificate in PEM `text` (`path` only labels errors).
absl::StatusOr<X509Ptr> FirstCertificate(const std::string& text,
                                         const std::string& path) {
  ERR_clear_error();
  BioPtr bio = MemoryBio(text);
  X509Ptr certificate(
      PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (certificate == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", path,
                     " holds no valid PEM certificate: ", TakeOpenSslError()));
  }
  return certificate;
}

absl::StatusOr<KeyPtr> PrivateKey(const std::string& text,
                                  const std::string& path) {
  ERR_clear_error();
  BioPtr bio = MemoryBio(text);
  KeyPtr key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "private key file ", path,
        " holds no valid unencrypted PEM private key: ", TakeOpenSslError()));
  }
  return key;
}

// A certificate chain and its key, read, parsed and checked to belong
// together: a mismatch would otherwise surface only as failed handshakes.
struct KeyCertPair {
  std::string cert_chain;
  std::string private_key;
};

absl::StatusOr<KeyCertPair> ReadKeyCertPair(const TlsOptions& options) {
  KeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPemCertificates(options.cert_file));
  ASSIGN_OR_RETURN(pair.private_key, ReadPemPrivateKey(options.key_file));
  ASSIGN_OR_RETURN(const X509Ptr leaf,
                   FirstCertificate(pair.cert_chain, options.cert_file));
  ASSIGN_OR_RETURN(const KeyPtr key,
                   PrivateKey(pair.private_key, options.key_file));
  ERR_clear_error();
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "private key file ", options.key_file,
        " does not belong to the certificate in ", options.cert_file));
  }
  return pair;
}

}  // namespace

bool TlsRequested(const TlsOptions& options) {
  return !options.ca_file.empty() || !options.cert_file.empty() ||
         !options.key_file.empty();
}

absl::StatusOr<std::string> ReadPemCertificates(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text,
                   ReadPemText(path, "certificate", "CERTIFICATE"));
  // Every certificate must parse, not only the first: gRPC would otherwise
  // drop a bad one from a CA bundle without a word.
  ERR_clear_error();
  BioPtr bio = MemoryBio(text);
  int certificates = 0;
  while (X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase,
                                   nullptr)) != nullptr) {
    ++certificates;
  }
  // The loop ends on "no start line" once the input is used up; any other
  // error is a block that does not parse.
  const unsigned long error = ERR_peek_last_error();
  const bool end_of_input = ERR_GET_LIB(error) == ERR_LIB_PEM &&
                            ERR_GET_REASON(error) == PEM_R_NO_START_LINE;
  if (certificates == 0 || !end_of_input) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate file ", path,
                     certificates == 0 ? " holds no valid PEM certificate: "
                                       : " holds a PEM certificate that does "
                                         "not parse: ",
                     TakeOpenSslError()));
  }
  ERR_clear_error();
  return text;
}

absl::StatusOr<std::string> ReadPemPrivateKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text,
                   ReadPemText(path, "private key", "PRIVATE KEY"));
  RETURN_IF_ERROR(PrivateKey(text, path).status());
  return text;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options) {
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS server needs a certificate and its private key (cert_file and "
        "key_file)");
  }
  if (options.require_client_cert && options.ca_file.empty()) {
    return absl::InvalidArgumentError(
        "requiring client certificates needs the CA that signs them "
        "(ca_file)");
  }
  ASSIGN_OR_RETURN(const KeyCertPair pair, ReadKeyCertPair(options));
  grpc::SslServerCredentialsOptions ssl(
      options.require_client_cert
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (options.require_client_cert) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemCertificates(options.ca_file));
  }
  ssl.pem_key_cert_pairs.push_back({pair.private_key, pair.cert_chain});
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::SslServerCredentials(ssl);
  if (credentials == nullptr) {
    return absl::InternalError("gRPC refused the TLS server credentials");
  }
  return credentials;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate needs its private key and vice versa "
        "(give both cert_file and key_file, or neither)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemCertificates(options.ca_file));
  }
  if (!options.cert_file.empty()) {
    ASSIGN_OR_RETURN(const KeyCertPair pair, ReadKeyCertPair(options));
    ssl.pem_cert_chain = pair.cert_chain;
    ssl.pem_private_key = pair.private_key;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::SslCredentials(ssl);
  if (credentials == nullptr) {
    return absl::InternalError("gRPC refused the TLS channel credentials");
  }
  return credentials;
}

}  // namespace podtrain::services
