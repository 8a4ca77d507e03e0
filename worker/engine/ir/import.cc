#include "ir/import.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include <ATen/Parallel.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/scope.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_exceptions.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/script.h>

#include "ir/admission.h"
#include "ir/jit_bridge.h"
#include "ir/op_registry.h"
#include "status.h"

namespace qopt {
namespace internal_import {

// Parameters a layer op reads, by input slot.
std::vector<std::pair<std::string, int>> ParamSlots(OpKind kind) {
  switch (kind) {
    case OpKind::kConv:
    case OpKind::kConvTranspose:
    case OpKind::kLinear:
      return {{"weight", 1}, {"bias", 2}};
    case OpKind::kBatchNorm:
      return {{"weight", 1}, {"bias", 2}, {"running_mean", 3}, {"running_var", 4}};
    case OpKind::kLayerNorm:
      return {{"weight", 2}, {"bias", 3}};
    default:
      return {};
  }
}

// Items of ModuleList / ModuleDict containers: a forward indexes them (`for layer in
// self.layers`) and never calls the container, so a call stack names the item ("0") but
// not the container ("layers"). Per module path of a called module, the containers among
// its children that hold an item of a given name.
class ContainerIndex {
 public:
  explicit ContainerIndex(const torch::jit::Module& root) { Add(root, ""); }
  ContainerIndex() = default;

  // The path of `item`, called from the module at `parent`: `parent.item` when it is a
  // child of that module, `parent.container.item` when exactly one container holds it.
  std::string Child(const std::string& parent, const std::string& item) const {
    const std::string direct = parent.empty() ? item : parent + "." + item;
    if (children_.count(direct)) return direct;
    auto it = items_.find(parent);
    if (it != items_.end()) {
      auto in = it->second.find(item);
      if (in != it->second.end() && in->second.size() == 1) {
        return (parent.empty() ? "" : parent + ".") + in->second.front() + "." + item;
      }
    }
    return direct;
  }

 private:
  static bool IsContainer(const torch::jit::Module& m) {
    const auto name = m.type()->name();
    if (!name) return false;
    // Possibly mangled: __torch__.torch.nn.modules.container.___torch_mangle_3.ModuleList
    return name->qualifiedName().find("torch.nn.modules.container.") != std::string::npos &&
           (name->name() == "ModuleList" || name->name() == "ModuleDict");
  }

  void Add(const torch::jit::Module& m, const std::string& path) {
    for (const auto& child : m.named_children()) {
      const std::string child_path = path.empty() ? child.name : path + "." + child.name;
      if (IsContainer(child.value)) {
        for (const auto& item : child.value.named_children()) {
          items_[path][item.name].push_back(child.name);
          const std::string item_path = child_path + "." + item.name;
          children_.insert(item_path);
          Add(item.value, item_path);
        }
      } else {
        children_.insert(child_path);
        Add(child.value, child_path);
      }
    }
  }

