#include "export/onnx_export.h"

#include <cmath>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "export/encodings_json.h"
#include "status.h"

namespace qopt {
namespace internal_onnx {

using json = nlohmann::ordered_json;

void SetTensor(onnx::TensorProto* t, const std::string& name, const at::Tensor& value) {
  const at::Tensor v = value.detach().to(at::kCPU).contiguous();
  t->set_name(name);
  for (int64_t d : v.sizes()) t->add_dims(d);
  switch (v.scalar_type()) {
    case at::kFloat: t->set_data_type(onnx::TensorProto::FLOAT); break;
    case at::kChar: t->set_data_type(onnx::TensorProto::INT8); break;
    case at::kByte: t->set_data_type(onnx::TensorProto::UINT8); break;
    case at::kInt: t->set_data_type(onnx::TensorProto::INT32); break;
    case at::kLong: t->set_data_type(onnx::TensorProto::INT64); break;
    default: throw std::runtime_error(absl::StrCat("tensor ", name, " has a dtype ONNX export does not write"));
  }
  t->set_raw_data(std::string(static_cast<const char*>(v.data_ptr()), v.nbytes()));
}

onnx::AttributeProto* Attr(onnx::NodeProto* n, const std::string& name) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  return a;
}

void IntsAttr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  onnx::AttributeProto* a = Attr(n, name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void IntAttr(onnx::NodeProto* n, const std::string& name, int64_t v) {
  onnx::AttributeProto* a = Attr(n, name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void StringAttr(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  onnx::AttributeProto* a = Attr(n, name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

void FloatAttr(onnx::NodeProto* n, const std::string& name, float v) {
  onnx::AttributeProto* a = Attr(n, name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

// Writes the IR's body into an ONNX graph.
class Writer {
 public:
  Writer(const Graph& graph, const QuantSim* sim, onnx::GraphProto* out) : graph_(graph), sim_(sim), out_(out) {}

  absl::Status Run() {
    for (int vid : graph_.inputs()) {
      const Value& v = graph_.values[vid];
      if (!v.is_tensor) return absl::InvalidArgumentError(absl::StrCat("ONNX export: input ", v.name, " is not a tensor"));
      AddValueInfo(out_->add_input(), v.name, v);
      ASSIGN_OR_RETURN(mapped_[vid], QuantizeActivation(vid, v.name));
    }
    for (int id : graph_.body.nodes) {
      const Node& n = graph_.nodes[id];
      if (n.removed) continue;
      RETURN_IF_ERROR(WriteNode(n));
    }
    for (int vid : graph_.outputs()) {
      ASSIGN_OR_RETURN(const std::string name, Tensor(vid));
      AddValueInfo(out_->add_output(), name, graph_.values[vid]);
    }
    return absl::OkStatus();
  }

  json activation_encodings = json::object(), param_encodings = json::object();
  // Quantizers written in a form other than a plain 8-bit pair, one line each.
  std::vector<std::string> fallbacks;

 private:
  void AddValueInfo(onnx::ValueInfoProto* info, const std::string& name, const Value& v) {
    info->set_name(name);
    onnx::TypeProto_Tensor* t = info->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    if (v.shape) {
      onnx::TensorShapeProto* shape = t->mutable_shape();
      for (size_t d = 0; d < v.shape->size(); ++d) {
        if (d == 0) {
          shape->add_dim()->set_dim_param("batch");
        } else {
          shape->add_dim()->set_dim_value((*v.shape)[d]);
        }
      }
    }
  }

  onnx::NodeProto* Add(const std::string& op, const std::string& name, const std::vector<std::string>& inputs,
                       const std::vector<std::string>& outputs) {
    onnx::NodeProto* n = out_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    return n;
  }

  std::string Initializer(const std::string& name, const at::Tensor& t) {
    SetTensor(out_->add_initializer(), name, t);
    return name;
  }

  // The ONNX tensor holding IR value `vid`: a node's (dequantized) output, a parameter's
  // initializer (behind its DequantizeLinear when quantized), or a constant tensor.
  absl::StatusOr<std::string> Tensor(int vid) {
    if (auto it = mapped_.find(vid); it != mapped_.end()) return it->second;
    const Value& v = graph_.values[vid];
    if (shape_values_.count(vid)) {
      return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", v.name,
                                                     " is computed from tensor shapes and used as data, which the export does not write"));
    }
    if (!v.constant || !v.constant->isTensor()) {
      return absl::InvalidArgumentError(absl::StrCat("ONNX export: value ", v.name, " is used before it is defined"));
    }
    const at::Tensor t = v.constant->toTensor().to(at::kFloat);
    std::string name = v.is_param ? v.name : absl::StrCat("constant_", vid);
    if (sim_ != nullptr && v.is_param) {
      if (auto q = sim_->param_quantizers().find(vid); q != sim_->param_quantizers().end() && q->second.enabled()) {
        ASSIGN_OR_RETURN(name, QuantizedWeight(v, t, q->second));
        mapped_[vid] = name;
        return name;
      }
    }
    mapped_[vid] = Initializer(name, t);
    return name;
  }

  // The weight's grid values as int8 and a DequantizeLinear that gives back exactly the
  // simulation's quantized weight.
  absl::StatusOr<std::string> QuantizedWeight(const Value& v, const at::Tensor& w, const Quantizer& q) {
    const std::vector<Encoding>& es = q.encodings();
    for (const Encoding& e : es) {
      if (e.num_steps > 255) {
        return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", v.name, " is quantized to ", e.bitwidth,
                                                       " bits; ONNX's int8 holds grids of at most 8 bits"));
      }
    }
    std::vector<float> scales;
    std::vector<int8_t> zero_points;
    json list = json::array();
    for (const Encoding& e : es) {
      scales.push_back(static_cast<float>(e.scale));
      zero_points.push_back(static_cast<int8_t>(e.zero_point() - 128));
      list.push_back(EncodingToJson(e));
    }
    param_encodings[v.name] = std::move(list);
    if (es.front().bitwidth < 8) {
      fallbacks.push_back(absl::StrCat(v.name, ": ", es.front().bitwidth,
                                       "-bit weight grid stored as its int8 values (exact)"));
    }
    // Scales and zero points per channel (shaped to broadcast over the weight), or one each.
    std::vector<int64_t> bshape;
    if (q.axis() >= 0) {
      bshape.assign(w.dim(), 1);
      bshape[q.axis()] = w.size(q.axis());
    }
    const std::vector<int64_t> one_per = q.axis() >= 0 ? std::vector<int64_t>{-1} : std::vector<int64_t>{};
    const at::Tensor scale = at::tensor(scales, at::kFloat).reshape(one_per);
    at::Tensor zp = at::tensor(zero_points, at::kChar).reshape(one_per);
    // Values relative to the zero point; a channel whose values fit int8 as they are is
    // stored with zero point 0 (the same weights), the form int8 kernels run fastest -
    // AIMET's unsigned-symmetric channels (all weights >= 0, e.g. all zero) have
    // offset 0, which would otherwise be zero point -128.
    const at::Tensor centered = at::round(q.Apply(w) / scale.reshape(bshape));
    std::vector<int64_t> others;  // reduced per channel: every dimension but the channel's
    for (int64_t d = 0; q.axis() >= 0 && d < w.dim(); ++d) {
      if (d != q.axis()) others.push_back(d);
    }
    const bool per_value = q.axis() >= 0 && others.empty();
    const at::Tensor lo = per_value ? centered : q.axis() >= 0 ? centered.amin(others) : centered.min();
    const at::Tensor hi = per_value ? centered : q.axis() >= 0 ? centered.amax(others) : centered.max();
    zp = at::where((lo >= -128).logical_and(hi <= 127), at::zeros_like(zp), zp);
    const at::Tensor z_b = zp.to(at::kFloat).reshape(bshape);
    const at::Tensor grid = centered + z_b;
    if (grid.min().item<double>() < -128 || grid.max().item<double>() > 127) {
      return absl::InternalError(absl::StrCat("ONNX export: ", v.name, "'s grid values do not fit int8"));
    }
    const std::string ints = Initializer(v.name + "_quantized", grid.to(at::kChar));
    const std::string s = Initializer(v.name + "_scale", scale), z = Initializer(v.name + "_zero_point", zp);
    onnx::NodeProto* n = Add("DequantizeLinear", v.name + "_dequantize", {ints, s, z}, {v.name});
    if (q.axis() >= 0) IntAttr(n, "axis", q.axis());
    return v.name;
  }

  // Quantize-dequantize after activation `vid` (ONNX tensor `name`) when the sim
  // quantizes it; the name its readers use.
  absl::StatusOr<std::string> QuantizeActivation(int vid, const std::string& name) {
    if (sim_ == nullptr) return name;
    auto it = sim_->activation_quantizers().find(vid);
    if (it == sim_->activation_quantizers().end() || !it->second.enabled() || !it->second.has_encodings()) return name;
    const Encoding& e = it->second.encodings().front();
    if (e.num_steps > 255) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ONNX export: activation ", name, " is quantized to a ", e.bitwidth, "-bit grid of ", e.num_steps + 1,
          " values; opset ", kOnnxOpset, "'s QuantizeLinear holds at most 8 bits, so activations of more "
          "than 8 bits cannot be exported: quantize them to 8 bits or fewer, or export TorchScript"));
    }
    activation_encodings[name] = json::array({EncodingToJson(e)});
    std::string quantized_input = name;
    if (e.num_steps < 255) {
      // A grid smaller than uint8's: clip to its range first, so QuantizeLinear's rounding
      // lands on the grid's values only.
      const float lo = static_cast<float>(e.offset * e.scale), hi = static_cast<float>((e.offset + e.num_steps) * e.scale);
      const std::string l = Initializer(name + "_grid_min", at::tensor(lo).reshape({}));
      const std::string h = Initializer(name + "_grid_max", at::tensor(hi).reshape({}));
      quantized_input = name + "_on_grid";
      Add("Clip", name + "_to_grid", {name, l, h}, {quantized_input});
      fallbacks.push_back(absl::StrCat("activation ", name, ": ", e.bitwidth, "-bit grid of ", e.num_steps + 1,
                                       " values written as Clip to its range + uint8 QuantizeLinear/DequantizeLinear (exact)"));
    }
    return QuantizePair(e, name, quantized_input);
  }

  // QuantizeLinear + DequantizeLinear of tensor `input` onto encoding `e`'s uint8 grid,
  // named after `name`; the dequantized tensor's name.
  std::string QuantizePair(const Encoding& e, const std::string& name, const std::string& input) {
    const std::string s = Initializer(name + "_scale", at::tensor(static_cast<float>(e.scale)).reshape({}));
    // uint8: qopt's grid 0..num_steps with zero point -offset, as it stands.
    const std::string z =
        Initializer(name + "_zero_point", at::tensor(static_cast<uint8_t>(e.zero_point()), at::kByte).reshape({}));
    Add("QuantizeLinear", name + "_quantize", {input, s, z}, {name + "_quantized"});
    Add("DequantizeLinear", name + "_dequantize", {name + "_quantized", s, z}, {name + "_dequantized"});
    return name + "_dequantized";
  }

  // The pieces of a Split whose input sits on an 8-bit activation grid are quantized onto
  // that grid again: exact (each value is already on it), and ONNX Runtime, which moves a
  // DequantizeLinear across reshapes and transposes but not across Split, then sees
  // DequantizeLinear before the layers that read the pieces and runs them as int8
  // kernels (QLinearConv, QLinearConcat) instead of in float.
  void RequantizePieces(int input, std::vector<std::string>& pieces) {
    if (sim_ == nullptr) return;
    const int source = sim_->GridSource(input);
    if (source < 0) return;
    const Quantizer& q = sim_->activation_quantizers().at(source);
    if (!q.enabled() || !q.has_encodings() || q.encodings().front().num_steps != 255) return;
    for (std::string& piece : pieces) {
      activation_encodings[piece] = json::array({EncodingToJson(q.encodings().front())});
      piece = QuantizePair(q.encodings().front(), piece, piece);
    }
  }

  // Constant arguments of an op.
  absl::StatusOr<c10::IValue> Const(const Node& n, size_t i) {
    if (i >= n.inputs.size() || !graph_.values[n.inputs[i]].constant) {
      return absl::InvalidArgumentError(
          absl::StrCat("ONNX export: ", n.name, " (", n.op, "): argument ", i, " is not a constant"));
    }
    return *graph_.values[n.inputs[i]].constant;
  }
  absl::StatusOr<std::vector<int64_t>> Ints(const Node& n, size_t i) {
    ASSIGN_OR_RETURN(const c10::IValue v, Const(n, i));
    if (v.isIntList()) return v.toIntVector();
    if (v.isInt()) return std::vector<int64_t>{v.toInt()};
    return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op, "): argument ", i, " is not integers"));
  }
  // One integer (or a list of exactly one).
  absl::StatusOr<int64_t> Int(const Node& n, size_t i) {
    ASSIGN_OR_RETURN(const std::vector<int64_t> v, Ints(n, i));
    if (v.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op, "): argument ", i, " is not one integer"));
    }
    return v[0];
  }
  absl::StatusOr<double> Number(const Node& n, size_t i) {
    ASSIGN_OR_RETURN(const c10::IValue v, Const(n, i));
    if (v.isDouble()) return v.toDouble();
    if (v.isInt()) return static_cast<double>(v.toInt());
    return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op, "): argument ", i, " is not a number"));
  }
  bool IsNone(const Node& n, size_t i) const {
    return i >= n.inputs.size() || (graph_.values[n.inputs[i]].constant && graph_.values[n.inputs[i]].constant->isNone());
  }
  // A tensor operand, or a scalar constant written as a 0-d initializer.
  absl::StatusOr<std::string> Operand(const Node& n, size_t i) {
    const Value& v = graph_.values[n.inputs[i]];
    if (v.constant && !v.constant->isTensor()) {
      ASSIGN_OR_RETURN(const double x, Number(n, i));
      return Initializer(absl::StrCat(n.name, "_operand", i), at::tensor(static_cast<float>(x)).reshape({}));
    }
    return Tensor(n.inputs[i]);
  }

  absl::StatusOr<std::vector<int64_t>> Shape(const Node& n, int vid) const {
    const Value& v = graph_.values[vid];
    if (!v.shape) return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op, "): the shape of ", v.name, " is unknown"));
    return *v.shape;
  }
  absl::StatusOr<int64_t> Axis(const Node& n, int64_t d, size_t rank) const {
    const int64_t r = static_cast<int64_t>(rank);
    if (d < -r || d >= r) return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op, "): dimension ", d, " of a rank-", r, " tensor"));
    return d < 0 ? d + r : d;
  }
  absl::StatusOr<const std::vector<std::string>*> List(const Node& n, size_t i) const {
    auto it = lists_.find(n.inputs[i]);
    if (it == lists_.end()) return Unmapped(n, "a tensor list not built by a list or a split");
    return &it->second;
  }
  // Ops on tensor sizes (x.size(1) // groups): their results only shape a later view, so
  // they are not written; that view takes the inferred shape instead.
  bool IsShapeArithmetic(const Node& n) const {
    static const std::set<std::string> kSizes = {"aten::size", "aten::numel", "aten::dim"};
    static const std::set<std::string> kArithmetic = {"prim::NumToTensor", "aten::Int", "aten::floor_divide", "aten::div",
                                                      "aten::mul", "aten::add", "aten::sub", "prim::ListConstruct",
                                                      "aten::ScalarImplicit", "aten::floordiv"};
    if (kSizes.count(n.op)) return true;
    if (!kArithmetic.count(n.op)) return false;
    bool any = false;
    for (int vid : n.inputs) {
      const Value& v = graph_.values[vid];
      if (shape_values_.count(vid)) {
        any = true;
      } else if (!v.constant || (v.constant->isTensor() && v.constant->toTensor().dim() > 0)) {
        return false;
      }
    }
    return any;
  }

  static std::vector<int64_t> Pads(const std::vector<int64_t>& p, size_t dims) {
    std::vector<int64_t> pads(2 * dims, 0);
    for (size_t d = 0; d < dims; ++d) pads[d] = pads[d + dims] = p.size() == 1 ? p[0] : p[d];
    return pads;
  }
  static std::vector<int64_t> PerDim(const std::vector<int64_t>& v, size_t dims) {
    return v.size() == 1 ? std::vector<int64_t>(dims, v[0]) : v;
  }

  absl::Status WriteNode(const Node& n) {
    if (!n.blocks.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op,
                                                     ") is control flow, which the ONNX export does not write"));
    }
    const std::string out = n.name;
    const std::string& op = n.op;
    auto in = [&](size_t i) { return Tensor(n.inputs[i]); };
    if (IsShapeArithmetic(n)) {
      shape_values_.insert(n.outputs.begin(), n.outputs.end());
      return absl::OkStatus();
    }
    if (op == "prim::ListConstruct") {
      std::vector<std::string> items;
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (!graph_.values[n.inputs[i]].is_tensor) return Unmapped(n, "a list of values computed at run time");
        ASSIGN_OR_RETURN(items.emplace_back(), in(i));
      }
      lists_[n.outputs[0]] = std::move(items);
      return absl::OkStatus();
    }
    if (op == "prim::ListUnpack") {
      ASSIGN_OR_RETURN(const std::vector<std::string>* items, List(n, 0));
      if (items->size() != n.outputs.size()) return Unmapped(n, "unpacking a list of another length");
      for (size_t k = 0; k < n.outputs.size(); ++k) {
        ASSIGN_OR_RETURN(mapped_[n.outputs[k]], QuantizeActivation(n.outputs[k], (*items)[k]));
      }
      return absl::OkStatus();
    }
    if (op == "aten::chunk" || op == "aten::split" || op == "aten::split_with_sizes") {
      // A list of pieces along one dimension: one Split node, one ONNX tensor per piece.
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Shape(n, n.inputs[0]));
      ASSIGN_OR_RETURN(const std::vector<int64_t> arg, Ints(n, 1));
      ASSIGN_OR_RETURN(const int64_t dim_arg, Int(n, 2));
      ASSIGN_OR_RETURN(const int64_t dim, Axis(n, dim_arg, shape.size()));
      std::vector<int64_t> sizes;
      if (op == "aten::split_with_sizes" || (op == "aten::split" && graph_.values[n.inputs[1]].constant->isIntList())) {
        sizes = arg;
      } else {
        ASSIGN_OR_RETURN(const int64_t count, Int(n, 1));
        if (count <= 0) return Unmapped(n, "pieces of size 0");
        const int64_t each = op == "aten::chunk" ? (shape[dim] + count - 1) / count : count;
        if (each <= 0) return Unmapped(n, "pieces of size 0");
        for (int64_t left = shape[dim]; left > 0; left -= each) sizes.push_back(std::min(each, left));
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      std::vector<std::string> pieces;
      for (size_t k = 0; k < sizes.size(); ++k) pieces.push_back(absl::StrCat(n.name, ".", k));
      const std::string split = Initializer(n.name + "_sizes", at::tensor(sizes, at::kLong));
      IntAttr(Add("Split", n.name, {x, split}, pieces), "axis", dim);
      RequantizePieces(n.inputs[0], pieces);
      lists_[n.outputs[0]] = std::move(pieces);
      return absl::OkStatus();
    }
    if (op == "aten::_convolution" || op == "aten::conv1d" || op == "aten::conv2d" || op == "aten::conv3d") {
      const bool full = op == "aten::_convolution";
      bool transposed = false;
      if (full) {
        ASSIGN_OR_RETURN(const c10::IValue t, Const(n, 6));
        transposed = t.toBool();
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      ASSIGN_OR_RETURN(const std::string w, in(1));
      std::vector<std::string> inputs = {x, w};
      if (!IsNone(n, 2)) {
        ASSIGN_OR_RETURN(const std::string b, in(2));
        inputs.push_back(b);
      }
      const size_t dims = graph_.values[n.inputs[1]].constant->toTensor().dim() - 2;
      ASSIGN_OR_RETURN(const std::vector<int64_t> stride, Ints(n, 3));
      ASSIGN_OR_RETURN(const std::vector<int64_t> padding, Ints(n, 4));
      ASSIGN_OR_RETURN(const std::vector<int64_t> dilation, Ints(n, 5));
      ASSIGN_OR_RETURN(const int64_t groups, Int(n, full ? 8 : 6));
      onnx::NodeProto* c = Add(transposed ? "ConvTranspose" : "Conv", n.name, inputs, {out});
      if (transposed) {
        ASSIGN_OR_RETURN(const std::vector<int64_t> output_padding, Ints(n, 7));
        IntsAttr(c, "output_padding", PerDim(output_padding, dims));
      }
      IntsAttr(c, "strides", PerDim(stride, dims));
      IntsAttr(c, "pads", Pads(padding, dims));
      IntsAttr(c, "dilations", PerDim(dilation, dims));
      IntAttr(c, "group", groups);
    } else if (op == "aten::linear") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Shape(n, n.inputs[0]));
      ASSIGN_OR_RETURN(const std::string a, in(0));
      ASSIGN_OR_RETURN(const std::string w, in(1));
      if (shape.size() == 2) {
        std::vector<std::string> inputs = {a, w};
        if (!IsNone(n, 2)) {
          ASSIGN_OR_RETURN(const std::string b, in(2));
          inputs.push_back(b);
        }
        IntAttr(Add("Gemm", n.name, inputs, {out}), "transB", 1);
      } else {
        // Tokens ([batch, tokens, features]): MatMul with the transposed weight, then the bias.
        IntsAttr(Add("Transpose", n.name + "_weight_t", {w}, {n.name + "_weight_t"}), "perm", {1, 0});
        if (IsNone(n, 2)) {
          Add("MatMul", n.name, {a, n.name + "_weight_t"}, {out});
        } else {
          ASSIGN_OR_RETURN(const std::string b, in(2));
          Add("MatMul", n.name + "_matmul", {a, n.name + "_weight_t"}, {n.name + "_matmul"});
          Add("Add", n.name, {n.name + "_matmul", b}, {out});
        }
      }
    } else if (op == "aten::relu" || op == "aten::relu_") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      Add("Relu", n.name, {x}, {out});
    } else if (op == "aten::relu6" || op == "aten::relu6_" || op == "aten::hardtanh" || op == "aten::hardtanh_" ||
               op == "aten::clamp" || op == "aten::clamp_") {
      double lo = 0.0, hi = 6.0;
      if (op.find("relu6") == std::string::npos) {
        if (IsNone(n, 1) || IsNone(n, 2)) return Unmapped(n, "a clamp with one bound");
        ASSIGN_OR_RETURN(lo, Number(n, 1));
        ASSIGN_OR_RETURN(hi, Number(n, 2));
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      const std::string l = Initializer(n.name + "_min", at::tensor(static_cast<float>(lo)).reshape({}));
      const std::string h = Initializer(n.name + "_max", at::tensor(static_cast<float>(hi)).reshape({}));
      Add("Clip", n.name, {x, l, h}, {out});
    } else if (op == "aten::add" || op == "aten::add_" || op == "aten::mul" || op == "aten::mul_" ||
               op == "aten::sub" || op == "aten::div") {
      const bool has_alpha = op == "aten::add" || op == "aten::add_" || op == "aten::sub";
      if (has_alpha && n.inputs.size() > 2) {
        ASSIGN_OR_RETURN(const double alpha, Number(n, 2));
        if (alpha != 1.0) return Unmapped(n, "alpha other than 1");
      }
      ASSIGN_OR_RETURN(const std::string a, Operand(n, 0));
      ASSIGN_OR_RETURN(const std::string b, Operand(n, 1));
      const std::string type = op.rfind("aten::add", 0) == 0 ? "Add" : op.rfind("aten::mul", 0) == 0 ? "Mul" : op == "aten::sub" ? "Sub" : "Div";
      Add(type, n.name, {a, b}, {out});
    } else if (op == "aten::max_pool2d" || op == "aten::avg_pool2d") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      ASSIGN_OR_RETURN(const std::vector<int64_t> kernel, Ints(n, 1));
      ASSIGN_OR_RETURN(std::vector<int64_t> stride, Ints(n, 2));
      ASSIGN_OR_RETURN(const std::vector<int64_t> padding, Ints(n, 3));
      if (stride.empty()) stride = kernel;
      const bool max = op == "aten::max_pool2d";
      onnx::NodeProto* p = Add(max ? "MaxPool" : "AveragePool", n.name, {x}, {out});
      IntsAttr(p, "kernel_shape", PerDim(kernel, 2));
      IntsAttr(p, "strides", PerDim(stride, 2));
      IntsAttr(p, "pads", Pads(padding, 2));
      if (max) {
        ASSIGN_OR_RETURN(const std::vector<int64_t> dilation, Ints(n, 4));
        ASSIGN_OR_RETURN(const c10::IValue ceil, Const(n, 5));
        IntsAttr(p, "dilations", PerDim(dilation, 2));
        IntAttr(p, "ceil_mode", ceil.toBool() ? 1 : 0);
      } else {
        ASSIGN_OR_RETURN(const c10::IValue ceil, Const(n, 4));
        ASSIGN_OR_RETURN(const c10::IValue include_pad, Const(n, 5));
        if (!IsNone(n, 6)) return Unmapped(n, "divisor_override");
        IntAttr(p, "ceil_mode", ceil.toBool() ? 1 : 0);
        IntAttr(p, "count_include_pad", include_pad.toBool() ? 1 : 0);
      }
    } else if (op == "aten::adaptive_avg_pool2d") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> size, Ints(n, 1));
      ASSIGN_OR_RETURN(const std::vector<int64_t> from, Shape(n, n.inputs[0]));
      ASSIGN_OR_RETURN(const std::string x, in(0));
      const std::vector<int64_t> to = PerDim(size, 2);
      if (to[0] == 1 && to[1] == 1) {
        Add("GlobalAveragePool", n.name, {x}, {out});
      } else {
        // Windows of equal size when the output size divides the input's: an average pool.
        if (from.size() != 4 || from[2] % to[0] != 0 || from[3] % to[1] != 0) {
          return Unmapped(n, "adaptive average pooling to a size that does not divide the input's");
        }
        const std::vector<int64_t> window = {from[2] / to[0], from[3] / to[1]};
        onnx::NodeProto* p = Add("AveragePool", n.name, {x}, {out});
        IntsAttr(p, "kernel_shape", window);
        IntsAttr(p, "strides", window);
      }
    } else if (op == "aten::flatten") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Shape(n, n.inputs[0]));
      ASSIGN_OR_RETURN(const int64_t start_arg, Int(n, 1));
      ASSIGN_OR_RETURN(const int64_t end_arg, Int(n, 2));
      ASSIGN_OR_RETURN(const int64_t start, Axis(n, start_arg, shape.size()));
      ASSIGN_OR_RETURN(const int64_t end, Axis(n, end_arg, shape.size()));
      ASSIGN_OR_RETURN(const std::string in0, in(0));
      if (start == 1 && end == static_cast<int64_t>(shape.size()) - 1) {
        IntAttr(Add("Flatten", n.name, {in0}, {out}), "axis", 1);
      } else {
        if (start == 0) return Unmapped(n, "flatten that merges the batch dimension");
        ASSIGN_OR_RETURN(std::vector<int64_t> to, Shape(n, n.outputs[0]));
        to[0] = 0;  // the batch, copied from the input
        Add("Reshape", n.name, {in0, Initializer(n.name + "_shape", at::tensor(to, at::kLong))}, {out});
      }
    } else if (op == "aten::view" || op == "aten::reshape") {
      std::vector<int64_t> shape;
      if (shape_values_.count(n.inputs[1])) {
        // A shape computed from the input's (channel shuffle): the inferred output shape,
        // with the batch copied from the input (0) so any batch size runs.
        ASSIGN_OR_RETURN(const std::vector<int64_t> from, Shape(n, n.inputs[0]));
        ASSIGN_OR_RETURN(shape, Shape(n, n.outputs[0]));
        if (shape.empty() || from.empty() || shape[0] != from[0]) return Unmapped(n, "a computed shape that changes the batch dimension");
        shape[0] = 0;
      } else {
        ASSIGN_OR_RETURN(shape, Ints(n, 1));
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      const std::string s = Initializer(n.name + "_shape", at::tensor(shape, at::kLong));
      Add("Reshape", n.name, {x, s}, {out});
    } else if (op == "aten::dropout" || op == "aten::dropout_" || op == "aten::feature_dropout" || op == "aten::contiguous" ||
               op == "aten::detach" || op == "aten::clone") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      Add("Identity", n.name, {x}, {out});
    } else if (op == "aten::batch_norm") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      ASSIGN_OR_RETURN(const std::string w, in(1));
      ASSIGN_OR_RETURN(const std::string b, in(2));
      ASSIGN_OR_RETURN(const std::string mean, in(3));
      ASSIGN_OR_RETURN(const std::string var, in(4));
      ASSIGN_OR_RETURN(const double eps, Number(n, 7));
      FloatAttr(Add("BatchNormalization", n.name, {x, w, b, mean, var}, {out}), "epsilon", static_cast<float>(eps));
    } else if (op == "aten::sigmoid" || op == "aten::sigmoid_" || op == "aten::hardswish" || op == "aten::hardswish_" ||
               op == "aten::tanh") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      const std::string type = op.find("sigmoid") != std::string::npos ? "Sigmoid" : op == "aten::tanh" ? "Tanh" : "HardSwish";
      Add(type, n.name, {x}, {out});
    } else if (op == "aten::hardsigmoid" || op == "aten::hardsigmoid_") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      onnx::NodeProto* h = Add("HardSigmoid", n.name, {x}, {out});
      FloatAttr(h, "alpha", 1.0f / 6.0f);
      FloatAttr(h, "beta", 0.5f);
    } else if (op == "aten::softmax") {
      ASSIGN_OR_RETURN(const int64_t dim, Int(n, 1));
      ASSIGN_OR_RETURN(const std::string x, in(0));
      IntAttr(Add("Softmax", n.name, {x}, {out}), "axis", dim);
    } else if (op == "aten::silu" || op == "aten::silu_") {
      ASSIGN_OR_RETURN(const std::string x, in(0));
      Add("Sigmoid", n.name + "_sigmoid", {x}, {n.name + "_sigmoid"});
      Add("Mul", n.name, {x, n.name + "_sigmoid"}, {out});
    } else if (op == "aten::gelu") {
      // Opset 17 has no Gelu: 0.5 x (1 + erf(x / sqrt 2)), or the tanh approximation.
      std::string approximate = "none";
      if (n.inputs.size() > 1 && graph_.values[n.inputs[1]].constant && graph_.values[n.inputs[1]].constant->isString()) {
        approximate = graph_.values[n.inputs[1]].constant->toStringRef();
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      auto scalar = [&](const std::string& suffix, float v) { return Initializer(n.name + suffix, at::tensor(v).reshape({})); };
      const std::string p = n.name + "_";
      if (approximate == "tanh") {
        Add("Mul", p + "square", {x, x}, {p + "square"});
        Add("Mul", p + "cube", {p + "square", x}, {p + "cube"});
        Add("Mul", p + "cube_scaled", {p + "cube", scalar("_c", 0.044715f)}, {p + "cube_scaled"});
        Add("Add", p + "inner", {x, p + "cube_scaled"}, {p + "inner"});
        Add("Mul", p + "inner_scaled", {p + "inner", scalar("_k", 0.7978845608028654f)}, {p + "inner_scaled"});
        Add("Tanh", p + "tanh", {p + "inner_scaled"}, {p + "erf_or_tanh"});
      } else if (approximate == "none") {
        Add("Div", p + "scaled", {x, scalar("_sqrt2", 1.4142135623730951f)}, {p + "scaled"});
        Add("Erf", p + "erf", {p + "scaled"}, {p + "erf_or_tanh"});
      } else {
        return Unmapped(n, absl::StrCat("approximate='", approximate, "'"));
      }
      Add("Add", p + "one_plus", {p + "erf_or_tanh", scalar("_one", 1.0f)}, {p + "one_plus"});
      Add("Mul", p + "times_x", {x, p + "one_plus"}, {p + "times_x"});
      Add("Mul", n.name, {p + "times_x", scalar("_half", 0.5f)}, {out});
    } else if (op == "aten::layer_norm") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> normalized, Ints(n, 1));
      ASSIGN_OR_RETURN(const double eps, Number(n, 4));
      if (IsNone(n, 2) || IsNone(n, 3)) return Unmapped(n, "layer norm without weight and bias");
      ASSIGN_OR_RETURN(const std::string x, in(0));
      ASSIGN_OR_RETURN(const std::string w, in(2));
      ASSIGN_OR_RETURN(const std::string b, in(3));
      onnx::NodeProto* ln = Add("LayerNormalization", n.name, {x, w, b}, {out});
      IntAttr(ln, "axis", -static_cast<int64_t>(normalized.size()));
      FloatAttr(ln, "epsilon", static_cast<float>(eps));
    } else if (op == "aten::matmul" || op == "aten::bmm") {
      ASSIGN_OR_RETURN(const std::string a, Operand(n, 0));
      ASSIGN_OR_RETURN(const std::string b, Operand(n, 1));
      Add("MatMul", n.name, {a, b}, {out});
    } else if (op == "aten::pixel_shuffle") {
      ASSIGN_OR_RETURN(const int64_t factor, Int(n, 1));
      ASSIGN_OR_RETURN(const std::string x, in(0));
      onnx::NodeProto* d = Add("DepthToSpace", n.name, {x}, {out});
      IntAttr(d, "blocksize", factor);
      StringAttr(d, "mode", "CRD");
    } else if (op == "aten::cat") {
      ASSIGN_OR_RETURN(const std::vector<std::string>* items, List(n, 0));
      ASSIGN_OR_RETURN(const int64_t dim, Int(n, 1));
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Shape(n, n.outputs[0]));
      ASSIGN_OR_RETURN(const int64_t axis, Axis(n, dim, shape.size()));
      IntAttr(Add("Concat", n.name, *items, {out}), "axis", axis);
    } else if (op == "aten::transpose" || op == "aten::permute" || op == "aten::t") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Shape(n, n.inputs[0]));
      std::vector<int64_t> perm(shape.size());
      for (size_t d = 0; d < perm.size(); ++d) perm[d] = static_cast<int64_t>(d);
      if (op == "aten::permute") {
        ASSIGN_OR_RETURN(const std::vector<int64_t> dims, Ints(n, 1));
        if (dims.size() != perm.size()) return Unmapped(n, "a permutation of another rank");
        for (size_t d = 0; d < perm.size(); ++d) {
          ASSIGN_OR_RETURN(perm[d], Axis(n, dims[d], perm.size()));
        }
      } else if (op == "aten::t") {
        if (perm.size() == 2) std::swap(perm[0], perm[1]);
      } else {
        ASSIGN_OR_RETURN(const int64_t d0, Int(n, 1));
        ASSIGN_OR_RETURN(const int64_t d1, Int(n, 2));
        ASSIGN_OR_RETURN(const int64_t a, Axis(n, d0, perm.size()));
        ASSIGN_OR_RETURN(const int64_t b, Axis(n, d1, perm.size()));
        std::swap(perm[a], perm[b]);
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      IntsAttr(Add("Transpose", n.name, {x}, {out}), "perm", perm);
    } else if (op == "aten::mean") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Shape(n, n.inputs[0]));
      ASSIGN_OR_RETURN(const std::vector<int64_t> dims, Ints(n, 1));
      ASSIGN_OR_RETURN(const c10::IValue keepdim, Const(n, 2));
      if (!IsNone(n, 3)) return Unmapped(n, "a dtype argument");
      std::vector<int64_t> axes;
      for (int64_t d : dims) {
        ASSIGN_OR_RETURN(axes.emplace_back(), Axis(n, d, shape.size()));
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      onnx::NodeProto* r = Add("ReduceMean", n.name, {x}, {out});
      IntsAttr(r, "axes", axes);
      IntAttr(r, "keepdims", keepdim.toBool() ? 1 : 0);
    } else if (op == "aten::upsample_nearest2d" || op == "aten::upsample_bilinear2d") {
      // Resize by the ratio of output to input size; PyTorch's nearest is ONNX's
      // asymmetric / floor, its bilinear pytorch_half_pixel (or align_corners).
      const bool nearest = op == "aten::upsample_nearest2d";
      ASSIGN_OR_RETURN(const std::vector<int64_t> from, Shape(n, n.inputs[0]));
      ASSIGN_OR_RETURN(const std::vector<int64_t> to, Shape(n, n.outputs[0]));
      if (from.size() != 4 || to.size() != 4) return Unmapped(n, "an input that is not 4-D");
      std::vector<float> scales = {1.0f, 1.0f};
      const size_t factors_arg = nearest ? 2 : 3;
      if (n.inputs.size() == factors_arg + 1 && !IsNone(n, factors_arg) && graph_.values[n.inputs[factors_arg]].constant->isDoubleList()) {
        for (double f : graph_.values[n.inputs[factors_arg]].constant->toDoubleVector()) scales.push_back(static_cast<float>(f));
      } else {
        for (int d = 2; d < 4; ++d) scales.push_back(static_cast<float>(to[d]) / static_cast<float>(from[d]));
      }
      if (scales.size() != 4) return Unmapped(n, "scale factors that are not one per spatial dimension");
      bool align_corners = false;
      if (!nearest) {
        ASSIGN_OR_RETURN(const c10::IValue a, Const(n, 2));
        align_corners = a.toBool();
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      const std::string roi = Initializer(n.name + "_roi", at::empty({0}, at::kFloat));
      const std::string sc = Initializer(n.name + "_scales", at::tensor(scales, at::kFloat));
      onnx::NodeProto* r = Add("Resize", n.name, {x, roi, sc}, {out});
      StringAttr(r, "mode", nearest ? "nearest" : "linear");
      StringAttr(r, "coordinate_transformation_mode",
                 nearest ? "asymmetric" : align_corners ? "align_corners" : "pytorch_half_pixel");
      if (nearest) StringAttr(r, "nearest_mode", "floor");
    } else {
      return Unmapped(n, "");
    }
    if (n.outputs.size() != 1) return Unmapped(n, "more than one output");
    ASSIGN_OR_RETURN(mapped_[n.outputs[0]], QuantizeActivation(n.outputs[0], out));
    return absl::OkStatus();
  }

  absl::Status Unmapped(const Node& n, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", n.name, " (", n.op, ") has no ONNX mapping",
                                                   what.empty() ? "" : absl::StrCat(" for ", what)));
  }

  const Graph& graph_;
  const QuantSim* sim_;
  onnx::GraphProto* out_;
  std::map<int, std::string> mapped_;
  std::map<int, std::vector<std::string>> lists_;  // tensor lists: the ONNX names of their items
  std::set<int> shape_values_;  // computed from tensor shapes; ONNX gets the shapes instead
};

}  // namespace internal_onnx

absl::StatusOr<OnnxExport> ExportOnnx(const Graph& graph, const QuantSim* sim) {
  using namespace internal_onnx;
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("qopt");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("qopt");
  Writer writer(graph, sim, g);
  try {
    RETURN_IF_ERROR(writer.Run());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("ONNX export: ", FirstLine(e.what())));
  }
  OnnxExport result;
  if (!model.SerializeToString(&result.model)) return absl::InternalError("ONNX export: the model does not serialize");
  result.activation_quantizers = static_cast<int>(writer.activation_encodings.size());
  result.weight_quantizers = static_cast<int>(writer.param_encodings.size());
  if (sim != nullptr) {
    result.encodings = EncodingsDocument(*sim, std::move(writer.activation_encodings), std::move(writer.param_encodings)).dump(2);
  }
  result.fallbacks = std::move(writer.fallbacks);
  return result;
}

}  // namespace qopt
