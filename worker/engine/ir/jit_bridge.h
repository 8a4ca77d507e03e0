// The one place where qopt IR nodes become TorchScript nodes: the interpreter takes the
// operation of each op from such a node, the rewriter learns the output types of an op a
// pass creates, and the TorchScript exporter writes them into the exported graph.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/jit_type_base.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace torch::jit {
struct Graph;
struct Node;
struct Value;
}  // namespace torch::jit

namespace qopt {

/// Structural prim ops that the TorchScript interpreter executes itself rather than
/// through a registered operator (list / tuple construction and unpacking).
bool IsStructuralOp(const std::string& op);

/// Appends a node running `op` on `inputs` with `num_outputs` outputs at `jg`'s insertion
/// point; output types are left for the caller to set.
torch::jit::Node* CreateJitNode(torch::jit::Graph& jg, const std::string& op,
                                const std::vector<torch::jit::Value*>& inputs,
                                size_t num_outputs);

/// The TorchScript operator schema `op` resolves to for inputs of these types, as the
/// types of its outputs. Fails with InvalidArgument naming the op when no overload
/// accepts the inputs or an output type is not fixed by the inputs.
absl::StatusOr<std::vector<c10::TypePtr>> ResolveOutputTypes(
    const std::string& op, const std::vector<c10::TypePtr>& input_types);

}  // namespace qopt
