#include "file_name.h"

#include "absl/strings/str_cat.h"
#include "utf8.h"

namespace qopt {

absl::Status CheckPlainFileName(absl::string_view what, absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    // The name is the caller's input: quoted UTF-8-safe, so the error itself can be sent.
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", SanitizeUtf8(name), "' is not a plain file name: ", why));
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > 255) return bad("it is longer than 255 bytes");
  if (name.front() == '.') return bad("it starts with '.'");
  for (const char c : name) {
    if (c == '/' || c == '\\') return bad("it contains a path separator");
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return bad("it contains a control character");
  }
  return absl::OkStatus();
}

}  // namespace qopt
