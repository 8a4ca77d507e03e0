// Quantization simulation over a qopt Graph: quantizers on parameters and activations,
// placed by a QuantSimConfig, calibrated from batches, applied in the forward pass.
#pragma once

#include <map>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/ivalue.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/interpreter.h"
#include "quant/integer_kernels.h"
#include "quant/quantizer.h"
#include "quant/quantsim_config.h"

namespace qopt {

struct QuantSimOptions {
  int param_bitwidth = 8;
  int activation_bitwidth = 8;
  /// Per-channel weight encodings, unless the config says otherwise for an op type.
  bool per_channel = false;
  CalibrationMethod param_method = CalibrationMethod::kMinMax;
  CalibrationMethod activation_method = CalibrationMethod::kSqnr;
  double percentile = 99.99;
  QuantSimConfig config = QuantSimConfig::Default();
  /// Layers left in floating point (no parameter or output quantizers).
  std::vector<std::string> exclude_layers;
  /// How the simulated pass computes quantized layers.
  enum class Kernels {
    /// Float arithmetic on quantize-dequantized values (AIMET's simulation).
    kFakeQuant,
    /// Conv, add and global average pool between 8-bit grids as ONNX Runtime's CPU int8
    /// kernels compute them (quant/integer_kernels.h); every other op as kFakeQuant.
    kOnnxRuntimeInt8,
  };
  Kernels kernels = Kernels::kFakeQuant;

  absl::Status Validate() const;
};

/// Ops that only move or reshape data (reshape, permute, slicing, max-pool, pixel
/// shuffle, nearest upsampling, ...): their outputs sit on their input's grid, so they get
/// no quantizer of their own unless a config asks for one by op type or layer.
bool IsDataMovement(const Node& n);

/// A change to one quantizer; fields left unset keep their value.
struct QuantizerChange {
  std::optional<int> bitwidth;       // 2..16
  std::optional<bool> symmetric;
  std::optional<bool> per_channel;   // conv / linear weights only
  std::optional<bool> enabled;
};

/// Where an activation quantizer sits, for export: the output `index` of layer
/// `layer`, or its input `index` for the model's inputs.
struct ActivationSite {
  std::string layer;
  bool is_input = false;
  int index = 0;
};

class QuantSim : public ValueObserver {
 public:
  /// Places quantizers and computes parameter encodings. `graph` must outlive the sim
  /// and keep its parameters while the sim is used.
  static absl::StatusOr<std::unique_ptr<QuantSim>> Create(const Graph& graph,
                                                         QuantSimOptions options);

  /// Calibration: statistics of every activation quantizer over the batches, taken from
  /// the floating-point model. Frozen quantizers keep their encodings.
  absl::Status ObserveBatch(const std::vector<c10::IValue>& inputs);
  /// Encodings from the statistics. Quantizers whose value turned out not to be floating
  /// point (shapes were not inferred before placement) are removed; those inside a branch
  /// calibration never took are switched off, having nothing to go on.
  absl::Status FinishCalibration();

  /// The simulated (quantize-dequantize) forward pass. `tap`, when given, sees every
  /// parameter and value after the sim has (e.g. a layer's quantized input); a tap that
  /// says it has Finished stops the pass there (the result is then an undefined value).
  absl::StatusOr<c10::IValue> Run(const std::vector<c10::IValue>& inputs, ValueObserver* tap = nullptr);
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input);
  /// The floating-point model: no quantizers, and the original values of parameters that
  /// techniques replaced (see SetFloatReference).
  absl::StatusOr<c10::IValue> RunFloat(const std::vector<c10::IValue>& inputs, ValueObserver* tap = nullptr);
  absl::StatusOr<at::Tensor> ForwardFloat(const at::Tensor& input);

  /// Records the floating-point value of a parameter a technique rewrote in the graph
  /// (AdaRound's rounded weights, corrected biases), so RunFloat and calibration still
  /// see the original model. The first reference given for a value is kept.
  void SetFloatReference(int value_id, at::Tensor original);
  const std::map<int, at::Tensor>& float_references() const { return float_refs_; }
  /// Turns every activation quantizer on or off (e.g. weight-only AdaRound); only those
  /// with encodings are turned on.
  void SetActivationQuantization(bool enabled);

  const Graph& graph() const { return graph_; }
  const QuantSimOptions& options() const { return options_; }
  /// Parameter quantizers by parameter value id.
  const std::map<int, Quantizer>& param_quantizers() const { return param_quantizers_; }
  /// The conv / linear layers whose weight this sim quantizes, in forward order (what
  /// AdaRound and bias correction work on); with_transposed adds transposed convolutions.
  std::vector<const Node*> QuantizedWeightLayers(bool with_transposed = false) const;
  /// Activation quantizers by value id, and where each sits.
  const std::map<int, Quantizer>& activation_quantizers() const { return act_quantizers_; }
  const std::map<int, ActivationSite>& activation_sites() const { return act_sites_; }
  /// Names of the layers excluded from quantization.
  const std::vector<std::string>& excluded_layers() const { return options_.exclude_layers; }

