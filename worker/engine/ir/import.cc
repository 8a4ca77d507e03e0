#include "ir/import.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <unordered_map>

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/scope.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/remove_exceptions.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/script.h>

#include "status.h"

namespace qopt {
namespace internal_import {

// Parameters a layer op reads, by input slot.
std::vector<std::pair<std::string, int>> ParamSlots(OpKind kind) {
  switch (kind) {
    case OpKind::kConv:
    case OpKind::kLinear:
      return {{"weight", 1}, {"bias", 2}};
    case OpKind::kBatchNorm:
      return {{"weight", 1}, {"bias", 2}, {"running_mean", 3}, {"running_var", 4}};
    default:
      return {};
  }
}

std::optional<double> ConstDouble(const torch::jit::Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv) return std::nullopt;
  if (iv->isDouble()) return iv->toDouble();
  if (iv->isInt()) return static_cast<double>(iv->toInt());
  return std::nullopt;
}

OpKind Classify(const torch::jit::Node* n) {
  const std::string op = n->kind().toQualString();
  if (op == "aten::_convolution") {
    auto transposed = torch::jit::toIValue(n->input(6));
    return transposed && transposed->isBool() && !transposed->toBool() ? OpKind::kConv
                                                                       : OpKind::kOther;
  }
  if (op == "aten::conv1d" || op == "aten::conv2d" || op == "aten::conv3d") return OpKind::kConv;
  if (op == "aten::linear") return OpKind::kLinear;
  if (op == "aten::batch_norm") return OpKind::kBatchNorm;
  if (op == "aten::relu" || op == "aten::relu_") return OpKind::kRelu;
  if (op == "aten::relu6" || op == "aten::relu6_") return OpKind::kRelu6;
  if (op == "aten::hardtanh" || op == "aten::hardtanh_") {
    auto lo = ConstDouble(n->input(1));
    auto hi = ConstDouble(n->input(2));
    return lo && hi && *lo == 0.0 && *hi == 6.0 ? OpKind::kRelu6 : OpKind::kOther;
  }
  if (op == "aten::add" || op == "aten::add_") {
    return n->input(1)->type()->kind() == c10::TypeKind::TensorType ? OpKind::kAdd
                                                                    : OpKind::kOther;
  }
  if (op == "aten::mul" || op == "aten::mul_") {
    return n->input(1)->type()->kind() == c10::TypeKind::TensorType ? OpKind::kMul
                                                                    : OpKind::kOther;
  }
  if (op == "aten::cat") return OpKind::kCat;
  if (op == "aten::max_pool1d" || op == "aten::max_pool2d" || op == "aten::max_pool3d")
    return OpKind::kMaxPool;
  if (op == "aten::avg_pool1d" || op == "aten::avg_pool2d" || op == "aten::avg_pool3d")
    return OpKind::kAvgPool;
  if (op == "aten::adaptive_avg_pool1d" || op == "aten::adaptive_avg_pool2d" ||
      op == "aten::adaptive_avg_pool3d")
    return OpKind::kAdaptiveAvgPool;
  if (op == "aten::flatten" || op == "aten::view" || op == "aten::reshape")
    return OpKind::kFlatten;
  if (op == "aten::dropout" || op == "aten::feature_dropout" || op == "aten::dropout_")
    return OpKind::kDropout;
  return OpKind::kOther;
}

// Module path of the innermost module call that produced `n`, and whether that module
// is a torch.nn leaf (Conv2d, ReLU, ...) rather than a user container whose forward
// calls the op functionally.
std::pair<std::string, bool> ModulePath(const torch::jit::Node* n) {
  std::string path;
  bool leaf = false;
  if (auto cs = n->callstack()) {
    for (const auto& entry : (*cs)->vec()) {
      const auto& info = std::get<2>(entry);
      if (!info) continue;
      if (!path.empty()) path += ".";
      path += info->instance_name();
      const auto& cls = info->class_type();
      leaf = cls && cls->name() &&
             cls->name()->qualifiedName().rfind("__torch__.torch.nn.modules.", 0) == 0;
    }
  }
  return {path, leaf};
}

std::string ShortOpName(const std::string& qualified) {
  std::string s = qualified.substr(qualified.find("::") + 2);
  while (!s.empty() && s.back() == '_') s.pop_back();
  return s;
}

bool IsStructuralPrim(c10::Symbol k) {
  return k == c10::prim::ListConstruct || k == c10::prim::TupleConstruct ||
         k == c10::prim::ListUnpack || k == c10::prim::TupleUnpack;
}

absl::Status CheckRunnable(const torch::jit::Graph& g) {
  for (const auto* n : g.nodes()) {
    if (n->kind() == c10::prim::Constant || IsStructuralPrim(n->kind())) continue;
    const auto [path, leaf] = ModulePath(n);
    const std::string where = path.empty() ? "" : " in module '" + path + "'";
    if (!n->blocks().empty()) {
      return absl::UnimplementedError(absl::StrCat(
          "unsupported op ", n->kind().toQualString(),
          " (control flow that freezing could not remove)", where));
    }
    if (n->maybeOperator() == nullptr) {
      return absl::UnimplementedError(
          absl::StrCat("unsupported op ", n->kind().toQualString(), where,
                       ": not in the TorchScript operator registry"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("model file not found: ", path));
  }
  std::ifstream in(path, std::ios::binary);
  char magic[2] = {0, 0};
  in.read(magic, 2);
  if (in.gcount() != 2 || magic[0] != 'P' || magic[1] != 'K') {
    return absl::InvalidArgumentError(absl::StrCat(
        "not a TorchScript model (expected a zip archive from torch.jit.save): ", path));
  }
  return absl::OkStatus();
}

}  // namespace internal_import

absl::StatusOr<Graph> ImportTorchScript(const std::string& path) {
  using namespace internal_import;
  RETURN_IF_ERROR(CheckFile(path));

  std::shared_ptr<torch::jit::Graph> jg;
  try {
    torch::jit::Module module = torch::jit::load(path, c10::Device(c10::kCPU));
    module.eval();
    torch::jit::Module frozen = torch::jit::freeze_module(module);
    jg = frozen.get_method("forward").graph()->copy();
    // Scripted modules check their inputs (`if x.dim() != 4: raise ...`); treating the
    // raising branch as unreachable leaves straight-line code, as the tracer would.
    torch::jit::EliminateExceptions(jg);
    torch::jit::ConstantPropagation(jg);
    torch::jit::RemoveListMutation(jg);
    torch::jit::RemoveTensorMutation(jg);
    torch::jit::ConstantPropagation(jg);
    torch::jit::EliminateDeadCode(jg);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load TorchScript model ", path, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load TorchScript model ", path, ": ", FirstLine(e.what())));
  }
  RETURN_IF_ERROR(CheckRunnable(*jg));

