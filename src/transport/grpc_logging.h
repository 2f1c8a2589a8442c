// Where gRPC's own log lines go, and what a server learns from them.
//
// gRPC's lines (raw OpenSSL errors, "Handshake failed ...") say nothing a
// user can act on, so they go to fedsilo's log at debug level; fedsilo says
// why in its own words (tls_diagnosis.h, HandshakeVerifier). Two kinds are
// put to use:
//  - gRPC 1.51 tells a server's certificate check nothing about the
//    connection it checks. With its "tcp" tracer on, gRPC names the peer of
//    every read just before handing the bytes on, on the same thread that
//    then runs the TLS handshake and the check: PeerOfLastIo() returns that
//    address, so that a refused handshake is logged with it.
//  - A connection that fails the TLS handshake before any certificate is
//    seen (a client speaking plaintext, or without a certificate) is logged
//    as a warning with that address and the reason in words.
//
// Thread safety: safe to call from any thread.
#ifndef FEDSILO_TRANSPORT_GRPC_LOGGING_H_
#define FEDSILO_TRANSPORT_GRPC_LOGGING_H_

#include <string>

namespace fedsilo::transport {

// Sends gRPC's log lines to spdlog (debug level) from now on; with
// `peer_addresses`, also turns on what PeerOfLastIo() needs (servers).
// Idempotent; the peer addresses, once on, stay on.
void RouteGrpcLogs(bool peer_addresses);

// "127.0.0.1:50712": the peer of the connection this thread last read from
// or wrote to ("an unknown address" when gRPC has not said).
std::string PeerOfLastIo();

// Logs `line` (a refused connection or handshake) as a warning: at most 20
// such lines a minute, the rest counted and the count logged with the next
// one after the minute, so that a flood of connections cannot flood the log.
void LogRefusedConnection(const std::string& line);

// Exposed for tests: handles one gRPC log line as RouteGrpcLogs' function
// does (severity as gRPC's: 0 debug, 1 info, 2 error).
void HandleGrpcLogLine(int severity, const char* message);

}  // namespace fedsilo::transport

#endif  // FEDSILO_TRANSPORT_GRPC_LOGGING_H_
