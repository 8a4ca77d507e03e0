#include "ir/shape_inference.h"

#include <ATen/ATen.h>

#include "ir/interpreter.h"
#include "status.h"

namespace qopt {
namespace internal_shapes {

// Records what each value turned out to be.
class ShapeRecorder : public ValueObserver {
 public:
  explicit ShapeRecorder(Graph& target) : target_(target) {}
  void OnValue(const Value& value, c10::IValue& v) override {
    if (!v.isTensor()) return;
    const at::Tensor& t = v.toTensor();
    target_.values[value.id].dtype = t.scalar_type();
    target_.values[value.id].shape = t.sizes().vec();
  }
  bool RetainsValues() const override { return false; }

 private:
  Graph& target_;
};

absl::Status RunOn(const Graph& graph, Graph& target, const std::vector<std::vector<int64_t>>& shapes,
                   const c10::Device& device) {
  std::vector<c10::IValue> inputs;
  for (const auto& shape : shapes) inputs.emplace_back(at::zeros(shape, at::TensorOptions(device).dtype(at::kFloat)));
  ShapeRecorder recorder(target);
  const Interpreter interpreter(graph);
  return interpreter.Run(inputs, &recorder).status();
}

}  // namespace internal_shapes

absl::Status InferShapes(Graph& graph, const std::vector<std::vector<int64_t>>& input_shapes) {
  using namespace internal_shapes;
  if (input_shapes.size() != graph.inputs().size()) {
    return absl::InvalidArgumentError(absl::StrCat("model takes ", graph.inputs().size(),
                                                   " inputs, got ", input_shapes.size(), " input shapes"));
  }
  for (Value& v : graph.values) {
    v.dtype.reset();
    v.shape.reset();
    if (v.constant && v.constant->isTensor()) {
      v.dtype = v.constant->toTensor().scalar_type();
      v.shape = v.constant->toTensor().sizes().vec();
    }
  }
  at::NoGradGuard no_grad;
  Graph meta = graph.Clone();
  meta.To(c10::Device(c10::kMeta));
  if (RunOn(meta, graph, input_shapes, c10::Device(c10::kMeta)).ok()) return absl::OkStatus();
  // No meta kernel somewhere, or a branch on data: run for real.
  Graph cpu = graph.Clone();
  cpu.To(c10::Device(c10::kCPU));
  return Annotate(RunOn(cpu, graph, input_shapes, c10::Device(c10::kCPU)), "shape inference");
}

}  // namespace qopt
