// Reading AIMET-format encodings files (see encodings_json.h) into plain entries, without
// a model: the parse is torch-free so it can be fuzzed alone, and matching the entries to
// a QuantSim's quantizers is a separate, small step (LoadEncodingsJson).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/encoding.h"

namespace qopt {

/// One `activation_encodings` entry: the quantizer at `layer`'s input or output `index`.
struct ActivationEncodingEntry {
  std::string layer;
  bool is_input = false;
  int index = 0;
  Encoding encoding;
};

/// The encodings an AIMET file gives, in file order.
struct EncodingsFile {
  /// By parameter name: one encoding, or one per output channel.
  std::vector<std::pair<std::string, std::vector<Encoding>>> params;
  std::vector<ActivationEncodingEntry> activations;
};

/// Parses an encodings file's text. InvalidArgument naming the entry for text that is not
/// JSON, lacks `param_encodings` / `activation_encodings`, or has an encoding without a
/// numeric bitwidth, scale or offset, with numbers out of range, or an empty list;
/// Unimplemented for a dtype other than int.
[[nodiscard]] absl::StatusOr<EncodingsFile> ParseEncodingsJson(const std::string& json_text);

}  // namespace qopt
