// qopt's graph IR: the user's model as values and nodes, with the parameters of each
// layer owned by that layer and named after the user's modules (`layer1.0.conv1.weight`).
//
// Nodes keep a pointer to the TorchScript node they came from, which gives the op
// schema, attributes and the JIT operation used to run ops the interpreter has no fast
// path for. Passes never mutate a parameter tensor in place: they assign a new tensor,
// so tensors shared with the loaded module (or between layers) stay intact.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace torch::jit {
struct Graph;
struct Node;
}  // namespace torch::jit

namespace qopt {

/// What an op is, for the passes and the quantizer placement. Ops without a case
/// here are `kOther` and still run through the JIT operator registry.
enum class OpKind {
  kConv,           // aten::_convolution / conv1d / conv2d / conv3d (not transposed)
  kLinear,         // aten::linear
  kBatchNorm,      // aten::batch_norm
  kRelu,
  kRelu6,          // aten::hardtanh(0, 6) / aten::relu6
  kAdd,
  kMul,
  kCat,
  kMaxPool,
  kAvgPool,
  kAdaptiveAvgPool,
  kFlatten,        // flatten / view / reshape: data movement
  kDropout,        // identity at inference
  kOther,
};

/// AIMET / ONNX-style op type name used by quantsim configs ("Conv", "Gemm", "Relu").
std::string OpTypeName(OpKind kind, std::string_view aten_name);

struct Value {
  int id = -1;
  std::string name;          // debug name; parameters: "<layer>.<role>"
  int producer = -1;         // node id; -1 for graph inputs and constants
  std::vector<int> consumers;  // node ids, in program order
  bool is_tensor = false;
  bool is_param = false;     // a named layer parameter (weight, bias, running stats)
  std::optional<c10::IValue> constant;  // set for constants and parameters
};

struct Node {
  int id = -1;
  std::string name;           // unique, from the module path: "layer1.0.conv1", "layer1.0.add"
  std::string module_path;    // the module whose forward produced it ("" = top level)
  OpKind kind = OpKind::kOther;
  std::string op;             // qualified op name: "aten::_convolution"
  std::vector<int> inputs;    // value ids
  std::vector<int> outputs;   // value ids
  torch::jit::Node* jit = nullptr;  // origin; owned by Graph::jit_graph
  bool removed = false;       // bypassed by a pass (e.g. a folded batch norm)

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
  Graph();
  ~Graph();
  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;

  std::vector<Value> values;
  std::vector<Node> nodes;    // topological (program) order
  std::vector<int> inputs;    // value ids of the model inputs (without `self`)
  std::vector<int> outputs;   // value ids of the model outputs
  std::shared_ptr<torch::jit::Graph> jit_graph;  // keeps Node::jit alive
  /// Output statistics of layers that absorbed a batch norm, by node id: the batch norm's
  /// beta and |gamma| (its output's mean and std), kept up to date by passes that rescale
  /// the layer. High-bias absorption and analytical bias correction read them.
  std::map<int, ChannelStats> bn_stats;

  /// Live nodes (not removed), in program order.
  std::vector<const Node*> LiveNodes() const;
  /// The node with this name, or nullptr.
  const Node* FindNode(std::string_view name) const;
  Node* FindNode(std::string_view name);
  /// `names` as a set, each the name of a layer of this graph; otherwise InvalidArgument
  /// "<field>: no layer named '<name>' in the model".
  absl::StatusOr<std::set<std::string>> LayerNames(const std::vector<std::string>& names,
                                                   std::string_view field) const;
  /// Creates a new value; returns its id.
  int AddValue(std::string name, bool is_tensor);
  /// Adds a parameter value owned by `node` under `role` and wires it as input `slot`.
  int SetParam(Node& node, const std::string& role, int slot, at::Tensor tensor);
  /// Replaces every use of value `from` by `to` in live nodes and graph outputs.
  void ReplaceAllUses(int from, int to);
  /// Moves every tensor constant and parameter to `device`.
  void To(const c10::Device& device);
  /// Sum of parameter bytes.
  int64_t ParamBytes() const;
  /// Human-readable listing, one node a line.
  std::string ToString() const;
};

}  // namespace qopt
