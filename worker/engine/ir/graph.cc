#include "ir/graph.h"

#include <algorithm>
#include <sstream>

#include <ATen/core/jit_type.h>

#include "absl/strings/str_cat.h"

namespace qopt {

std::string OpTypeName(OpKind kind, std::string_view op_name) {
  switch (kind) {
    case OpKind::kConv: return "Conv";
    case OpKind::kConvTranspose: return "ConvTranspose";
    case OpKind::kLinear: return "Gemm";
    case OpKind::kBatchNorm: return "BatchNormalization";
    case OpKind::kLayerNorm: return "LayerNormalization";
    case OpKind::kRelu: return "Relu";
    case OpKind::kClip: return "Clip";
    case OpKind::kAdd: return "Add";
    case OpKind::kMul: return "Mul";
    case OpKind::kCat: return "Concat";
    case OpKind::kMaxPool: return "MaxPool";
    case OpKind::kAvgPool: return "AveragePool";
    case OpKind::kAdaptiveAvgPool: return "GlobalAveragePool";
    case OpKind::kFlatten: return "Flatten";
    case OpKind::kDropout: return "Dropout";
    case OpKind::kIf: return "If";
    case OpKind::kLoop: return "Loop";
    case OpKind::kOther: break;
  }
  // "aten::sigmoid" -> "Sigmoid": a readable name config files can refer to.
  std::string_view base = op_name;
  if (auto pos = base.rfind("::"); pos != std::string_view::npos) base = base.substr(pos + 2);
  std::string out(base);
  while (!out.empty() && out.back() == '_') out.pop_back();
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

bool Value::IsFloatingPoint() const {
  if (!is_tensor) return false;
  if (dtype) return at::isFloatingType(*dtype);
  if (constant && constant->isTensor()) return constant->toTensor().is_floating_point();
  // Before shape inference a tensor's dtype is unknown; the quantizer then checks each
  // tensor it sees.
  return true;
}

int Node::Param(std::string_view role) const {
  for (const auto& [r, id] : params) {
    if (r == role) return id;
  }
  return -1;
}

namespace {

void Walk(const Graph& g, const Block& block, std::vector<const Node*>& out) {
  for (int id : block.nodes) {
    const Node& n = g.nodes[id];
    if (n.removed) continue;
    out.push_back(&n);
    for (const Block& b : n.blocks) Walk(g, b, out);
  }
}

void Print(const Graph& g, const Block& block, int depth, std::ostringstream& os) {
  const std::string indent(2 * depth, ' ');
  for (int id : block.nodes) {
    const Node& n = g.nodes[id];
    if (n.removed) continue;
    os << indent << n.name << " = " << n.op << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i) os << (i ? ", %" : "%") << g.values[n.inputs[i]].name;
    os << ")\n";
    for (size_t b = 0; b < n.blocks.size(); ++b) {
      os << indent << " block" << b << ":\n";
      Print(g, n.blocks[b], depth + 2, os);
    }
  }
}

}  // namespace

std::vector<const Node*> Graph::LiveNodes() const {
  std::vector<const Node*> out;
  out.reserve(nodes.size());
  Walk(*this, body, out);
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

const Block& Graph::BlockOf(const Node& node) const {
  return node.parent < 0 ? body : nodes[node.parent].blocks[node.parent_block];
}

Block& Graph::BlockOf(const Node& node) {
  return node.parent < 0 ? body : nodes[node.parent].blocks[node.parent_block];
}

bool Graph::IsReturned(int vid) const {
  if (std::count(body.outputs.begin(), body.outputs.end(), vid)) return true;
  for (const Node& n : nodes) {
    if (n.removed) continue;
    for (const Block& b : n.blocks) {
      if (std::count(b.outputs.begin(), b.outputs.end(), vid)) return true;
    }
  }
  return false;
}

int Graph::AddValue(std::string name, c10::TypePtr type) {
  Value v;
  v.id = static_cast<int>(values.size());
  v.name = std::move(name);
  v.is_tensor = type && type->kind() == c10::TypeKind::TensorType;
  v.type = std::move(type);
  values.push_back(std::move(v));
  return values.back().id;
}

int Graph::AddConstant(c10::IValue constant, std::string name) {
  c10::TypePtr type = constant.isTensor() ? c10::TensorType::get() : constant.type();
  const int id = AddValue(name.empty() ? absl::StrCat("const", values.size()) : std::move(name), type);
  values[id].constant = std::move(constant);
  return id;
}

int Graph::SetParam(Node& node, const std::string& role, int slot, at::Tensor tensor) {
  const int id = AddValue(node.name + "." + role, c10::TensorType::get());
  Value& v = values[id];
  v.is_param = true;
  v.dtype = tensor.scalar_type();
  v.shape = tensor.sizes().vec();
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
  std::replace(body.outputs.begin(), body.outputs.end(), from, to);
  for (Node& n : nodes) {
    for (Block& b : n.blocks) std::replace(b.outputs.begin(), b.outputs.end(), from, to);
  }
}

std::string Graph::UniqueNodeName(const std::string& base) const {
  std::set<std::string_view> taken;
  for (const Node& n : nodes) {
    if (!n.removed) taken.insert(n.name);
  }
  std::string name = base;
  for (int k = 1; taken.count(name); ++k) name = absl::StrCat(base, "_", k);
  return name;
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
    const bool used = std::any_of(v.consumers.begin(), v.consumers.end(),
                                  [&](int c) { return !nodes[c].removed; });
    if (v.is_param && used && v.constant && v.constant->isTensor()) {
      const auto& t = v.constant->toTensor();
      bytes += t.numel() * static_cast<int64_t>(t.element_size());
    }
  }
  return bytes;
}

std::string Graph::ToString() const {
  std::ostringstream os;
  Print(*this, body, 0, os);
  return os.str();
}

}  // namespace qopt