  Graph g;
  g.jit_graph = jg;
  std::unordered_map<const torch::jit::Value*, int> ids;
  auto value_of = [&](const torch::jit::Value* v) -> int {
    if (auto it = ids.find(v); it != ids.end()) return it->second;
    const int id = g.AddValue(v->debugName(), v->type()->kind() == c10::TypeKind::TensorType);
    ids.emplace(v, id);
    return id;
  };

  // Input 0 is `self`, frozen away.
  for (size_t i = 1; i < jg->inputs().size(); ++i) g.inputs.push_back(value_of(jg->inputs()[i]));

  std::set<std::string> taken;
  auto unique_name = [&](const std::string& base) {
    std::string name = base;
    for (int k = 1; taken.count(name); ++k) name = absl::StrCat(base, "_", k);
    taken.insert(name);
    return name;
  };

  for (auto* jn : jg->nodes()) {
    if (jn->kind() == c10::prim::Constant) {
      const int id = value_of(jn->output());
      g.values[id].constant = torch::jit::toIValue(jn->output());
      continue;
    }
    Node n;
    n.id = static_cast<int>(g.nodes.size());
    n.jit = jn;
    n.op = jn->kind().toQualString();
    n.kind = Classify(jn);
    const auto [path, leaf] = ModulePath(jn);
    n.module_path = path;
    const bool has_params = !ParamSlots(n.kind).empty();
    std::string base = (leaf || (has_params && !path.empty()))
                           ? path
                           : (path.empty() ? ShortOpName(n.op) : path + "." + ShortOpName(n.op));
    n.name = unique_name(base);
    for (auto* in : jn->inputs()) {
      const int id = value_of(in);
      n.inputs.push_back(id);
      g.values[id].consumers.push_back(n.id);
    }
    for (auto* out : jn->outputs()) {
      const int id = value_of(out);
      g.values[id].producer = n.id;
      n.outputs.push_back(id);
    }
    g.nodes.push_back(std::move(n));
    Node& node = g.nodes.back();

    // A layer owns its parameters: each gets a value of its own, named after the layer,
    // even where freezing pooled equal tensors of different layers into one constant.
    bool params_ok = true;
    for (const auto& [role, slot] : ParamSlots(node.kind)) {
      const auto& c = g.values[node.inputs[slot]].constant;
      if (c && c->isNone()) continue;
      if (!c || !c->isTensor()) params_ok = (role != "weight") && params_ok;
    }
    if (!params_ok) {
      node.kind = OpKind::kOther;  // weights computed at run time: not a layer
      continue;
    }
    for (const auto& [role, slot] : ParamSlots(node.kind)) {
      const auto& c = g.values[node.inputs[slot]].constant;
      if (c && c->isTensor()) g.SetParam(node, role, slot, c->toTensor());
    }
  }
  for (auto* out : jg->outputs()) g.outputs.push_back(value_of(out));
  return g;
}

}  // namespace qopt