  std::set<std::string> children_;  // paths of modules a forward calls by attribute
  std::map<std::string, std::map<std::string, std::vector<std::string>>> items_;
};

// Module path of the innermost module call that produced `n`, and whether that module
// is a torch.nn leaf (Conv2d, ReLU, ...) rather than a user container whose forward
// calls the op functionally.
std::pair<std::string, bool> ModulePath(const torch::jit::Node* n, const ContainerIndex& containers = {}) {
  std::string path;
  bool leaf = false;
  if (auto cs = n->callstack()) {
    for (const auto& entry : (*cs)->vec()) {
      const auto& info = std::get<2>(entry);
      // A scripted module calling one of its own methods (Conv2d.forward ->
      // self._conv_forward) stays in the same module.
      if (!info || info->instance_name() == "SELF") continue;
      path = containers.Child(path, info->instance_name());
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

// Control flow is imported as blocks; any other op must be a registered operator (or a
// structural prim op the interpreter implements) and carry no attributes, since the IR
// keeps none.
absl::Status CheckRunnable(const torch::jit::Block& b, const ContainerIndex& containers) {
  for (const auto* n : b.nodes()) {
    if (n->kind() == c10::prim::Constant) continue;
    const auto [path, leaf] = ModulePath(n, containers);
    const std::string where = path.empty() ? "" : " in module '" + path + "'";
    const std::string op = n->kind().toQualString();
    if (n->kind() == c10::prim::If || n->kind() == c10::prim::Loop) {
      for (const auto* block : n->blocks()) RETURN_IF_ERROR(CheckRunnable(*block, containers));
      continue;
    }
    if (IsStructuralOp(op)) continue;
    if (!n->blocks().empty() || n->hasAttributes()) {
      return absl::UnimplementedError(absl::StrCat("unsupported op ", op, where));
    }
    if (n->maybeOperator() == nullptr) {
      return absl::UnimplementedError(
          absl::StrCat("unsupported op ", op, where, ": not in the TorchScript operator registry"));
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


// Builds the IR from a frozen TorchScript graph, block by block.
class Importer {
 public:
  Importer(Graph& g, const ContainerIndex& containers) : g_(g), containers_(containers) {}

  int ValueOf(const torch::jit::Value* v) {
    if (auto it = ids_.find(v); it != ids_.end()) return it->second;
    const int id = g_.AddValue(v->debugName(), v->type());
    ids_.emplace(v, id);
    return id;
  }

  // The nodes and outputs of `jb` into block `parent_block` of node `parent` (-1: the body).
  void ImportBlock(const torch::jit::Block& jb, int parent, int parent_block) {
    for (const auto* jn : jb.nodes()) {
      if (jn->kind() == c10::prim::Constant) {
        g_.values[ValueOf(jn->output())].constant = torch::jit::toIValue(jn->output());
        continue;
      }
      const int id = ImportNode(*jn, parent, parent_block);
      Block& target = parent < 0 ? g_.body : g_.nodes[parent].blocks[parent_block];
      target.nodes.push_back(id);
      for (size_t b = 0; b < jn->blocks().size(); ++b) {
        g_.nodes[id].blocks.emplace_back();
        for (const auto* in : jn->blocks()[b]->inputs()) g_.nodes[id].blocks[b].inputs.push_back(ValueOf(in));
        ImportBlock(*jn->blocks()[b], id, static_cast<int>(b));
      }
    }
    Block& target = parent < 0 ? g_.body : g_.nodes[parent].blocks[parent_block];
    for (const auto* out : jb.outputs()) target.outputs.push_back(ValueOf(out));
  }

 private:
  int ImportNode(const torch::jit::Node& jn, int parent, int parent_block) {
    Node n;
    n.id = static_cast<int>(g_.nodes.size());
    n.op = jn.kind().toQualString();
    n.parent = parent;
    n.parent_block = parent_block;
    const auto [path, leaf] = ModulePath(&jn, containers_);
    n.module_path = path;
    for (const auto* in : jn.inputs()) {
      const int id = ValueOf(in);
      n.inputs.push_back(id);
      g_.values[id].consumers.push_back(n.id);
    }
    for (const auto* out : jn.outputs()) {
      const int id = ValueOf(out);
      g_.values[id].producer = n.id;
      n.outputs.push_back(id);
    }
    g_.nodes.push_back(std::move(n));
    Node& node = g_.nodes.back();
    node.kind = ClassifyOp(g_, node);
    const bool has_params = !ParamSlots(node.kind).empty();
    const std::string base = (leaf || (has_params && !path.empty()))
                                 ? path
                                 : (path.empty() ? ShortOpName(node.op) : path + "." + ShortOpName(node.op));
    node.name = UniqueName(base);
    AdoptParams(node);
    return node.id;
  }

  // A layer owns its parameters: each gets a value of its own, named after the layer,
  // even where freezing pooled equal tensors of different layers into one constant.
  void AdoptParams(Node& node) {
    for (const auto& [role, slot] : ParamSlots(node.kind)) {
      const auto& c = g_.values[node.inputs[slot]].constant;
      if (c && c->isNone()) continue;
      if ((!c || !c->isTensor()) && role == "weight") {
        node.kind = OpKind::kOther;  // weights computed at run time: not a layer
        return;
      }
    }
    for (const auto& [role, slot] : ParamSlots(node.kind)) {
      const auto& c = g_.values[node.inputs[slot]].constant;
      if (c && c->isTensor()) g_.SetParam(node, role, slot, c->toTensor());
    }
  }

  std::string UniqueName(const std::string& base) {
    std::string name = base;
    for (int k = 1; taken_.count(name); ++k) name = absl::StrCat(base, "_", k);
    taken_.insert(name);
    return name;
  }

  Graph& g_;
  const ContainerIndex& containers_;
  std::unordered_map<const torch::jit::Value*, int> ids_;
  std::set<std::string> taken_;
};

// The model's own error, named after it.
absl::Status Refused(const std::string& name, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("cannot load TorchScript model ", name, ": ", s.message()));
}

struct FrozenModel {
  std::shared_ptr<torch::jit::Graph> graph;
  ContainerIndex containers;
};

// The module `load` returns, as the frozen, inlined, mutation-free graph the importer
// takes: admission before anything of it evaluates, then freezing and clean-up passes.
// Every exception becomes an error that names the model `name`.
template <typename Load>
absl::StatusOr<FrozenModel> FrozenGraph(const std::string& name, Load&& load) {
  try {
    torch::jit::Module module = load();
    // Admission, before freezing's constant propagation evaluates anything.
    {
      std::shared_ptr<torch::jit::Graph> forward = module.get_method("forward").graph()->copy();
      torch::jit::Inline(*forward);
      if (absl::Status s = AdmitGraph(*forward); !s.ok()) return Refused(name, s);
    }
    module.eval();
    torch::jit::Module frozen = torch::jit::freeze_module(module);
    std::shared_ptr<torch::jit::Graph> jg = frozen.get_method("forward").graph()->copy();
    // Scripted modules check their inputs (`if x.dim() != 4: raise ...`); treating the
    // raising branch as unreachable leaves straight-line code, as the tracer would.
    torch::jit::EliminateExceptions(jg);
    torch::jit::ConstantPropagation(jg);
    torch::jit::RemoveListMutation(jg);
    torch::jit::RemoveTensorMutation(jg);
    torch::jit::ConstantPropagation(jg);
    torch::jit::EliminateDeadCode(jg);
    return FrozenModel{jg, ContainerIndex(module)};
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot load TorchScript model ", name, ": out of memory"));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load TorchScript model ", name, ": ", ExplainLoadError(FirstLine(e.what_without_backtrace()))));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load TorchScript model ", name, ": ", ExplainLoadError(FirstLine(e.what()))));
  }
}

// The frozen graph as qopt IR.
absl::StatusOr<Graph> ToIr(const torch::jit::Graph& jg, const ContainerIndex& containers) {
  RETURN_IF_ERROR(CheckRunnable(*jg.block(), containers));
  Graph g;
  Importer importer(g, containers);
  const torch::jit::Block& top = *jg.block();
  // Input 0 is `self`, frozen away.
  for (size_t i = 1; i < top.inputs().size(); ++i) g.body.inputs.push_back(importer.ValueOf(top.inputs()[i]));
  importer.ImportBlock(top, -1, 0);
  return g;
}

}  // namespace internal_import

void WarmUpImport() {
  using namespace internal_import;
  at::set_num_threads(1);
  try {
    torch::jit::Module m("WarmUp");
    m.register_parameter("w", torch::ones({4, 1, 3, 3}), false);
    m.register_parameter("fc", torch::ones({2, 4}), false);
    m.define(R"(
      def forward(self, x):
          y = torch.relu(torch.conv2d(x, self.w, None, [1, 1], [1, 1]))
          y = torch.flatten(torch.adaptive_avg_pool2d(y, [1, 1]), 1)
          return torch.linear(y, self.fc)
    )");
    std::stringstream bytes;
    m.save(bytes);
    // The same path as a job's model: loader, admission, freezing, passes, import.
    absl::StatusOr<FrozenModel> frozen =
        FrozenGraph("warm-up", [&] { return torch::jit::load(bytes, c10::Device(c10::kCPU)); });
    if (frozen.ok()) ToIr(*frozen->graph, frozen->containers).IgnoreError();
    m.forward({torch::ones({1, 1, 8, 8})});
  } catch (const std::exception&) {
  }
}

absl::StatusOr<Graph> ImportTorchScript(const std::string& path) {
  using namespace internal_import;
  RETURN_IF_ERROR(CheckFile(path));
  if (absl::Status s = AdmitArchive(path); !s.ok()) return Refused(path, s);
  ASSIGN_OR_RETURN(const FrozenModel frozen,
                   FrozenGraph(path, [&] { return torch::jit::load(path, c10::Device(c10::kCPU)); }));
  return ToIr(*frozen.graph, frozen.containers);
}

}  // namespace qopt
