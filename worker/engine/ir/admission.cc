#include "ir/admission.h"

#include <string_view>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/ir/ir.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "status.h"

namespace qopt {
namespace {

// Ops refused for what they reach outside the tensors they are given. TorchScript's own
// side-effect list (Node::hasSideEffects) covers printing, saving, RPC, futures and seeds;
// these it considers pure, so constant propagation would run them.
const char* OutsideReason(const std::string& op) {
  if (op == "aten::from_file") return "reads a file";
  if (op == "prim::fork" || op == "aten::wait") return "starts or waits on threads";
  return nullptr;
}

const char* SideEffectReason(const std::string& op) {
  if (op == "aten::save") return "writes a file";
  if (op == "prim::Print") return "prints";
  if (absl::StartsWith(op, "prim::rpc_")) return "talks to other processes";
  if (op == "prim::CallFunction" || op == "prim::CallMethod") return "calls code chosen at run time";
  if (op == "aten::manual_seed") return "changes the process's random seed";
  return "has side effects";
}

absl::Status AdmitBlock(const torch::jit::Block& block) {
  for (const torch::jit::Node* n : block.nodes()) {
    const c10::Symbol kind = n->kind();
    const std::string op = kind.toQualString();
    if (!kind.is_aten() && !kind.is_prim()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "the model uses operator ", op, ", which is not a built-in tensor operator; qopt runs only aten and prim "
          "operators (custom operator libraries are not loaded)"));
    }
    if (const char* reason = OutsideReason(op); reason != nullptr) {
      return absl::PermissionDeniedError(absl::StrCat("the model uses ", op, ", which ", reason,
                                                      "; qopt runs only tensor arithmetic"));
    }
    const bool allowed_effect = kind == c10::prim::RaiseException || kind == c10::aten::warn;
    if (n->hasSideEffects() && !allowed_effect) {
      return absl::PermissionDeniedError(absl::StrCat("the model uses ", op, ", which ", SideEffectReason(op),
                                                      "; qopt runs only tensor arithmetic"));
    }
    for (const torch::jit::Block* b : n->blocks()) RETURN_IF_ERROR(AdmitBlock(*b));
    if (n->hasAttribute(c10::attr::Subgraph)) RETURN_IF_ERROR(AdmitBlock(*n->g(c10::attr::Subgraph)->block()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AdmitArchive(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    for (const std::string& name : reader.getAllRecords()) {
      if (name.find("code/") == std::string::npos || !absl::EndsWith(name, ".py")) continue;
      auto [data, size] = reader.getRecord(name);
      const std::string code(static_cast<const char*>(data.get()), size);
      if (code.find("def __setstate__(") != std::string::npos) {
        return absl::PermissionDeniedError(
            "the model defines __setstate__, code that TorchScript runs while loading the file; qopt does not load "
            "such models (save the module without a custom __setstate__)");
      }
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("unreadable archive: ",
                                                   FirstLine(e.what()).substr(0, 200)));
  }
  return absl::OkStatus();
}

absl::Status AdmitGraph(const torch::jit::Graph& graph) { return AdmitBlock(*graph.block()); }

std::string ExplainLoadError(const std::string& first_line) {
  constexpr std::string_view kUnknown = "Unknown builtin op: ";
  const size_t at = first_line.find(kUnknown);
  if (at == std::string::npos) return first_line;
  std::string op = first_line.substr(at + kUnknown.size());
  while (!op.empty() && (op.back() == '.' || op.back() == ' ')) op.pop_back();
  return absl::StrCat("the model uses operator ", op,
                      ", which is not a built-in tensor operator; qopt runs only aten and prim operators (custom "
                      "operator libraries are not loaded)");
}

}  // namespace qopt
