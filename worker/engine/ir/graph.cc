#include "ir/graph.h"

#include <algorithm>
#include <sstream>

#include <torch/csrc/jit/ir/ir.h>

#include "absl/strings/str_cat.h"

namespace qopt {

std::string OpTypeName(OpKind kind, std::string_view aten_name) {
  switch (kind) {
    case OpKind::kConv: return "Conv";
    case OpKind::kLinear: return "Gemm";
    case OpKind::kBatchNorm: return "BatchNormalization";
    case OpKind::kRelu: return "Relu";
    case OpKind::kRelu6: return "Clip";
    case OpKind::kAdd: return "Add";
    case OpKind::kMul: return "Mul";
    case OpKind::kCat: return "Concat";
    case OpKind::kMaxPool: return "MaxPool";
    case OpKind::kAvgPool: return "AveragePool";
    case OpKind::kAdaptiveAvgPool: return "GlobalAveragePool";
    case OpKind::kFlatten: return "Flatten";
    case OpKind::kDropout: return "Dropout";
    case OpKind::kOther: break;
  }
  // "aten::sigmoid" -> "Sigmoid": a readable name config files can refer to.
  std::string_view base = aten_name;
  if (auto pos = base.rfind("::"); pos != std::string_view::npos) base = base.substr(pos + 2);
  std::string out(base);
  while (!out.empty() && out.back() == '_') out.pop_back();
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

int Node::Param(std::string_view role) const {
  for (const auto& [r, id] : params) {
    if (r == role) return id;
  }
  return -1;
}

Graph::Graph() = default;
Graph::~Graph() = default;
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;

std::vector<const Node*> Graph::LiveNodes() const {
  std::vector<const Node*> out;
  out.reserve(nodes.size());
  for (const auto& n : nodes) {
    if (!n.removed) out.push_back(&n);
  }
  return out;
}

const Node* Graph::FindNode(std::string_view name) const {
  for (const auto& n : nodes) {
    if (!n.removed && n.name == name) return &n;
  }
  return nullptr;
}

Node* Graph::FindNode(std::string_view name) {
  return const_cast<Node*>(static_cast<const Graph*>(this)->FindNode(name));
}

absl::StatusOr<std::set<std::string>> Graph::LayerNames(const std::vector<std::string>& names,
                                                        std::string_view field) const {
  std::set<std::string> found;
  for (const std::string& name : names) {
    if (FindNode(name) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": no layer named '", name, "' in the model"));
    }
    found.insert(name);
  }
  return found;
}

int Graph::AddValue(std::string name, bool is_tensor) {
  Value v;
  v.id = static_cast<int>(values.size());
  v.name = std::move(name);
  v.is_tensor = is_tensor;
  values.push_back(std::move(v));
  return values.back().id;
}

int Graph::SetParam(Node& node, const std::string& role, int slot, at::Tensor tensor) {
  const int id = AddValue(node.name + "." + role, /*is_tensor=*/true);
  Value& v = values[id];
  v.is_param = true;
  v.constant = c10::IValue(std::move(tensor));
  v.consumers.push_back(node.id);
  if (slot >= 0) {
    const int old = node.inputs[slot];
    auto& oc = values[old].consumers;
    if (auto it = std::find(oc.begin(), oc.end(), node.id); it != oc.end()) oc.erase(it);
    node.inputs[slot] = id;
  }
  bool replaced = false;
  for (auto& [r, pid] : node.params) {
    if (r == role) {
      pid = id;
      replaced = true;
    }
  }
  if (!replaced) node.params.emplace_back(role, id);
  return id;
}

void Graph::ReplaceAllUses(int from, int to) {
  for (int consumer : values[from].consumers) {
    Node& n = nodes[consumer];
    for (int& in : n.inputs) {
      if (in == from) in = to;
    }
    values[to].consumers.push_back(consumer);
  }
  values[from].consumers.clear();
  for (int& out : outputs) {
    if (out == from) out = to;
  }
}

void Graph::To(const c10::Device& device) {
  for (auto& v : values) {
    if (v.constant && v.constant->isTensor()) {
      v.constant = c10::IValue(v.constant->toTensor().to(device));
    }
  }
}

int64_t Graph::ParamBytes() const {
  int64_t bytes = 0;
  for (const auto& v : values) {
    if (v.is_param && v.constant && v.constant->isTensor()) {
      const auto& t = v.constant->toTensor();
      bytes += t.numel() * static_cast<int64_t>(t.element_size());
    }
  }
  return bytes;
}

std::string Graph::ToString() const {
  std::ostringstream os;
  for (const auto* n : LiveNodes()) {
    os << n->name << " = " << n->op << "(";
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      if (i) os << ", ";
      os << "%" << values[n->inputs[i]].name;
    }
    os << ")\n";
  }
  return os.str();
}

}  // namespace qopt
