#include "ir/jit_bridge.h"

#include <torch/csrc/jit/ir/ir.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qopt {

bool IsStructuralOp(const std::string& op) {
  return op == "prim::ListConstruct" || op == "prim::TupleConstruct" ||
         op == "prim::ListUnpack" || op == "prim::TupleUnpack";
}

torch::jit::Node* CreateJitNode(torch::jit::Graph& jg, const std::string& op,
                                const std::vector<torch::jit::Value*>& inputs,
                                size_t num_outputs) {
  torch::jit::Node* n = jg.create(c10::Symbol::fromQualString(op), inputs, num_outputs);
  return jg.insertNode(n);
}

absl::StatusOr<std::vector<c10::TypePtr>> ResolveOutputTypes(
    const std::string& op, const std::vector<c10::TypePtr>& input_types) {
  torch::jit::Graph jg;
  std::vector<torch::jit::Value*> inputs;
  std::vector<std::string> shown;
  for (const c10::TypePtr& t : input_types) {
    inputs.push_back(jg.addInput()->setType(t));
    shown.push_back(t->annotation_str());
  }
  const c10::FunctionSchema* schema = nullptr;
  try {
    torch::jit::Node* n = CreateJitNode(jg, op, inputs, 0);
    schema = n->maybeSchema();
  } catch (const std::exception&) {
    schema = nullptr;  // not a qualified name TorchScript knows
  }
  if (schema == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no overload of ", op, " takes (",
                                                   absl::StrJoin(shown, ", "), ")"));
  }
  std::vector<c10::TypePtr> out;
  for (const c10::Argument& r : schema->returns()) {
    if (r.type()->hasFreeVariables()) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": output type ", r.type()->annotation_str(), " depends on the call"));
    }
    out.push_back(r.type());
  }
  return out;
}

}  // namespace qopt
