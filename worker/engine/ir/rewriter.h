// The way passes change a graph's structure: create ops at an insertion point, replace one
// op by a chain of ops, erase ops. New ops are any TorchScript operator, named by its
// qualified name ("aten::conv2d"); the overload is resolved from the input types and the
// output types come from its schema, so the interpreter and the exporters run it like an
// imported op. Run ir/verify.h's Verify after a pass in tests.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

class Rewriter {
 public:
  explicit Rewriter(Graph& graph) : graph_(graph) {}

  Graph& graph() { return graph_; }

  /// New ops go right before / after `node`, in the block that holds it.
  void SetInsertionPointBefore(const Node& node);
  void SetInsertionPointAfter(const Node& node);
  /// New ops go at the end of the graph's body (before its outputs are returned).
  void SetInsertionPointToEnd();

  /// Creates `op` on `inputs` at the insertion point (the point moves past it). Its name
  /// is `name` made unique; its module path is that of the insertion point's neighbour.
  /// Fails with InvalidArgument when no overload of `op` takes inputs of these types.
  absl::StatusOr<Node*> Create(const std::string& op, const std::vector<int>& inputs,
                               const std::string& name);
  /// A constant value (ints, int lists, None, ...).
  int Constant(c10::IValue value);
  /// A parameter tensor for an op about to be created; `Own` names it after its op.
  int Parameter(at::Tensor tensor);
  /// Makes input `slot` of `node` (a value from `Parameter`) the node's parameter `role`,
  /// named "<node>.<role>" and exported as a tensor of the node's module.
  void Own(Node& node, const std::string& role, int slot);

  /// Replaces `old` by ops the caller created: every use of its output k becomes a use of
  /// `replacements[k]`, then `old` is erased. Fails when the counts differ.
  absl::Status Replace(Node& old, const std::vector<int>& replacements);
  /// Erases `node`, which must have no live uses of its outputs.
  absl::Status Erase(Node& node);

 private:
  Graph& graph_;
  int parent_ = -1;       // node owning the insertion block; -1 = the body
  int parent_block_ = 0;
  size_t position_ = 0;   // index in that block's node list
  std::string module_path_;
};

}  // namespace qopt
