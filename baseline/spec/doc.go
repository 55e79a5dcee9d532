// Package spec loads declared APIs (OpenAPI 3.0, 3.1 and 3.2, and Swagger
// 2.0 converted to OpenAPI 3; YAML or JSON; $ref across local files) and
// matches observed calls to their operations.
//
// Loading goes through kin-openapi, which reads all of those versions into
// one model (Swagger 2.0 through its openapi2conv converter); the package
// then boils each document down to what matching needs: operations per
// method and path template, declared query parameters, response codes and
// the top-level fields of JSON responses, servers (host, port, base path).
//
// Documents with the same info.title are versions of one API: the newest
// info.version is current, and operations that only older versions declare
// form a second matcher, so that a call to a removed operation can be told
// apart from one that was never declared.
//
// Load reads files (the only I/O here) and never the network: $refs to
// remote URLs are refused. A document that cannot be loaded is an *Error
// naming the file and, when known, the line or element. Everything built
// by Load is immutable afterwards and safe for concurrent use; Match does
// not allocate.
package spec
