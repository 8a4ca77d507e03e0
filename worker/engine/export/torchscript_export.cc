#include "export/torchscript_export.h"

#include <map>

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "status.h"
#include "absl/strings/str_split.h"

namespace qopt {
namespace internal_export {

using JitValue = torch::jit::Value;

// Module tree of the exported model, built from parameter names.
class ModuleTree {
 public:
  explicit ModuleTree(std::shared_ptr<torch::jit::CompilationUnit> cu)
      : cu_(std::move(cu)), root_(c10::QualifiedName("__torch__.qopt.export.Model"), cu_) {}

  torch::jit::Module& root() { return root_; }

  // The module at dotted `path`, created on first use.
  torch::jit::Module Get(const std::string& path) {
    if (path.empty()) return root_;
    if (auto it = modules_.find(path); it != modules_.end()) return it->second;
    const auto dot = path.rfind('.');
    const std::string parent_path = dot == std::string::npos ? "" : path.substr(0, dot);
    const std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
    torch::jit::Module parent = Get(parent_path);
    torch::jit::Module m(
        c10::QualifiedName(absl::StrCat("__torch__.qopt.export.Module", modules_.size())), cu_);
    parent.register_module(name, m);
    modules_.emplace(path, m);
    return m;
  }

 private:
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  torch::jit::Module root_;
  std::map<std::string, torch::jit::Module> modules_;
};

std::pair<std::string, std::string> SplitAttr(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

JitValue* GetAttrChain(torch::jit::Graph& g, JitValue* self, const std::string& path,
                       const std::string& attr) {
  JitValue* cur = self;
  if (!path.empty()) {
    for (const auto& part : absl::StrSplit(path, '.')) cur = g.insertGetAttr(cur, std::string(part));
  }
  return g.insertGetAttr(cur, attr);
}

}  // namespace internal_export

absl::Status ExportTorchScript(const Graph& graph, const QuantSim* sim, const std::string& path) {
  using namespace internal_export;
  try {
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    ModuleTree tree(cu);
    auto g = std::make_shared<torch::jit::Graph>();
    JitValue* self = g->addInput("self");
    self->setType(tree.root().type());

    std::map<int, JitValue*> mapped;
    auto fake_quantize = [&](JitValue* v, const Quantizer& q, const std::string& owner,
                             const std::string& attr) -> JitValue* {
      const Encoding& e = q.encodings().front();
      if (q.axis() < 0) {
        return g->insert(c10::Symbol::fromQualString("aten::fake_quantize_per_tensor_affine"),
                         {v, static_cast<double>(e.scale), e.zero_point(), e.quant_min(),
                          e.quant_max()});
      }
      std::vector<float> scales;
      std::vector<int32_t> zps;
      for (const auto& c : q.encodings()) {
        scales.push_back(static_cast<float>(c.scale));
        zps.push_back(static_cast<int32_t>(c.zero_point()));
      }
      torch::jit::Module m = tree.Get(owner);
      m.register_buffer(attr + "_scale", at::tensor(scales, at::kFloat));
      m.register_buffer(attr + "_zero_point", at::tensor(zps, at::kInt));
      JitValue* s = GetAttrChain(*g, self, owner, attr + "_scale");
      JitValue* z = GetAttrChain(*g, self, owner, attr + "_zero_point");
      return g->insert(c10::Symbol::fromQualString("aten::fake_quantize_per_channel_affine"),
                       {v, s, z, static_cast<int64_t>(q.axis()), e.quant_min(), e.quant_max()});
    };
    auto quantize_activation = [&](int vid, JitValue* v) -> JitValue* {
      if (!sim) return v;
      auto it = sim->activation_quantizers().find(vid);
      if (it == sim->activation_quantizers().end() || !it->second.has_encodings()) return v;
      return fake_quantize(v, it->second, "", "");
    };

    for (size_t i = 0; i < graph.inputs.size(); ++i) {
      const int vid = graph.inputs[i];
      JitValue* in = g->addInput(graph.values[vid].name);
      in->setType(graph.jit_graph->inputs()[i + 1]->type());  // input 0 is `self`
      mapped[vid] = quantize_activation(vid, in);
    }

    auto value_for = [&](int vid) -> JitValue* {
      if (auto it = mapped.find(vid); it != mapped.end()) return it->second;
      const Value& v = graph.values[vid];
      JitValue* out = nullptr;
      if (v.is_param) {
        const auto [owner, attr] = SplitAttr(v.name);
        at::Tensor t = v.constant->toTensor().detach().to(at::kCPU).contiguous();
        tree.Get(owner).register_parameter(attr, t, /*is_buffer=*/false);
        out = GetAttrChain(*g, self, owner, attr);
        if (sim) {
          if (auto q = sim->param_quantizers().find(vid); q != sim->param_quantizers().end()) {
            out = fake_quantize(out, q->second, owner, attr);
          }
        }
      } else if (v.constant) {
        out = g->insertConstant(*v.constant);
      } else {
        throw std::runtime_error(absl::StrCat("value ", v.name, " used before it is defined"));
      }
      mapped[vid] = out;
      return out;
    };

    for (const Node* n : graph.LiveNodes()) {
      if (n->kind == OpKind::kRelu6 && n->Param("clip_max") >= 0) {
        // ReLU6 with a clip per channel (cross-layer equalization): relu, then minimum.
        JitValue* r = g->insert(c10::Symbol::fromQualString("aten::relu"), {value_for(n->inputs[0])});
        JitValue* y = g->insert(c10::Symbol::fromQualString("aten::minimum"), {r, value_for(n->Param("clip_max"))});
        mapped[n->outputs[0]] = quantize_activation(n->outputs[0], y);
        continue;
      }
      std::vector<JitValue*> inputs;
      for (int in : n->inputs) inputs.push_back(value_for(in));
      torch::jit::Node* jn = g->create(n->jit->kind(), inputs, n->outputs.size());
      jn->copyAttributes(*n->jit);
      g->insertNode(jn);
      for (size_t k = 0; k < n->outputs.size(); ++k) {
        jn->output(k)->setType(n->jit->output(k)->type());
        mapped[n->outputs[k]] = quantize_activation(n->outputs[k], jn->output(k));
      }
    }
    for (int out : graph.outputs) g->registerOutput(value_for(out));

    auto fn = cu->create_function(
        c10::QualifiedName(*tree.root().type()->name(), "forward"), g);
    tree.root().type()->addMethod(fn);
    tree.root().save(path);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    return absl::InternalError(
        absl::StrCat("TorchScript export to ", path, " failed: ", FirstLine(msg)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("TorchScript export to ", path, " failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace qopt
