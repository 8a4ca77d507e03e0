#include "ir/op_registry.h"

#include <ATen/ATen.h>

namespace qopt {
namespace internal_ops {

const c10::IValue* Constant(const Graph& g, const Node& n, size_t slot) {
  if (slot >= n.inputs.size()) return nullptr;
  const auto& c = g.values[n.inputs[slot]].constant;
  return c ? &*c : nullptr;
}

bool ConstNumber(const Graph& g, const Node& n, size_t slot) {
  const c10::IValue* c = Constant(g, n, slot);
  return c && (c->isDouble() || c->isInt() || c->isNone());
}

bool NotTransposed(const Graph& g, const Node& n) {
  const c10::IValue* t = Constant(g, n, 6);
  return t && t->isBool() && !t->toBool();
}

bool Transposed(const Graph& g, const Node& n) {
  const c10::IValue* t = Constant(g, n, 6);
  return t && t->isBool() && t->toBool();
}

bool TensorOperand(const Graph& g, const Node& n) {
  return n.inputs.size() >= 2 && g.values[n.inputs[1]].is_tensor;
}

bool ConstBounds(const Graph& g, const Node& n) {
  return ConstNumber(g, n, 1) && ConstNumber(g, n, 2);
}

// clamp.Tensor: bounds are constant tensors (parameters after cross-layer equalization)
// or None.
bool ConstTensorBounds(const Graph& g, const Node& n) {
  for (size_t slot : {1, 2}) {
    const c10::IValue* c = Constant(g, n, slot);
    if (!c || !(c->isTensor() || c->isNone())) return false;
  }
  return true;
}

c10::optional<at::Tensor> OptionalTensor(const c10::IValue& v) {
  if (v.isNone()) return c10::nullopt;
  return v.toTensor();
}

bool RunConv(const Node& n, std::vector<c10::IValue>& in, bool, c10::IValue& out) {
  if (n.op != "aten::_convolution" && n.op != "aten::conv2d") return false;
  const at::Tensor& x = in[0].toTensor();
  const at::Tensor& w = in[1].toTensor();
  const c10::optional<at::Tensor> b = OptionalTensor(in[2]);
  const std::vector<int64_t> stride = in[3].toIntVector(), padding = in[4].toIntVector(),
                             dilation = in[5].toIntVector();
  if (n.op == "aten::conv2d") {
    out = at::conv2d(x, w, b, stride, padding, dilation, in[6].toInt());
  } else {
    out = at::convolution(x, w, b, stride, padding, dilation, /*transposed=*/false,
                          in[7].toIntVector(), in[8].toInt());
  }
  return true;
}

bool RunLinear(const Node&, std::vector<c10::IValue>& in, bool, c10::IValue& out) {
  out = at::linear(in[0].toTensor(), in[1].toTensor(), OptionalTensor(in[2]));
  return true;
}

bool RunBatchNorm(const Node&, std::vector<c10::IValue>& in, bool, c10::IValue& out) {
  out = at::batch_norm(in[0].toTensor(), OptionalTensor(in[1]), OptionalTensor(in[2]),
                       OptionalTensor(in[3]), OptionalTensor(in[4]), in[5].toBool(),
                       in[6].toDouble(), in[7].toDouble(), in[8].toBool());
  return true;
}

bool RunRelu(const Node&, std::vector<c10::IValue>& in, bool inplace, c10::IValue& out) {
  at::Tensor x = in[0].toTensor();
  out = inplace ? at::relu_(x) : at::relu(x);
  return true;
}

bool RunHardtanh(const Node& n, std::vector<c10::IValue>& in, bool inplace, c10::IValue& out) {
  at::Tensor x = in[0].toTensor();
  const bool relu6 = n.op == "aten::relu6" || n.op == "aten::relu6_";
  const at::Scalar lo = relu6 ? at::Scalar(0.0) : in[1].toScalar();
  const at::Scalar hi = relu6 ? at::Scalar(6.0) : in[2].toScalar();
  out = inplace ? at::hardtanh_(x, lo, hi) : at::hardtanh(x, lo, hi);
  return true;
}

bool RunClampTensor(const Node&, std::vector<c10::IValue>& in, bool inplace, c10::IValue& out) {
  if (in.size() != 3 || (!in[1].isTensor() && !in[1].isNone()) ||
      (!in[2].isTensor() && !in[2].isNone())) {
    return false;  // the Scalar overload
  }
  at::Tensor x = in[0].toTensor();
  const auto lo = OptionalTensor(in[1]), hi = OptionalTensor(in[2]);
  out = inplace ? at::clamp_(x, lo, hi) : at::clamp(x, lo, hi);
  return true;
}

bool RunAdd(const Node&, std::vector<c10::IValue>& in, bool inplace, c10::IValue& out) {
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

bool ClampApplies(const Graph& g, const Node& n) {
  return ConstBounds(g, n) || ConstTensorBounds(g, n);
}

bool ReluSixApplies(const Graph& g, const Node& n) {
  if (n.op == "aten::relu6" || n.op == "aten::relu6_") return true;
  return ConstBounds(g, n);
}

const std::vector<OpDef>& Registry() {
  static const std::vector<OpDef> kOps = {
      {"aten::_convolution", OpKind::kConv, NotTransposed, RunConv},
      {"aten::conv1d", OpKind::kConv},
      {"aten::conv2d", OpKind::kConv, nullptr, RunConv},
      {"aten::conv3d", OpKind::kConv},
      {"aten::_convolution", OpKind::kConvTranspose, Transposed},
      {"aten::conv_transpose1d", OpKind::kConvTranspose},
      {"aten::conv_transpose2d", OpKind::kConvTranspose},
      {"aten::conv_transpose3d", OpKind::kConvTranspose},
      {"aten::linear", OpKind::kLinear, nullptr, RunLinear},
      {"aten::batch_norm", OpKind::kBatchNorm, nullptr, RunBatchNorm},
      {"aten::layer_norm", OpKind::kLayerNorm},
      {"aten::relu", OpKind::kRelu, nullptr, RunRelu},
      {"aten::relu_", OpKind::kRelu, nullptr, RunRelu},
      {"aten::relu6", OpKind::kClip, nullptr, RunHardtanh},
      {"aten::relu6_", OpKind::kClip, nullptr, RunHardtanh},
      {"aten::hardtanh", OpKind::kClip, ReluSixApplies, RunHardtanh},
      {"aten::hardtanh_", OpKind::kClip, ReluSixApplies, RunHardtanh},
      {"aten::clamp", OpKind::kClip, ClampApplies, RunClampTensor},
      {"aten::clamp_", OpKind::kClip, ClampApplies, RunClampTensor},
      {"aten::add", OpKind::kAdd, TensorOperand, RunAdd},
      {"aten::add_", OpKind::kAdd, TensorOperand, RunAdd},
      {"aten::mul", OpKind::kMul, TensorOperand},
      {"aten::mul_", OpKind::kMul, TensorOperand},
      {"aten::cat", OpKind::kCat},
      {"aten::max_pool1d", OpKind::kMaxPool},
      {"aten::max_pool2d", OpKind::kMaxPool},
      {"aten::max_pool3d", OpKind::kMaxPool},
      {"aten::avg_pool1d", OpKind::kAvgPool},
      {"aten::avg_pool2d", OpKind::kAvgPool},
      {"aten::avg_pool3d", OpKind::kAvgPool},
      {"aten::adaptive_avg_pool1d", OpKind::kAdaptiveAvgPool},
      {"aten::adaptive_avg_pool2d", OpKind::kAdaptiveAvgPool},
      {"aten::adaptive_avg_pool3d", OpKind::kAdaptiveAvgPool},
      {"aten::flatten", OpKind::kFlatten},
      {"aten::view", OpKind::kFlatten},
      {"aten::reshape", OpKind::kFlatten},
      {"aten::dropout", OpKind::kDropout},
      {"aten::dropout_", OpKind::kDropout},
      {"aten::feature_dropout", OpKind::kDropout},
      {"prim::If", OpKind::kIf},
      {"prim::Loop", OpKind::kLoop},
  };
  return kOps;
}

}  // namespace internal_ops

const OpDef* FindOpDef(const Graph& g, const Node& node) {
  // An op may have entries for different forms (aten::_convolution, plain or transposed):
  // the first whose condition holds.
  for (const OpDef& def : internal_ops::Registry()) {
    if (node.op != def.name || (def.applies != nullptr && !def.applies(g, node))) continue;
    return &def;
  }
  return nullptr;
}

OpKind ClassifyOp(const Graph& g, const Node& node) {
  const OpDef* def = FindOpDef(g, node);
  return def ? def->kind : OpKind::kOther;
}

bool ProducesFreshTensor(OpKind kind) {
  switch (kind) {
    case OpKind::kConv:
    case OpKind::kConvTranspose:
    case OpKind::kLinear:
    case OpKind::kBatchNorm:
    case OpKind::kLayerNorm:
    case OpKind::kRelu:
    case OpKind::kClip:
    case OpKind::kAdd:
    case OpKind::kMul:
    case OpKind::kCat:
      return true;
    default:
      return false;
  }
}

}  // namespace qopt
