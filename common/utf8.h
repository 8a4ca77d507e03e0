// Text that goes into protobuf `string` fields must be valid UTF-8, or the message cannot
// be parsed by the receiver (a worker's Fail with a raw byte from a model file's header
// would never arrive). Error messages and log lines can carry bytes from untrusted files,
// so they are repaired before they are sent. Hand-written: Abseil and protobuf expose no
// public UTF-8 validator in the versions Debian 12 ships.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace google::protobuf {
class Message;
}

namespace qopt {

/// `text` with every byte that is not part of a well-formed UTF-8 sequence (RFC 3629:
/// no overlong forms, no surrogates, at most U+10FFFF) replaced by U+FFFD.
std::string SanitizeUtf8(absl::string_view text);

/// Repairs every string field (not `bytes`) of `message` and of its sub-messages,
/// repeated fields and maps included, with SanitizeUtf8.
void SanitizeUtf8Fields(google::protobuf::Message* message);

}  // namespace qopt
