#include "ir/verify.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "ir/jit_bridge.h"
#include "status.h"

namespace qopt {
namespace internal_verify {

absl::Status Broken(const std::string& what) { return absl::InternalError(absl::StrCat("IR: ", what)); }

class Verifier {
 public:
  explicit Verifier(const Graph& g) : g_(g) {}

  absl::Status Run() {
    RETURN_IF_ERROR(Arenas());
    std::set<int> defined;
    for (const Value& v : g_.values) {
      if (v.constant) defined.insert(v.id);
    }
    for (int in : g_.inputs()) defined.insert(in);
    RETURN_IF_ERROR(CheckBlock(g_.body, -1, 0, defined));
    for (const Node& n : g_.nodes) {
      if (!n.removed && !placed_.count(n.id)) return Broken(absl::StrCat(n.name, " is live but in no block"));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Arenas() {
    for (size_t i = 0; i < g_.values.size(); ++i) {
      if (g_.values[i].id != static_cast<int>(i)) return Broken(absl::StrCat("value ", i, " has id ", g_.values[i].id));
    }
    std::set<std::string> names;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const Node& n = g_.nodes[i];
      if (n.id != static_cast<int>(i)) return Broken(absl::StrCat("node ", i, " has id ", n.id));
      if (!n.removed && !names.insert(n.name).second) return Broken(absl::StrCat("two live nodes named ", n.name));
    }
    return absl::OkStatus();
  }

  // `defined` holds what this block can see; what it defines goes out of scope after it.
  absl::Status CheckBlock(const Block& block, int parent, int index, std::set<int> defined) {
    for (int in : block.inputs) defined.insert(in);
    for (int id : block.nodes) {
      if (id < 0 || id >= static_cast<int>(g_.nodes.size())) return Broken(absl::StrCat("block lists node ", id));
      const Node& n = g_.nodes[id];
      if (n.removed) return Broken(absl::StrCat("erased node ", n.name, " is still in a block"));
      if (n.parent != parent || n.parent_block != index || !placed_.insert(id).second) {
        return Broken(absl::StrCat(n.name, " is not where its parent link says, or listed twice"));
      }
      RETURN_IF_ERROR(CheckNode(n, defined));
      for (size_t b = 0; b < n.blocks.size(); ++b) RETURN_IF_ERROR(CheckBlock(n.blocks[b], n.id, static_cast<int>(b), defined));
      for (int out : n.outputs) defined.insert(out);
    }
    for (int out : block.outputs) {
      if (!defined.count(out)) return Broken(absl::StrCat("block output ", g_.values[out].name, " is not defined"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckNode(const Node& n, const std::set<int>& defined) {
    for (int in : n.inputs) {
      if (!defined.count(in)) return Broken(absl::StrCat(n.name, " reads ", g_.values[in].name, " before it is defined"));
      const auto& c = g_.values[in].consumers;
      if (std::find(c.begin(), c.end(), n.id) == c.end()) {
        return Broken(absl::StrCat(n.name, " reads ", g_.values[in].name, " but is not among its consumers"));
      }
      if (!g_.values[in].type) return Broken(absl::StrCat(g_.values[in].name, " has no type"));
    }
    for (int out : n.outputs) {
      if (g_.values[out].producer != n.id) return Broken(absl::StrCat(g_.values[out].name, " does not name ", n.name, " as its producer"));
    }
    for (const auto& [role, vid] : n.params) RETURN_IF_ERROR(CheckParam(n, role, vid));
    if (n.kind == OpKind::kIf || n.kind == OpKind::kLoop) return CheckControlFlow(n);
    if (IsStructuralOp(n.op)) return absl::OkStatus();
    std::vector<c10::TypePtr> types;
    for (int in : n.inputs) types.push_back(g_.values[in].type);
    const auto outputs = ResolveOutputTypes(n.op, types);
    if (!outputs.ok()) return Broken(absl::StrCat(n.name, ": ", outputs.status().message()));
    if (outputs->size() != n.outputs.size()) {
      return Broken(absl::StrCat(n.name, " has ", n.outputs.size(), " outputs, ", n.op, " makes ", outputs->size()));
    }
    return absl::OkStatus();
  }

  absl::Status CheckParam(const Node& n, const std::string& role, int vid) const {
    const Value& v = g_.values[vid];
    if (std::find(n.inputs.begin(), n.inputs.end(), vid) == n.inputs.end()) {
      return Broken(absl::StrCat(n.name, ": parameter ", role, " is not one of its inputs"));
    }
    if (!v.is_param || !v.constant || !v.constant->isTensor()) {
      return Broken(absl::StrCat(v.name, " is not a parameter tensor"));
    }
    const at::Tensor& t = v.constant->toTensor();
    if ((v.shape && *v.shape != t.sizes().vec()) || (v.dtype && *v.dtype != t.scalar_type())) {
      return Broken(absl::StrCat(v.name, ": recorded dtype or shape differs from its tensor"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckControlFlow(const Node& n) const {
    if (n.kind == OpKind::kIf) {
      if (n.inputs.size() != 1 || n.blocks.size() != 2) return Broken(absl::StrCat(n.name, ": prim::If needs one input and two blocks"));
      for (const Block& b : n.blocks) {
        if (b.outputs.size() != n.outputs.size() || !b.inputs.empty()) {
          return Broken(absl::StrCat(n.name, ": a branch returns ", b.outputs.size(), " values for ", n.outputs.size(), " outputs"));
        }
      }
      return absl::OkStatus();
    }
    const size_t carried = n.outputs.size();
    if (n.blocks.size() != 1 || n.inputs.size() != carried + 2 || n.blocks[0].inputs.size() != carried + 1 ||
        n.blocks[0].outputs.size() != carried + 1) {
      return Broken(absl::StrCat(n.name, ": prim::Loop inputs, body and outputs do not match"));
    }
    return absl::OkStatus();
  }

  const Graph& g_;
  std::set<int> placed_;
};

}  // namespace internal_verify

absl::Status Verify(const Graph& graph) {
  internal_verify::Verifier verifier(graph);
  return verifier.Run();
}

}  // namespace qopt
