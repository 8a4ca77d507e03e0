#include "ir/interpreter.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/runtime/operator.h>

#include "status.h"

namespace qopt {
namespace internal_interpreter {

using Stack = std::vector<c10::IValue>;

// Structural prim ops are instructions of the TorchScript interpreter rather than
// registered operators, so they are implemented here.
std::function<void(Stack&)> StructuralOp(const torch::jit::Node* n) {
  const auto kind = n->kind();
  const size_t num_inputs = n->inputs().size();
  const size_t num_outputs = n->outputs().size();
  if (kind == c10::prim::TupleConstruct) {
    return [num_inputs](Stack& s) {
      std::vector<c10::IValue> elems(s.end() - num_inputs, s.end());
      s.erase(s.end() - num_inputs, s.end());
      s.emplace_back(c10::ivalue::Tuple::create(std::move(elems)));
    };
  }
  if (kind == c10::prim::ListConstruct) {
    c10::TypePtr elem = n->output()->type()->expectRef<c10::ListType>().getElementType();
    return [num_inputs, elem](Stack& s) {
      c10::impl::GenericList list(elem);
      list.reserve(num_inputs);
      for (auto it = s.end() - num_inputs; it != s.end(); ++it) list.push_back(*it);
      s.erase(s.end() - num_inputs, s.end());
      s.emplace_back(std::move(list));
    };
  }
  if (kind == c10::prim::TupleUnpack || kind == c10::prim::ListUnpack) {
    const bool tuple = kind == c10::prim::TupleUnpack;
    return [num_outputs, tuple](Stack& s) {
      c10::IValue v = std::move(s.back());
      s.pop_back();
      if (tuple) {
        for (const auto& e : v.toTupleRef().elements()) s.push_back(e);
      } else {
        auto list = v.toList();
        TORCH_CHECK(list.size() == num_outputs, "list of ", list.size(),
                    " elements unpacked into ", num_outputs, " values");
        for (size_t i = 0; i < list.size(); ++i) s.push_back(list.get(i));
      }
    };
  }
  return nullptr;
}


}  // namespace internal_interpreter

bool ProducesFreshTensor(OpKind kind) {
  switch (kind) {
    case OpKind::kConv:
    case OpKind::kLinear:
    case OpKind::kBatchNorm:
    case OpKind::kRelu:
    case OpKind::kRelu6:
    case OpKind::kAdd:
    case OpKind::kMul:
    case OpKind::kCat:
      return true;
    default:
      return false;
  }
}

namespace internal_interpreter {

// Fast paths for the layer ops; inputs are in `env` order of the node. With `inplace`,
// the first input may be overwritten.
bool RunFast(const Node& n, std::vector<c10::IValue>& in, bool inplace, c10::IValue& out) {
  switch (n.kind) {
    case OpKind::kConv: {
      if (n.op != "aten::_convolution" && n.op != "aten::conv2d") return false;
      const at::Tensor& x = in[0].toTensor();
      const at::Tensor& w = in[1].toTensor();
      c10::optional<at::Tensor> b;
      if (!in[2].isNone()) b = in[2].toTensor();
      std::vector<int64_t> stride = in[3].toIntVector(), padding = in[4].toIntVector(),
                           dilation = in[5].toIntVector();
      if (n.op == "aten::conv2d") {
        out = at::conv2d(x, w, b, stride, padding, dilation, in[6].toInt());
      } else {
        out = at::convolution(x, w, b, stride, padding, dilation, /*transposed=*/false,
                              in[7].toIntVector(), in[8].toInt());
      }
      return true;
    }
    case OpKind::kLinear: {
      c10::optional<at::Tensor> b;
      if (!in[2].isNone()) b = in[2].toTensor();
      out = at::linear(in[0].toTensor(), in[1].toTensor(), b);
      return true;
    }
    case OpKind::kBatchNorm: {
      auto opt = [&](int i) -> c10::optional<at::Tensor> {
        if (in[i].isNone()) return c10::nullopt;
        return in[i].toTensor();
      };
      out = at::batch_norm(in[0].toTensor(), opt(1), opt(2), opt(3), opt(4), in[5].toBool(),
                           in[6].toDouble(), in[7].toDouble(), in[8].toBool());
      return true;
    }
    case OpKind::kRelu: {
      at::Tensor x = in[0].toTensor();
      out = inplace ? at::relu_(x) : at::relu(x);
      return true;
    }
    case OpKind::kRelu6: {
      at::Tensor x = in[0].toTensor();
      if (n.Param("clip_max") >= 0) {
        // Per-channel clip left by cross-layer equalization: the last input.
        at::Tensor r = inplace ? at::relu_(x) : at::relu(x);
        out = at::minimum(r, in.back().toTensor());
        return true;
      }
      out = inplace ? at::hardtanh_(x, 0.0, 6.0) : at::hardtanh(x, 0.0, 6.0);
      return true;
    }
    case OpKind::kAdd: {
      if (in.size() != 3 || !in[1].isTensor()) return false;
      at::Tensor a = in[0].toTensor();
      const at::Tensor& b = in[1].toTensor();
      if (inplace && a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type()) {
        out = a.add_(b, in[2].toScalar());
      } else {
        out = at::add(a, b, in[2].toScalar());
      }
      return true;
    }
    default:
      return false;
  }
}

}  // namespace internal_interpreter

Interpreter::Interpreter(const Graph& graph) : graph_(graph) {
  using namespace internal_interpreter;
  std::vector<int> last_use(graph.values.size(), -1);
  const auto live = graph.LiveNodes();
  for (size_t i = 0; i < live.size(); ++i) {
    for (int in : live[i]->inputs) last_use[in] = static_cast<int>(i);
  }
  for (int out : graph.outputs) last_use[out] = -1;
  std::vector<std::vector<int>> release(live.size());
  for (size_t v = 0; v < graph.values.size(); ++v) {
    if (last_use[v] >= 0 && !graph.values[v].constant) release[last_use[v]].push_back(v);
  }
  for (size_t i = 0; i < live.size(); ++i) {
    Step step{live[i], nullptr, std::move(release[i])};
    const Node& n = *live[i];
    if (!n.inputs.empty()) {
      const int first = n.inputs[0];
      const int producer = graph.values[first].producer;
      step.inplace = producer >= 0 && ProducesFreshTensor(graph.nodes[producer].kind) &&
                     last_use[first] == static_cast<int>(i);
    }
    if (auto structural = StructuralOp(live[i]->jit)) {
      step.op = std::move(structural);
    } else {
      torch::jit::Operation registered = live[i]->jit->getOperation();
      step.op = [registered = std::move(registered)](Stack& s) mutable { registered(s); };
    }
    steps_.push_back(std::move(step));
  }
}

absl::StatusOr<c10::IValue> Interpreter::Run(const std::vector<c10::IValue>& inputs,
                                             ValueObserver* observer) const {
  using namespace internal_interpreter;
  if (inputs.size() != graph_.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("model takes ", graph_.inputs.size(),
                                                   " inputs, got ", inputs.size()));
  }
  std::vector<c10::IValue> env(graph_.values.size());
  for (const auto& v : graph_.values) {
    if (!v.constant) continue;
    env[v.id] = *v.constant;
    if (observer && v.is_param && !v.consumers.empty()) {
      at::Tensor t = v.constant->toTensor();
      observer->OnParam(v, t);
      env[v.id] = t;
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    env[graph_.inputs[i]] = inputs[i];
    if (observer) observer->OnValue(graph_.values[graph_.inputs[i]], env[graph_.inputs[i]]);
  }
  if (observer && observer->Finished()) return c10::IValue();

  const bool may_overwrite = observer == nullptr || !observer->RetainsValues();
  Stack stack;
  for (const Step& step : steps_) {
    const Node& n = *step.node;
    try {
      stack.clear();
      for (int in : n.inputs) stack.push_back(env[in]);
      c10::IValue out;
      // A bypassed node's output aliases its input, which the observer may then overwrite:
      // only when no one else reads that input.
      if (observer && step.inplace && may_overwrite && n.kind == OpKind::kRelu &&
          observer->Bypasses(n)) {
        env[n.outputs[0]] = stack[0];
      } else if (n.outputs.size() == 1 &&
                 RunFast(n, stack, step.inplace && may_overwrite, out)) {
        env[n.outputs[0]] = std::move(out);
      } else {
        step.op(stack);
        if (stack.size() < n.outputs.size()) {
          return absl::InternalError(absl::StrCat(n.name, " (", n.op, "): produced ",
                                                  stack.size(), " values, expected ",
                                                  n.outputs.size()));
        }
        const size_t first = stack.size() - n.outputs.size();
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          env[n.outputs[k]] = std::move(stack[first + k]);
        }
      }
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat(n.name, " (", n.op, "): ",
                                                     FirstLine(e.what_without_backtrace())));
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(n.name, " (", n.op, "): ", FirstLine(e.what())));
    }
    if (observer) {
      for (int out : n.outputs) observer->OnValue(graph_.values[out], env[out]);
      if (observer->Finished()) return c10::IValue();
    }
    for (int v : step.release) env[v] = c10::IValue();
  }

  if (graph_.outputs.size() == 1) return env[graph_.outputs[0]];
  std::vector<c10::IValue> outs;
  for (int o : graph_.outputs) outs.push_back(env[o]);
  return c10::IValue(c10::ivalue::Tuple::create(std::move(outs)));
}

absl::StatusOr<at::Tensor> Interpreter::Forward(const at::Tensor& input,
                                                ValueObserver* observer) const {
  ASSIGN_OR_RETURN(c10::IValue out, Run({c10::IValue(input)}, observer));
  if (!out.isTensor()) {
    return absl::InvalidArgumentError("model output is not a single tensor");
  }
  return out.toTensor();
}

}  // namespace qopt
