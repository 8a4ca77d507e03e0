#include "ir/rewriter.h"

#include <algorithm>

#include <ATen/core/jit_type.h>

#include "absl/strings/str_cat.h"
#include "ir/jit_bridge.h"
#include "ir/op_registry.h"
#include "status.h"

namespace qopt {

void Rewriter::SetInsertionPointBefore(const Node& node) {
  parent_ = node.parent;
  parent_block_ = node.parent_block;
  const std::vector<int>& order = graph_.BlockOf(node).nodes;
  position_ = std::find(order.begin(), order.end(), node.id) - order.begin();
  module_path_ = node.module_path;
}

void Rewriter::SetInsertionPointAfter(const Node& node) {
  SetInsertionPointBefore(node);
  ++position_;
}

void Rewriter::SetInsertionPointToEnd() {
  parent_ = -1;
  parent_block_ = 0;
  position_ = graph_.body.nodes.size();
  module_path_.clear();
}

absl::StatusOr<Node*> Rewriter::Create(const std::string& op, const std::vector<int>& inputs,
                                       const std::string& name) {
  std::vector<c10::TypePtr> types;
  for (int in : inputs) {
    if (in < 0 || in >= static_cast<int>(graph_.values.size())) {
      return absl::InvalidArgumentError(absl::StrCat(name, " (", op, "): input ", in, " is not a value"));
    }
    types.push_back(graph_.values[in].type);
  }
  absl::StatusOr<std::vector<c10::TypePtr>> resolved = ResolveOutputTypes(op, types);
  if (!resolved.ok()) return Annotate(resolved.status(), name);
  const std::vector<c10::TypePtr>& out_types = *resolved;
  Node n;
  n.id = static_cast<int>(graph_.nodes.size());
  n.name = graph_.UniqueNodeName(name);
  n.module_path = module_path_;
  n.op = op;
  n.inputs = inputs;
  n.parent = parent_;
  n.parent_block = parent_block_;
  for (int in : inputs) graph_.values[in].consumers.push_back(n.id);
  for (size_t k = 0; k < out_types.size(); ++k) {
    const int v = graph_.AddValue(out_types.size() == 1 ? n.name : absl::StrCat(n.name, ".", k), out_types[k]);
    graph_.values[v].producer = n.id;
    n.outputs.push_back(v);
  }
  graph_.nodes.push_back(std::move(n));
  Node& node = graph_.nodes.back();
  node.kind = ClassifyOp(graph_, node);
  std::vector<int>& order = graph_.BlockOf(node).nodes;
  order.insert(order.begin() + static_cast<std::ptrdiff_t>(position_), node.id);
  ++position_;
  return &node;
}

int Rewriter::Constant(c10::IValue value) { return graph_.AddConstant(std::move(value)); }

int Rewriter::Parameter(at::Tensor tensor) {
  const int id = graph_.AddValue("param", c10::TensorType::get());
  Value& v = graph_.values[id];
  v.is_param = true;
  v.dtype = tensor.scalar_type();
  v.shape = tensor.sizes().vec();
  v.constant = c10::IValue(std::move(tensor));
  return id;
}

void Rewriter::Own(Node& node, const std::string& role, int slot) {
  const int id = node.inputs[slot];
  graph_.values[id].name = absl::StrCat(node.name, ".", role);
  node.params.emplace_back(role, id);
}

absl::Status Rewriter::Replace(Node& old, const std::vector<int>& replacements) {
  if (replacements.size() != old.outputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("replacing ", old.name, ": it has ", old.outputs.size(),
                                                   " outputs, got ", replacements.size(), " replacements"));
  }
  for (size_t k = 0; k < replacements.size(); ++k) graph_.ReplaceAllUses(old.outputs[k], replacements[k]);
  return Erase(old);
}

absl::Status Rewriter::Erase(Node& node) {
  for (int out : node.outputs) {
    const Value& v = graph_.values[out];
    const bool used = std::any_of(v.consumers.begin(), v.consumers.end(),
                                  [&](int c) { return !graph_.nodes[c].removed; });
    if (used || graph_.IsReturned(out)) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot erase ", node.name, ": its output ", v.name, " is still used"));
    }
  }
  for (int in : node.inputs) {
    auto& consumers = graph_.values[in].consumers;
    consumers.erase(std::remove(consumers.begin(), consumers.end(), node.id), consumers.end());
  }
  std::vector<int>& order = graph_.BlockOf(node).nodes;
  order.erase(std::remove(order.begin(), order.end(), node.id), order.end());
  node.removed = true;
  return absl::OkStatus();
}

}  // namespace qopt
