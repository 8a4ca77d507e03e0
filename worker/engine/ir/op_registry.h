// What qopt knows about an op beyond its TorchScript schema, registered once per op name:
// its kind (for passes and quantizer placement), an ATen fast path for the interpreter,
// and whether its output is a fresh tensor. Ops without an entry are kOther and run
// through the TorchScript operator registry; every op, registered or not, is exported by
// name (see ir/jit_bridge.h) and gets its shapes from running it on meta tensors
// (ir/shape_inference.h), so a pass may create any TorchScript operator.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

#include "ir/graph.h"

namespace qopt {

/// Runs `node` directly on ATen. `in` holds the inputs in order; with `inplace` the first
/// may be overwritten. Returns false to fall back to the operator registry (an overload
/// the fast path does not cover).
using FastRun = bool (*)(const Node& node, std::vector<c10::IValue>& in, bool inplace,
                         c10::IValue& out);

struct OpDef {
  const char* name;   // qualified: "aten::conv2d"
  OpKind kind;
  /// When set, the op is `kind` only if this holds (constant bounds, not transposed, ...);
  /// otherwise kOther.
  bool (*applies)(const Graph& g, const Node& n) = nullptr;
  FastRun run = nullptr;
};

/// The registered definition of `node`'s op that applies to it, or nullptr.
const OpDef* FindOpDef(const Graph& g, const Node& node);

/// The kind of `node`, from its op name and constant inputs.
OpKind ClassifyOp(const Graph& g, const Node& node);

/// True for ops whose output is a newly allocated tensor that aliases no other value, so
/// the consumer that sees it last may overwrite it.
bool ProducesFreshTensor(OpKind kind);

}  // namespace qopt
