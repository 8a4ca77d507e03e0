// qopt's graph IR: the user's model as values and nodes, with the parameters of each
// layer owned by that layer and named after the user's modules (`layer1.0.conv1.weight`).
//
// The IR is qopt's own: a node is an op name (a TorchScript operator such as
// "aten::conv2d", or a structural prim op), its input and output values and, for control
// flow, its blocks. Nothing points back into the TorchScript graph it was imported from,
// so passes may insert, replace and erase ops (see ir/rewriter.h) and the interpreter and
// exporters run whatever the graph holds. Values carry their TorchScript type and, once
// shapes are inferred from an example input (ir/shape_inference.h), dtype and shape.
//
// Storage: `nodes` and `values` are arenas indexed by id (ids never change; erased nodes
// stay as `removed`); program order lives in blocks (`Graph::body`, `Node::blocks`).
// Parameter tensors are never mutated in place: passes assign a new tensor, so tensors
// shared with the loaded module, between layers or between clones stay intact.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type_base.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace qopt {

/// What an op is, for the passes and the quantizer placement. Ops without a case
/// here are `kOther` and still run through the TorchScript operator registry.
enum class OpKind {
  kConv,           // aten::_convolution / conv1d / conv2d / conv3d (not transposed)
  kConvTranspose,  // aten::_convolution (transposed) / conv_transpose1d / 2d / 3d
  kLinear,         // aten::linear
  kBatchNorm,      // aten::batch_norm
  kLayerNorm,      // aten::layer_norm (weight and bias are its parameters)
  kRelu,
  kClip,           // constant bounds: relu6, hardtanh, clamp (scalars or per-channel tensors)
  kAdd,
  kMul,
  kCat,
  kMaxPool,
  kAvgPool,
  kAdaptiveAvgPool,
  kFlatten,        // flatten / view / reshape: data movement
  kDropout,        // identity at inference
  kIf,             // prim::If: two blocks
  kLoop,           // prim::Loop: one block
  kOther,
};

/// AIMET / ONNX-style op type name used by quantsim configs ("Conv", "Gemm", "Relu").
std::string OpTypeName(OpKind kind, std::string_view op_name);

struct Value {
  int id = -1;
  std::string name;            // debug name; parameters: "<layer>.<role>"
  int producer = -1;           // node id; -1 for graph / block inputs and constants
  std::vector<int> consumers;  // node ids (a node using it twice is listed twice)
  c10::TypePtr type;           // TorchScript type: Tensor, int, int[], Tensor[], bool, ...
  bool is_tensor = false;
  bool is_param = false;       // a named layer parameter (weight, bias, running stats, clip)
  std::optional<c10::IValue> constant;  // set for constants and parameters
  /// From shape inference (ir/shape_inference.h) for tensors the example run reached.
  std::optional<at::ScalarType> dtype;
  std::optional<std::vector<int64_t>> shape;

  bool IsFloatingPoint() const;
};

/// An ordered list of nodes with inputs (a loop's iteration counter and carried values)
/// and outputs (what the block returns to its node).
struct Block {
  std::vector<int> inputs;   // value ids
  std::vector<int> outputs;  // value ids
  std::vector<int> nodes;    // node ids, program order
};

struct Node {
  int id = -1;
  std::string name;           // unique, from the module path: "layer1.0.conv1", "layer1.0.add"
  std::string module_path;    // the module whose forward produced it ("" = top level)
  OpKind kind = OpKind::kOther;
  std::string op;             // qualified op name: "aten::_convolution", "prim::If"
  std::vector<int> inputs;    // value ids
  std::vector<int> outputs;   // value ids
  std::vector<Block> blocks;  // prim::If: then, else; prim::Loop: body
  int parent = -1;            // node whose block holds this node; -1 = the graph body
  int parent_block = 0;       // which block of `parent`
  bool removed = false;       // erased by a pass

  /// Value id of a named parameter input ("weight", "bias", "running_mean", ...), or -1.
  int Param(std::string_view role) const;
  std::vector<std::pair<std::string, int>> params;  // role -> value id
};

/// Per-channel statistics of a layer's output: mean and standard deviation (float64,
/// one entry per output channel).
struct ChannelStats {
  at::Tensor mean;
  at::Tensor std;
};

class Graph {
 public:
  Graph() = default;
  Graph(Graph&&) noexcept = default;
  Graph& operator=(Graph&&) noexcept = default;

  /// An independent copy: editing one never changes the other. Parameter tensors are
  /// shared until a pass replaces them (they are never written in place).
  Graph Clone() const { return Graph(*this); }

  // Arenas by id (deques: references stay valid while passes add nodes and values).
  std::deque<Value> values;
  std::deque<Node> nodes;     // order is in `body` and nested blocks
  Block body;                 // top level: inputs (without `self`), outputs, nodes
  /// Output statistics of layers that absorbed a batch norm, by node id: the batch norm's
  /// beta and |gamma| (its output's mean and std), kept up to date by passes that rescale
  /// the layer. High-bias absorption and analytical bias correction read them.
  std::map<int, ChannelStats> bn_stats;

  const std::vector<int>& inputs() const { return body.inputs; }
  const std::vector<int>& outputs() const { return body.outputs; }

  /// Live nodes in program order, depth first: a control-flow node comes right before
  /// the nodes of its blocks.
  std::vector<const Node*> LiveNodes() const;
  /// The node with this name, or nullptr.
  const Node* FindNode(std::string_view name) const;
  Node* FindNode(std::string_view name);
  /// `names` as a set, each the name of a layer of this graph; otherwise InvalidArgument
  /// "<field>: no layer named '<name>' in the model".
  absl::StatusOr<std::set<std::string>> LayerNames(const std::vector<std::string>& names,
                                                   std::string_view field) const;
  /// The block that holds `node` (the body or a block of a control-flow node).
  const Block& BlockOf(const Node& node) const;
  Block& BlockOf(const Node& node);
  /// True when `vid` is a graph output or returned by some block: a use that is not a node.
  bool IsReturned(int vid) const;

  /// Creates a new value of TorchScript type `type`; returns its id.
  int AddValue(std::string name, c10::TypePtr type);
  /// A constant value (ints, lists, tensors that are not parameters, None).
  int AddConstant(c10::IValue constant, std::string name = "");
  /// Adds a parameter value owned by `node` under `role` and wires it as input `slot`
  /// (-1: only recorded in `params`). An existing role is replaced.
  int SetParam(Node& node, const std::string& role, int slot, at::Tensor tensor);
  /// Replaces every use of value `from` by `to` in live nodes, block outputs and graph
  /// outputs.
  void ReplaceAllUses(int from, int to);
  /// A name not yet taken by a live node, from `base` ("base", "base_1", ...).
  std::string UniqueNodeName(const std::string& base) const;
  /// Moves every tensor constant and parameter to `device`.
  void To(const c10::Device& device);
  /// Sum of parameter bytes.
  int64_t ParamBytes() const;
  /// Human-readable listing, one node a line (blocks indented).
  std::string ToString() const;

 private:
  Graph(const Graph&) = default;
};

}  // namespace qopt
