// SanitizeUtf8 (common/utf8.h), which repairs error messages carrying bytes from untrusted
// files before they go into protobuf strings. protobuf is the oracle: the repaired text
// must parse back as a proto3 string field. Repairing twice must change nothing, and
// text that protobuf accepts as it is must come back unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "qopt/v1/recipe.pb.h"
#include "utf8.h"

namespace {

bool ProtobufAccepts(const std::string& text) {
  qopt::v1::Recipe in;
  in.set_name(text);
  std::string wire;
  in.SerializePartialToString(&wire);
  qopt::v1::Recipe out;
  return out.ParseFromString(wire) && out.name() == text;
}

}  // namespace

// protobuf logs every invalid string it meets, which is half of what this harness feeds it.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string repaired = qopt::SanitizeUtf8(text);
  if (!ProtobufAccepts(repaired)) std::abort();
  if (qopt::SanitizeUtf8(repaired) != repaired) std::abort();
  if (ProtobufAccepts(text) && repaired != text) std::abort();
  return 0;
}
