#include "export/onnx_export.h"

#include <cmath>
#include <fstream>
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

  // The weight's grid values as int8 (value - 128) and a DequantizeLinear that gives back
  // exactly the simulation's quantized weight.
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
    const at::Tensor dq = q.Apply(w);
    at::Tensor scale = at::tensor(scales, at::kFloat), zp = at::tensor(std::vector<int8_t>(zero_points.begin(), zero_points.end()), at::kChar);
    std::vector<int64_t> bshape(w.dim(), 1);
    at::Tensor s_b = scale, z_b = zp.to(at::kFloat);
    if (q.axis() >= 0) {
      bshape[q.axis()] = w.size(q.axis());
      s_b = scale.reshape(bshape);
      z_b = z_b.reshape(bshape);
    } else {
      scale = scale.reshape({});
      zp = zp.reshape({});
    }
    const at::Tensor grid = at::round(dq / s_b) + z_b;
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
    if (e.num_steps != 255) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ONNX export: activation ", name, " is quantized to a ", e.bitwidth, "-bit grid of ", e.num_steps + 1,
          " values; QuantizeLinear saturates to int8's 256, so only 8-bit grids of 255 steps export exactly"));
    }
    activation_encodings[name] = json::array({EncodingToJson(e)});
    const std::string s = Initializer(name + "_scale", at::tensor(static_cast<float>(e.scale)).reshape({}));
    const std::string z =
        Initializer(name + "_zero_point", at::tensor(static_cast<int8_t>(e.zero_point() - 128), at::kChar).reshape({}));
    Add("QuantizeLinear", name + "_quantize", {name, s, z}, {name + "_quantized"});
    Add("DequantizeLinear", name + "_dequantize", {name + "_quantized", s, z}, {name + "_dequantized"});
    return name + "_dequantized";
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
    std::string produced = out;  // the ONNX tensor holding the node's output
    const std::string& op = n.op;
    auto in = [&](size_t i) { return Tensor(n.inputs[i]); };
    if (op == "aten::_convolution" || op == "aten::conv1d" || op == "aten::conv2d" || op == "aten::conv3d") {
      const bool full = op == "aten::_convolution";
      if (full) {
        ASSIGN_OR_RETURN(const c10::IValue transposed, Const(n, 6));
        if (transposed.toBool()) return Unmapped(n, "transposed convolution");
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
      ASSIGN_OR_RETURN(const std::vector<int64_t> groups, Ints(n, full ? 8 : 6));
      onnx::NodeProto* c = Add("Conv", n.name, inputs, {out});
      IntsAttr(c, "strides", PerDim(stride, dims));
      IntsAttr(c, "pads", Pads(padding, dims));
      IntsAttr(c, "dilations", PerDim(dilation, dims));
      IntAttr(c, "group", groups[0]);
    } else if (op == "aten::linear") {
      const Value& x = graph_.values[n.inputs[0]];
      if (!x.shape || x.shape->size() != 2) return Unmapped(n, "linear on an input that is not 2-D");
      ASSIGN_OR_RETURN(const std::string a, in(0));
      ASSIGN_OR_RETURN(const std::string w, in(1));
      std::vector<std::string> inputs = {a, w};
      if (!IsNone(n, 2)) {
        ASSIGN_OR_RETURN(const std::string b, in(2));
        inputs.push_back(b);
      }
      IntAttr(Add("Gemm", n.name, inputs, {out}), "transB", 1);
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
      for (int64_t s : size) {
        if (s != 1) return Unmapped(n, "adaptive average pooling to a size other than 1x1");
      }
      ASSIGN_OR_RETURN(const std::string x, in(0));
      Add("GlobalAveragePool", n.name, {x}, {out});
    } else if (op == "aten::flatten") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> start, Ints(n, 1));
      ASSIGN_OR_RETURN(const std::vector<int64_t> end, Ints(n, 2));
      const Value& x = graph_.values[n.inputs[0]];
      const int64_t rank = x.shape ? static_cast<int64_t>(x.shape->size()) : -1;
      if (start[0] != 1 || (end[0] != -1 && end[0] != rank - 1)) return Unmapped(n, "flatten other than from dim 1 to the end");
      ASSIGN_OR_RETURN(const std::string in0, in(0));
      IntAttr(Add("Flatten", n.name, {in0}, {out}), "axis", 1);
    } else if (op == "aten::view" || op == "aten::reshape") {
      ASSIGN_OR_RETURN(const std::vector<int64_t> shape, Ints(n, 1));
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
      ASSIGN_OR_RETURN(const std::vector<int64_t> dim, Ints(n, 1));
      ASSIGN_OR_RETURN(const std::string x, in(0));
      IntAttr(Add("Softmax", n.name, {x}, {out}), "axis", dim[0]);
    } else {
      return Unmapped(n, "");
    }
    if (n.outputs.size() != 1) return Unmapped(n, "more than one output");
    ASSIGN_OR_RETURN(mapped_[n.outputs[0]], QuantizeActivation(n.outputs[0], produced));
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
};

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".partial";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace internal_onnx

absl::Status ExportOnnx(const Graph& graph, const QuantSim* sim, const std::string& path, const std::string& encodings_path) {
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
  std::string bytes;
  if (!model.SerializeToString(&bytes)) return absl::InternalError("ONNX export: the model does not serialize");
  std::string encodings;
  if (sim != nullptr && !encodings_path.empty()) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(EncodingsToJson(*sim));
    j["activation_encodings"] = writer.activation_encodings;
    j["param_encodings"] = writer.param_encodings;
    encodings = j.dump(2);
  }
  // Both files or neither.
  RETURN_IF_ERROR(WriteFile(path, bytes));
  if (!encodings.empty()) {
    const absl::Status written = WriteFile(encodings_path, encodings);
    if (!written.ok()) std::remove(path.c_str());
    RETURN_IF_ERROR(written);
  }
  return absl::OkStatus();
}

}  // namespace qopt