  /// Replaces encodings (e.g. loaded from an encodings file); `freeze` keeps them through
  /// calibration. Refreshes the cached quantized parameters.
  absl::Status SetParamEncodings(int value_id, std::vector<Encoding> e, bool freeze);
  absl::Status SetActivationEncodings(int value_id, std::vector<Encoding> e, bool freeze);
  /// The graph's tensor of parameter `value_id` changed (training wrote a new one):
  /// recomputes its encodings from it, unless they are frozen, and its quantized copy.
  /// NotFound when the parameter has no quantizer.
  absl::Status UpdateParam(int value_id);
  /// Changes the quantizer of value `value_id` (a parameter or an activation), as
  /// sensitivity analysis, mixed precision and QAT do, and recomputes its encodings when
  /// its grid changed: a parameter's from its tensor, an activation's from the statistics
  /// calibration collected, without running the model again. Frozen encodings are
  /// recomputed too. Fails with NotFound when the value has no quantizer, InvalidArgument
  /// for a bitwidth outside 2..16 or per-channel encodings on anything but a layer's
  /// weight, FailedPrecondition when an activation has no statistics (encodings loaded
  /// from a file, or not calibrated yet).
  absl::Status ChangeQuantizer(int value_id, const QuantizerChange& change);
  /// Adds the time of every later run (calibration, simulated and floating-point passes)
  /// per op to `profile`; nullptr stops. The profile must outlive its use.
  void set_profile(RunProfile* profile) { profile_ = profile; }

  /// The nodes the simulated pass computes as integer kernels (Kernels::kOnnxRuntimeInt8),
  /// by node id, with the current encodings; empty with kFakeQuant. A node qualifies where
  /// ONNX Runtime fuses the exported QDQ graph into an int8 kernel: its inputs on 8-bit
  /// per-tensor grids (directly or through max-pooling and reshapes), its weight
  /// quantized to at most 8 bits and its bias not quantized, and its output quantized to an
  /// 8-bit grid, directly or after a ReLU or clip ONNX Runtime folds into that grid.
  std::map<int, IntegerKernel> IntegerKernels() const;
  /// With Kernels::kOnnxRuntimeInt8, the 8-bit grid on which activation `value_id` is
  /// quantized as ONNX's QuantizeLinear does (x / scale; ONNX Runtime's QuantizeLinear,
  /// QLinearConcat and lookup tables), instead of the fake-quantize op's x * (1 / scale);
  /// nullopt for other quantizers and with kFakeQuant.
  std::optional<UInt8Grid> QuantizeLinearGrid(int value_id) const;

  /// The value whose activation quantizer puts `value_id` on its grid: itself, or the
  /// value it was moved from by ops that keep values (reshapes, transposes, max-pooling,
  /// splitting, ...); -1 when there is none.
  int GridSource(int value_id) const;

  /// Value id of the activation at `site`, or -1.
  int FindActivation(const std::string& layer, bool is_input, int index) const;

  // ValueObserver
  void OnParam(const Value& param, at::Tensor& tensor) override;
  void OnInputs(const Node& node, std::vector<c10::IValue>& inputs) override;
  void OnValue(const Value& value, c10::IValue& v) override;
  bool RetainsValues() const override { return false; }
  bool Bypasses(const Node& node) const override;

 private:
  QuantSim(const Graph& graph, QuantSimOptions options);
  absl::Status Place();
  absl::Status CheckSupportedKernels() const;
  absl::Status RefreshParam(int value_id);
  /// The interpreter over `inputs` with the sim as observer, and `tap` after it if given.
  absl::StatusOr<c10::IValue> Interpret(const std::vector<c10::IValue>& inputs, ValueObserver* tap);
  // Integer kernels: the 8-bit grid of an activation, or of a value that only moves one;
  // the value whose grid a node's kernel output takes (-1: none); the node's kernel.
  std::optional<UInt8Grid> ActivationGrid(int value_id) const;
  std::optional<UInt8Grid> InputGrid(int value_id) const;
  int KernelOutput(const Node& n) const;
  std::optional<IntegerKernel> PlanKernel(const Node& n) const;
  /// Calibration: the bounds of a ReLU or clip (bounds shared by every channel) whose
  /// float CPU input can be clamped as its output's statistics are collected, one pass
  /// instead of two; nullopt when the node runs as usual.
  std::optional<std::pair<double, double>> FusedClip(const Node& node, const c10::IValue& input) const;

  enum class Mode { kFloat, kCalibrate, kSimulate };
  const Graph& graph_;
  QuantSimOptions options_;
  Interpreter interpreter_;
  std::map<int, Quantizer> param_quantizers_;
  std::map<int, Quantizer> act_quantizers_;
  std::map<int, ActivationSite> act_sites_;
  std::map<int, at::Tensor> quantized_params_;
  std::map<int, at::Tensor> float_refs_;
  std::set<int> non_float_;  // activations calibration saw as integer or bool tensors
  Mode mode_ = Mode::kSimulate;
  std::map<int, IntegerKernel> kernels_;       // this simulated pass's, by node id
  std::map<int, UInt8Grid> quantize_linear_;   // this pass's QuantizeLinearGrid, by value id
  std::map<int, int64_t> pool_sizes_;          // elements per window of a pool kernel's input, this pass
  mutable std::map<int, at::Tensor> integer_weights_;  // by weight value id, until it changes
  RunProfile* profile_ = nullptr;
  // Calibration: the node whose inputs OnInputs saw last, if FusedClip took it (Bypasses
  // then skips it and OnValue clamps and observes its output), and its bounds.
  int fused_clip_ = -1;
  std::pair<double, double> fused_bounds_;
};

}  // namespace qopt
