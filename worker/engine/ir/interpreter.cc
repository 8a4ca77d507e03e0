#include "ir/interpreter.h"

#include <chrono>
#include <map>

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/runtime/operator.h>

#include "absl/strings/str_join.h"
#include "ir/jit_bridge.h"
#include "status.h"

namespace qopt {
namespace internal_interpreter {

using Stack = std::vector<c10::IValue>;

// Structural prim ops are instructions of the TorchScript interpreter rather than
// registered operators, so they are implemented here.
std::function<void(Stack&)> StructuralOp(const Graph& g, const Node& n) {
  const size_t num_inputs = n.inputs.size();
  const size_t num_outputs = n.outputs.size();
  if (n.op == "prim::TupleConstruct") {
    return [num_inputs](Stack& s) {
      std::vector<c10::IValue> elems(s.end() - num_inputs, s.end());
      s.erase(s.end() - num_inputs, s.end());
      s.emplace_back(c10::ivalue::Tuple::create(std::move(elems)));
    };
  }
  if (n.op == "prim::ListConstruct") {
    c10::TypePtr elem = g.values[n.outputs[0]].type->expectRef<c10::ListType>().getElementType();
    return [num_inputs, elem](Stack& s) {
      c10::impl::GenericList list(elem);
      list.reserve(num_inputs);
      for (auto it = s.end() - num_inputs; it != s.end(); ++it) list.push_back(*it);
      s.erase(s.end() - num_inputs, s.end());
      s.emplace_back(std::move(list));
    };
  }
  if (n.op == "prim::TupleUnpack" || n.op == "prim::ListUnpack") {
    const bool tuple = n.op == "prim::TupleUnpack";
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

// Values a top-level node reads, counting what the nodes of its blocks read and return.
void CollectUses(const Graph& g, const Node& n, std::vector<int>& out) {
  out.insert(out.end(), n.inputs.begin(), n.inputs.end());
  for (const Block& b : n.blocks) {
    out.insert(out.end(), b.outputs.begin(), b.outputs.end());
    for (int id : b.nodes) {
      if (!g.nodes[id].removed) CollectUses(g, g.nodes[id], out);
    }
  }
}

std::string Where(const Node& n) { return absl::StrCat(n.name, " (", n.op, "): "); }

}  // namespace internal_interpreter

struct Interpreter::RunState {
  std::vector<c10::IValue> env;
  internal_interpreter::Stack stack;
  ValueObserver* observer = nullptr;
  RunProfile* profile = nullptr;
  bool may_overwrite = true;
};

namespace internal_interpreter {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace internal_interpreter

Interpreter::Interpreter(const Graph& graph) : graph_(graph) { built_ = Build(); }

Interpreter::~Interpreter() = default;

absl::Status Interpreter::Build() {
  scratch_ = std::make_shared<torch::jit::Graph>();
  ASSIGN_OR_RETURN(Steps top, BuildBlock(graph_.body, /*top_level=*/true));
  steps_ = std::make_unique<Steps>(std::move(top));
  return absl::OkStatus();
}

absl::StatusOr<Interpreter::Steps> Interpreter::BuildBlock(const Block& block, bool top_level) {
  using namespace internal_interpreter;
  std::vector<const Node*> live;
  for (int id : block.nodes) {
    if (!graph_.nodes[id].removed) live.push_back(&graph_.nodes[id]);
  }
  std::vector<int> last_use(graph_.values.size(), -1);
  std::vector<std::vector<int>> uses(live.size());  // top level only
  if (top_level) {
    for (size_t i = 0; i < live.size(); ++i) {
      CollectUses(graph_, *live[i], uses[i]);
      for (int v : uses[i]) last_use[v] = static_cast<int>(i);
    }
    for (int out : graph_.outputs()) last_use[out] = -1;
  }
  Steps steps;
  for (size_t i = 0; i < live.size(); ++i) {
    const Node& n = *live[i];
    Step step;
    step.node = &n;
    if (top_level && !n.inputs.empty() && n.blocks.empty()) {
      const int first = n.inputs[0];
      const int producer = graph_.values[first].producer;
      step.inplace = producer >= 0 && ProducesFreshTensor(graph_.nodes[producer].kind) &&
                     last_use[first] == static_cast<int>(i);
    }
    if (n.kind == OpKind::kIf || n.kind == OpKind::kLoop) {
      for (const Block& b : n.blocks) {
        ASSIGN_OR_RETURN(Steps inner, BuildBlock(b, /*top_level=*/false));
        step.blocks.push_back(std::move(inner));
      }
    } else if (auto structural = StructuralOp(graph_, n)) {
      step.op = std::move(structural);
    } else {
      step.def = FindOpDef(graph_, n);
      std::vector<torch::jit::Value*> inputs;
      std::vector<std::string> types;
      for (int in : n.inputs) {
        inputs.push_back(scratch_->addInput()->setType(graph_.values[in].type));
        types.push_back(graph_.values[in].type->annotation_str());
      }
      torch::jit::Node* jn = CreateJitNode(*scratch_, n.op, inputs, n.outputs.size());
      for (size_t k = 0; k < n.outputs.size(); ++k) jn->output(k)->setType(graph_.values[n.outputs[k]].type);
      const torch::jit::Operator* op = jn->maybeOperator();
      if (op == nullptr) {
        return absl::UnimplementedError(absl::StrCat(Where(n), "no overload takes (", absl::StrJoin(types, ", "), ")"));
      }
      step.op = [operation = op->getOperation(jn)](Stack& s) mutable { operation(s); };
    }
    if (top_level) {
      for (int v : uses[i]) {
        if (last_use[v] == static_cast<int>(i) && !graph_.values[v].constant) step.release.push_back(v);
      }
    }
    steps.push_back(std::move(step));
  }
  return steps;
}

absl::StatusOr<c10::IValue> Interpreter::Run(const std::vector<c10::IValue>& inputs,
                                             ValueObserver* observer, RunProfile* profile) const {
  using namespace internal_interpreter;
  RETURN_IF_ERROR(built_);
  const Clock::time_point start = profile ? Clock::now() : Clock::time_point();
  const std::vector<int>& graph_inputs = graph_.inputs();
  if (inputs.size() != graph_inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("model takes ", graph_inputs.size(),
                                                   " inputs, got ", inputs.size()));
  }
  RunState state;
  state.observer = observer;
  state.profile = profile;
  state.may_overwrite = observer == nullptr || !observer->RetainsValues();
  state.env.resize(graph_.values.size());
  try {
    for (const auto& v : graph_.values) {
      if (!v.constant) continue;
      state.env[v.id] = *v.constant;
      if (observer && v.is_param && !v.consumers.empty()) {
        at::Tensor t = v.constant->toTensor();
        observer->OnParam(v, t);
        state.env[v.id] = t;
      }
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      state.env[graph_inputs[i]] = inputs[i];
      if (observer) observer->OnValue(graph_.values[graph_inputs[i]], state.env[graph_inputs[i]]);
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("preparing the run: ", FirstLine(e.what())));
  }
  if (observer && observer->Finished()) return c10::IValue();
  if (profile) {
    profile->setup_seconds += Seconds(start, Clock::now());
    ++profile->runs;
  }

  ASSIGN_OR_RETURN(const bool completed, RunSteps(*steps_, state));
  if (!completed) return c10::IValue();
  const std::vector<int>& outputs = graph_.outputs();
  if (outputs.size() == 1) return state.env[outputs[0]];
  std::vector<c10::IValue> outs;
  for (int o : outputs) outs.push_back(state.env[o]);
  return c10::IValue(c10::ivalue::Tuple::create(std::move(outs)));
}

absl::StatusOr<bool> Interpreter::RunSteps(const Steps& steps, RunState& state) const {
  using namespace internal_interpreter;
  std::vector<c10::IValue>& env = state.env;
  ValueObserver* observer = state.observer;
  RunProfile* profile = state.profile;
  for (const Step& step : steps) {
    const Node& n = *step.node;
    Clock::time_point t0, t1;
    if (profile) t0 = Clock::now();
    try {
      if (!step.blocks.empty()) {
        bool finished = false;
        RETURN_IF_ERROR(RunControlFlow(step, state, finished));
        if (finished) return false;
      } else {
        Stack& stack = state.stack;
        stack.clear();
        for (int in : n.inputs) stack.push_back(env[in]);
        if (observer) observer->OnInputs(n, stack);
        c10::IValue out;
        const bool inplace = step.inplace && state.may_overwrite;
        // A bypassed node's output aliases its input, which the observer may then
        // overwrite: only when no one else reads that input.
        if (observer && inplace && (n.kind == OpKind::kRelu || n.kind == OpKind::kClip) &&
            observer->Bypasses(n)) {
          env[n.outputs[0]] = stack[0];
        } else if (n.outputs.size() == 1 && step.def && step.def->run &&
                   step.def->run(n, stack, inplace, out)) {
          env[n.outputs[0]] = std::move(out);
        } else {
          step.op(stack);
          if (stack.size() < n.outputs.size()) {
            return absl::InternalError(absl::StrCat(Where(n), "produced ", stack.size(),
                                                    " values, expected ", n.outputs.size()));
          }
          const size_t first = stack.size() - n.outputs.size();
          for (size_t k = 0; k < n.outputs.size(); ++k) env[n.outputs[k]] = std::move(stack[first + k]);
        }
      }
      if (profile) t1 = Clock::now();
      if (observer) {
        for (int out : n.outputs) observer->OnValue(graph_.values[out], env[out]);
      }
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat(Where(n), FirstLine(e.what_without_backtrace())));
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(Where(n), FirstLine(e.what())));
    }
    if (observer && observer->Finished()) return false;
    const Clock::time_point t2 = profile ? Clock::now() : Clock::time_point();
    for (int v : step.release) env[v] = c10::IValue();
    if (profile) {
      RunProfile::Op& op = profile->by_op[n.op];
      ++op.calls;
      // A control-flow node's time is its blocks', which their own nodes report.
      if (step.blocks.empty()) op.op_seconds += Seconds(t0, t1) + Seconds(t2, Clock::now());
      op.observer_seconds += Seconds(t1, t2);
    }
  }
  return true;
}

absl::Status Interpreter::RunControlFlow(const Step& step, RunState& state, bool& finished) const {
  const Node& n = *step.node;
  std::vector<c10::IValue>& env = state.env;
  if (n.kind == OpKind::kIf) {
    const size_t taken = env[n.inputs[0]].toBool() ? 0 : 1;
    ASSIGN_OR_RETURN(const bool completed, RunSteps(step.blocks[taken], state));
    finished = !completed;
    if (finished) return absl::OkStatus();
    const Block& block = n.blocks[taken];
    for (size_t k = 0; k < n.outputs.size(); ++k) env[n.outputs[k]] = env[block.outputs[k]];
    return absl::OkStatus();
  }
  // prim::Loop(max_trip_count, initial_condition, *carried); the body takes
  // (iteration, *carried) and returns (condition, *carried).
  const Block& body = n.blocks[0];
  const int64_t max_trips = env[n.inputs[0]].toInt();
  bool condition = env[n.inputs[1]].toBool();
  std::vector<c10::IValue> carried(n.inputs.size() - 2);
  for (size_t k = 0; k < carried.size(); ++k) carried[k] = env[n.inputs[k + 2]];
  for (int64_t i = 0; i < max_trips && condition; ++i) {
    env[body.inputs[0]] = i;
    for (size_t k = 0; k < carried.size(); ++k) env[body.inputs[k + 1]] = carried[k];
    ASSIGN_OR_RETURN(const bool completed, RunSteps(step.blocks[0], state));
    if (!completed) {
      finished = true;
      return absl::OkStatus();
    }
    condition = env[body.outputs[0]].toBool();
    for (size_t k = 0; k < carried.size(); ++k) carried[k] = env[body.outputs[k + 1]];
  }
  for (size_t k = 0; k < n.outputs.size(); ++k) env[n.outputs[k]] = carried[k];
  return absl::OkStatus();
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
