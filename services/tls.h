// TLS for podtrain's gRPC traffic: the coordinator's server credentials and
// the channel credentials of its clients (workers, the podtrain CLI), built
// from PEM files. With require_client_cert the TLS is mutual: the
// coordinator asks every client for a certificate and refuses the handshake
// unless the certificate chains to ca_file
// (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY), so a caller
// without one never reaches a service.
//
//   TlsOptions tls{.ca_file = "ca.crt", .cert_file = "server.crt",
//                  .key_file = "server.key"};
//   ASSIGN_OR_RETURN(auto server_credentials, MakeServerCredentials(tls));
//
//   TlsOptions client{.ca_file = "ca.crt", .cert_file = "worker.crt",
//                     .key_file = "worker.key"};
//   ASSIGN_OR_RETURN(auto channel_credentials, MakeChannelCredentials(client));
//   auto channel = MakeCoordinatorChannel(address, channel_credentials);
//
// Files are read and parsed here, once, so a misconfiguration is an error at
// startup naming the file (missing, unreadable, empty, not PEM, a key that
// does not belong to its certificate) rather than a handshake that fails
// later with a message that names nothing. Plaintext stays the default:
// callers use TLS only when TlsRequested() says a file was given.
//
// Thread-safety: free functions without shared state; safe from any thread.

#ifndef PODTRAIN_SERVICES_TLS_H_
#define PODTRAIN_SERVICES_TLS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace podtrain::services {

struct TlsOptions {
  // PEM certificates of the authority (or authorities) to trust. Server:
  // client certificates must chain to it (required when
  // require_client_cert). Client: the coordinator's certificate must chain
  // to it; empty means gRPC's default roots (the system's public CAs).
  std::string ca_file;
  // This side's PEM certificate chain (leaf first) and its PEM private key
  // (unencrypted). Server: both required. Client: both or neither; without
  // them the client cannot pass a coordinator that requires client
  // certificates.
  std::string cert_file;
  std::string key_file;
  // Server only. True: mutual TLS, as above. False: server-only TLS; clients
  // are not asked for a certificate and ca_file is not used.
  bool require_client_cert = true;
};

// Whether any file is named: the caller's cue to use TLS, not plaintext.
bool TlsRequested(const TlsOptions& options);

// The text of `path`, checked to hold at least one PEM certificate that
// parses. INVALID_ARGUMENT naming the file if it is empty or holds no valid
// PEM certificate; NOT_FOUND / PERMISSION_DENIED / FAILED_PRECONDITION (a
// directory) naming it if it cannot be read.
absl::StatusOr<std::string> ReadPemCertificates(const std::string& path);

// The text of `path`, checked to hold an unencrypted PEM private key. Errors
// as ReadPemCertificates.
absl::StatusOr<std::string> ReadPemPrivateKey(const std::string& path);

// SslServerCredentials for `options`. INVALID_ARGUMENT if cert_file or
// key_file is missing, if require_client_cert and ca_file is missing, or if
// the key does not belong to the certificate; file errors as above.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options);

// SslCredentials for `options`: ca_file as the root of trust, cert_file and
// key_file as the client's certificate. INVALID_ARGUMENT if only one of
// cert_file and key_file is given, or the key does not belong to the
// certificate; file errors as above.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsOptions& options);

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_TLS_H_
