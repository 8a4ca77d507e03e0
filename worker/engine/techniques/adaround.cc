#include "techniques/adaround.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "passes/pass_util.h"
#include "techniques/adaround_kernel.h"
#include "techniques/adaround_rounding.h"
#include "status.h"

namespace qopt {
namespace internal_adaround {

constexpr double kZeta = adaround_kernel::kZeta;
constexpr double kGamma = adaround_kernel::kGamma;

std::vector<int64_t> IntList(const Graph& g, const Node& n, size_t slot) {
  if (slot >= n.inputs.size()) return {};
  const auto& c = g.values[n.inputs[slot]].constant;
  if (!c || !c->isIntList()) return {};
  return c->toIntVector();
}

// Room for the layer inputs or targets of every calibration sample: in memory or, past
// the memory budget (`spill`), in an unlinked temporary file mapped into memory (the
// kernel pages it).
absl::StatusOr<at::Tensor> SampleCache(const std::vector<int64_t>& shape, bool spill) {
  if (!spill) return at::empty(shape, at::kFloat);
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  const char* tmp = std::getenv("TMPDIR");
  std::string path = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/qopt-adaround-XXXXXX");
  const int fd = mkstemp(path.data());
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create a spill file in ", path));
  unlink(path.c_str());
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("cannot size a ", bytes, "-byte spill file"));
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return absl::ResourceExhaustedError("cannot map the spill file");
  return at::from_blob(p, shape, [bytes](void* q) { munmap(q, bytes); }, at::kFloat);
}

// Per-channel scale / zero point shaped to broadcast over a weight along the quantizer's
// axis (0, or 1 for a transposed convolution), or scalars.
std::pair<at::Tensor, at::Tensor> GridOf(const Quantizer& q, const at::Tensor& w) {
  std::vector<double> scale, zp;
  for (const Encoding& e : q.encodings()) {
    scale.push_back(e.scale);
    zp.push_back(static_cast<double>(e.zero_point()));
  }
  std::vector<int64_t> shape(w.dim(), 1);
  if (q.axis() >= 0) shape[q.axis()] = static_cast<int64_t>(scale.size());
  auto t = [&](const std::vector<double>& v) {
    return at::tensor(v, at::kDouble)
        .reshape(q.axis() >= 0 ? shape : std::vector<int64_t>{})
        .to(w.device(), at::kFloat);
  };
  return {t(scale), t(zp)};
}

// The layer's op with its arguments read once: forward, the weight gradient, and the
// output's channel dimension (1 for convolutions, the last for linear layers).
struct LayerOp {
  bool linear = false, transposed = false;
  std::vector<int64_t> stride, padding, dilation, output_padding;
  int64_t groups = 1;

  static absl::StatusOr<LayerOp> Of(const Graph& graph, const Node& layer) {
    LayerOp op;
    if (layer.kind == OpKind::kLinear) {
      op.linear = true;
      return op;
    }
    if (layer.kind != OpKind::kConv && layer.kind != OpKind::kConvTranspose) {
      return absl::InvalidArgumentError(absl::StrCat(layer.name, " is not a conv, transposed conv or linear layer"));
    }
    // aten::_convolution (input, weight, bias, stride, padding, dilation, transposed,
    // output_padding, groups); aten::convNd (..., stride, padding, dilation, groups);
    // aten::conv_transposeNd (..., stride, padding, output_padding, groups, dilation).
    op.transposed = layer.kind == OpKind::kConvTranspose;
    const bool full = layer.op == "aten::_convolution";
    op.stride = IntList(graph, layer, 3);
    op.padding = IntList(graph, layer, 4);
    op.dilation = IntList(graph, layer, op.transposed && !full ? 7 : 5);
    if (op.transposed) {
      op.output_padding = IntList(graph, layer, full ? 7 : 5);
    } else {
      op.output_padding.assign(op.stride.size(), 0);
    }
    const std::optional<int64_t> groups = ConvGroups(graph, layer);
    if (op.stride.empty() || op.padding.empty() || op.dilation.empty() || op.output_padding.empty() || !groups) {
      return absl::UnimplementedError(absl::StrCat(layer.name, ": unsupported convolution arguments"));
    }
    op.groups = *groups;
    return op;
  }

  int64_t ChannelDim(const at::Tensor& out) const { return linear ? out.dim() - 1 : 1; }
  std::vector<int64_t> Zeros() const { return std::vector<int64_t>(stride.size(), 0); }

  // A linear layer runs as a 1×1 convolution over its rows: the same product, but ATen
  // sends convolutions to oneDNN and linear layers to the CPU build's BLAS, which is
  // several times slower here (8× on a ViT block's shapes).
  static at::Tensor Rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1), 1, 1}); }

  at::Tensor Forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const {
    const c10::optional<at::Tensor> b = bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt;
    if (linear) {
      std::vector<int64_t> shape = x.sizes().vec();
      shape.back() = w.size(0);
      return at::convolution(Rows(x), w.view({w.size(0), w.size(1), 1, 1}), b, {1, 1}, {0, 0}, {1, 1},
                             /*transposed=*/false, {0, 0}, 1)
          .reshape(shape);
    }
    if (transposed) {
      // A transposed convolution is the input gradient of the plain one with the same
      // weight; ATen's direct transposed kernels are several times slower here.
      std::vector<int64_t> shape = {x.size(0), w.size(1) * groups};
      for (size_t d = 0; d < stride.size(); ++d) {
        shape.push_back((x.size(2 + d) - 1) * stride[d] - 2 * padding[d] + dilation[d] * (w.size(2 + d) - 1) +
                        output_padding[d] + 1);
      }
      at::Tensor out = std::get<0>(at::convolution_backward(x, at::empty(shape, x.options()), w, c10::nullopt, stride,
                                                            padding, dilation, /*transposed=*/false, Zeros(),
                                                            groups, {true, false, false}));
      if (b) {
        std::vector<int64_t> per_channel(out.dim(), 1);
        per_channel[1] = -1;
        out.add_(b->view(per_channel));
      }
      return out;
    }
    return at::convolution(x, w, b, stride, padding, dilation, /*transposed=*/false, output_padding, groups);
  }

  at::Tensor WeightGrad(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w) const {
    if (linear) {
      const at::Tensor w4 = w.view({w.size(0), w.size(1), 1, 1});
      return std::get<1>(at::convolution_backward(Rows(grad_out), Rows(x), w4, c10::nullopt, {1, 1}, {0, 0}, {1, 1},
                                                  /*transposed=*/false, {0, 0}, 1, {false, true, false}))
          .view(w.sizes());
    }
    if (transposed) {
      // The same weight gradient as the plain convolution's that maps grad_out back to x.
      return std::get<1>(at::convolution_backward(x, grad_out, w, c10::nullopt, stride, padding, dilation,
                                                  /*transposed=*/false, Zeros(), groups, {false, true, false}));
    }
    return std::get<1>(at::convolution_backward(grad_out, x, w, c10::nullopt, stride, padding, dilation,
                                                /*transposed=*/false, output_padding, groups, {false, true, false}));
  }

  // Reconstruction error as in the loss: squared error summed over output channels,
  // averaged over samples and positions (or tokens).
  at::Tensor Error(const at::Tensor& out, const at::Tensor& target) const {
    return (out - target).pow(2).sum(ChannelDim(out)).mean();
  }

  // d Error / d out.
  at::Tensor ErrorGrad(const at::Tensor& out, const at::Tensor& target) const {
    return (out - target) * (2.0 * out.size(ChannelDim(out)) / static_cast<double>(out.numel()));
  }
};

// The share of rounding variables whose h(V) is clamped at 0 or 1: |V| >= log(11) with
// zeta = 1.1, gamma = -0.1. Their gradient through h is zero from then on.
double HardFraction(const at::Tensor& v) {
  const double edge = std::log((1.0 - kGamma) / (kZeta - 1.0));
  return (v.abs() >= edge).sum().item<double>() / static_cast<double>(std::max<int64_t>(1, v.numel()));
}

// Keeps every other point of a layer's curve (always the first).
void ThinCurve(AdaRoundLayerResult& r) {
  size_t kept = 0;
  for (size_t i = 0; i < r.curve_iterations.size(); i += 2, ++kept) {
    r.curve_iterations[kept] = r.curve_iterations[i];
    r.curve_error[kept] = r.curve_error[i];
  }
  r.curve_iterations.resize(kept);
  r.curve_error.resize(kept);
}

// The per-layer stop rule (AdaRoundLayerResult::Stop::kConverged): checked at the end of
// each window after the warm start, against the previous window.
class ConvergenceCheck {
 public:
  ConvergenceCheck(int schedule, int warm)
      : window_(std::max(AdaRoundLayerResult::kConvergenceWindow, schedule / 20)), warm_(warm), schedule_(schedule) {}

  /// The reconstruction loss of one iteration after the warm start.
  void AddLoss(double loss) {
    loss_sum_ += loss;
    ++losses_;
  }
  /// Whether `done` iterations end a window.
  bool Due(int done) const { return done > warm_ && (done - warm_) % window_ == 0; }

  /// Ends the window: whether the layer has converged (then `why` says how).
  bool Converged(const at::Tensor& v, int done, std::string* why) {
    const at::Tensor decisions = v >= 0;
    const double loss = losses_ > 0 ? loss_sum_ / losses_ : 0.0;
    const double hard = HardFraction(v);
    bool converged = false;
    if (previous_decisions_.defined()) {
      const int64_t changed = (decisions != previous_decisions_).sum().item<int64_t>();
      const double change = std::abs(loss - previous_loss_) / std::max(previous_loss_, 1e-30);
      const bool still = changed == 0 && change <= AdaRoundLayerResult::kConvergedLossChange;
      still_windows_ = still ? still_windows_ + 1 : 0;
      const bool settled = done >= schedule_ && still_windows_ >= AdaRoundLayerResult::kSettledWindows;
      converged = still && (hard >= AdaRoundLayerResult::kConvergedHardFraction || settled);
      if (converged) {
        *why = hard >= AdaRoundLayerResult::kConvergedHardFraction
                   ? absl::StrFormat("converged at %d: %.2f %% of rounding variables at 0 or 1, no decision changed "
                                     "and the loss moved %.1f %% over the last %d iterations",
                                     done, 100.0 * hard, 100.0 * change, window_)
                   : absl::StrFormat("converged at %d: no rounding decision changed over the last %d iterations "
                                     "after annealing (%.2f %% of rounding variables at 0 or 1) and the loss "
                                     "moved %.1f %% over the last %d",
                                     done, still_windows_ * window_, 100.0 * hard, 100.0 * change, window_);
      }
    }
    previous_decisions_ = decisions;
    previous_loss_ = loss;
    loss_sum_ = 0.0;
    losses_ = 0;
    return converged;
  }

 private:
  const int window_, warm_, schedule_;
  at::Tensor previous_decisions_;
  double previous_loss_ = 0.0, loss_sum_ = 0.0;
  int losses_ = 0;
  int still_windows_ = 0;  // consecutive windows without a changed decision, the loss flat
};

}  // namespace internal_adaround

const char* AdaRoundStopName(AdaRoundLayerResult::Stop stop) {
  switch (stop) {
    case AdaRoundLayerResult::Stop::kConverged:
      return "converged";
    case AdaRoundLayerResult::Stop::kCeiling:
      return "ceiling";
    case AdaRoundLayerResult::Stop::kFixedSchedule:
      return "fixed_schedule";
  }
  return "unknown";
}

double AdaRoundProgress::Fraction() const {
  return (layer_index + static_cast<double>(iteration) / std::max(1, num_iterations)) / std::max(1, num_layers);
}

std::string AdaRoundProgress::Describe() const {
  return absl::StrCat(layer, " (", layer_index + 1, "/", num_layers, ") iteration ", iteration, "/", num_iterations,
                      stops_on_convergence ? " (stops once converged)" : "");
}

absl::StatusOr<at::Tensor> LayerForward(const Graph& graph, const Node& layer, const at::Tensor& x,
                                        const at::Tensor& weight, const at::Tensor& bias) {
  ASSIGN_OR_RETURN(const internal_adaround::LayerOp op, internal_adaround::LayerOp::Of(graph, layer));
  return op.Forward(x, weight, bias);
}

absl::StatusOr<at::Tensor> AdaRoundLayer(const Graph& graph, const Node& layer, const at::Tensor& weight,
                                         const at::Tensor& bias, const Quantizer& quantizer,
                                         const at::Tensor& x, const at::Tensor& y,
                                         const AdaRoundOptions& options, int layer_index, int num_layers,
                                         AdaRoundLayerResult* result) {
  using namespace internal_adaround;
  const auto start = std::chrono::steady_clock::now();
  if (!quantizer.has_encodings()) {
    return absl::FailedPreconditionError(absl::StrCat(layer.name, ": weight has no encodings"));
  }
  const int bits = quantizer.encodings().front().bitwidth;
  const int iterations = options.num_iterations > 0 ? options.num_iterations : (bits >= 8 ? 10000 : 15000);
  const bool converge = options.stop_on_convergence;
  // The warm start and annealing run over `schedule` iterations; past it beta stays at
  // beta_end until the layer converges or `iterations` (the ceiling) run out.
  const int schedule =
      converge ? std::min(iterations, options.schedule_iterations > 0 ? options.schedule_iterations
                                                                      : AdaRoundOptions::kDefaultSchedule)
               : iterations;
  const int64_t samples = x.size(0);
  const int64_t batch = std::min<int64_t>(
      options.batch_size > 0 ? options.batch_size : AdaRoundOptions::kDefaultBatchSize, samples);
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  const auto grid = GridOf(quantizer, w);
  const at::Tensor scale = grid.first, zp = grid.second;
  const double n = static_cast<double>(quantizer.encodings().front().num_steps);
  const at::Tensor w_floor = at::floor(w / scale);
  const at::Tensor rest = (w / scale - w_floor).clamp(0.0, 1.0);
  // h(V) starts at the fractional part: V = -log((zeta - gamma) / (rest - gamma) - 1).
  at::Tensor v = (-at::log((kZeta - kGamma) / (rest - kGamma) - 1.0)).contiguous();
  RoundingState rounding(v, w_floor, scale, zp, n);
  auto dequantize = [&](const at::Tensor& up) { return (at::clamp(w_floor + up + zp, 0.0, n) - zp) * scale; };

  at::Generator gen = at::detail::createCPUGenerator(options.seed + static_cast<uint64_t>(layer_index));
  const int warm = static_cast<int>(options.warm_start * schedule);
  // Progress every 1 % of the iterations, and at least every quarter second so that a
  // cancellation is seen promptly however many iterations a layer has.
  const int report_every = std::max(1, iterations / 100);
  constexpr std::chrono::milliseconds kReportInterval{250};
  auto last_report = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const LayerOp op, LayerOp::Of(graph, layer));
  ConvergenceCheck check(schedule, warm);
  // The curve: a point every `curve_every` iterations, thinned to every other one (and the
  // spacing doubled) when a long run would give more than twice kCurvePoints.
  int curve_every = std::max(1, schedule / AdaRoundLayerResult::kCurvePoints);
  AdaRoundLayerResult local;
  AdaRoundLayerResult& r = result ? *result : local;
  r.stop = converge ? AdaRoundLayerResult::Stop::kCeiling : AdaRoundLayerResult::Stop::kFixedSchedule;
  // Gradients by hand (no autograd graph): the layer's weight gradient from ATen's
  // backward kernel, then the chain through the soft weight, h and the regulariser.
  at::NoGradGuard no_grad;
  int it = 0;
  while (it < iterations) {
    // The cached samples may live in host memory (or the spill file) while the layer runs on
    // a GPU: each batch is gathered where the cache is, then moved to the weight.
    const at::Tensor idx =
        at::randint(samples, {batch}, gen, at::TensorOptions().dtype(at::kLong)).to(x.device());
    const at::Tensor xb = x.index_select(0, idx).to(w.device()), yb = y.index_select(0, idx).to(w.device());
    const at::Tensor& wq = rounding.soft_weight();
    const at::Tensor out = op.Forward(xb, wq, bias);
    const bool on_curve = (it + 1) % curve_every == 0 || it == 0;
    if (on_curve || it >= warm) {
      const double error = op.Error(out, yb).item<double>();
      if (on_curve) {
        r.curve_iterations.push_back(it + 1);
        r.curve_error.push_back(error);
        if (r.curve_iterations.size() > 2 * AdaRoundLayerResult::kCurvePoints) {
          ThinCurve(r);
          curve_every *= 2;
        }
      }
      if (it >= warm) check.AddLoss(error);
    }
    const at::Tensor grad_out = op.ErrorGrad(out, yb);
    const at::Tensor grad_w = op.WeightGrad(grad_out, xb, wq).contiguous();
    double beta = 0.0;  // no regulariser during the warm start
    if (it >= warm) {
      const double progress = static_cast<double>(it - warm) / std::max(1, schedule - warm);
      beta = options.beta_end + (options.beta_start - options.beta_end) * std::max(0.0, 1.0 - progress);
    }
    rounding.Step(grad_w, beta, it + 1, options.reg_param, options.learning_rate);
    ++it;
    // A fixed schedule checks the rule too, to report where it would have stopped.
    std::string why;
    const bool converged = r.converged_at == 0 && check.Due(it) && check.Converged(rounding.v(), it, &why);
    if (converged) r.converged_at = it;
    if (options.on_progress &&
        (it % report_every == 0 || it == iterations || (converged && converge) ||
         std::chrono::steady_clock::now() - last_report >= kReportInterval)) {
      last_report = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(
          options.on_progress(AdaRoundProgress{layer_index, num_layers, layer.name, it, iterations, converge}));
    }
    if (converged && converge) {
      r.stop = AdaRoundLayerResult::Stop::kConverged;
      r.stop_reason = why;
      break;
    }
  }
  r.hard_fraction = HardFraction(rounding.v());
  if (r.stop != AdaRoundLayerResult::Stop::kConverged) {
    r.stop_reason = absl::StrFormat(
        "%s after %d iterations with %.2f %% of rounding variables at 0 or 1%s",
        r.stop == AdaRoundLayerResult::Stop::kCeiling ? "ceiling reached" : "fixed schedule", it,
        100.0 * r.hard_fraction,
        r.converged_at > 0 ? absl::StrCat("; the stop rule held first at ", r.converged_at) : "");
  }
  const at::Tensor up = (rounding.v() >= 0).to(at::kFloat);
  const at::Tensor learned = dequantize(up);
  if (result) {
    const at::Tensor nearest_up = (at::round(w / scale) - w_floor).clamp(0.0, 1.0);
    const at::Tensor nearest = dequantize(nearest_up);
    result->layer = layer.name;
    result->weights = w.numel();
    result->iterations = it;
    result->max_iterations = iterations;
    result->flipped = (up != nearest_up).sum().item<int64_t>();
    // Errors over (at most) 1024 samples, in chunks.
    double err_nearest = 0, err_ada = 0;
    const int64_t count = std::min<int64_t>(samples, 1024);
    for (int64_t b0 = 0; b0 < count; b0 += 128) {
      const int64_t len = std::min<int64_t>(128, count - b0);
      const at::Tensor xb = x.narrow(0, b0, len).to(w.device()), yb = y.narrow(0, b0, len).to(w.device());
      err_nearest += op.Error(op.Forward(xb, nearest, bias), yb).item<double>() * static_cast<double>(len);
      err_ada += op.Error(op.Forward(xb, learned, bias), yb).item<double>() * static_cast<double>(len);
    }
    result->nearest_error = err_nearest / static_cast<double>(count);
    result->adaround_error = err_ada / static_cast<double>(count);
    result->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return learned.to(weight.scalar_type());
}

absl::StatusOr<std::vector<AdaRoundLayerResult>> ApplyAdaRound(Graph& graph, QuantSim& sim,
                                                               const std::vector<at::Tensor>& batches,
                                                               const AdaRoundOptions& options) {
  using namespace internal_adaround;
  if (batches.empty()) return absl::InvalidArgumentError("adaround needs calibration data");
  // The layers: conv / linear with a quantized weight, in forward order.
  ASSIGN_OR_RETURN(const std::set<std::string> skip, graph.LayerNames(options.skip_layers, "adaround.skip_layers"));
  std::vector<int> layers;
  for (const Node* n : sim.QuantizedWeightLayers(/*with_transposed=*/true)) {
    if (!skip.count(n->name)) layers.push_back(n->id);
  }
  int64_t samples = 0;
  for (const at::Tensor& b : batches) samples += b.size(0);

  std::vector<AdaRoundLayerResult> results;
  sim.SetActivationQuantization(options.quantize_activations);
  struct Restore {
    QuantSim& sim;
    ~Restore() { sim.SetActivationQuantization(true); }
  } restore{sim};
  at::NoGradGuard no_grad;
  for (size_t k = 0; k < layers.size(); ++k) {
    const Node& layer = graph.nodes[layers[k]];
    const int wid = layer.Param("weight");
    // Inputs from the model rounded so far; targets from the floating-point model. Each
    // batch goes straight into the cache (sized from the first), so the cache is the only
    // copy: in memory within the budget, in the spill file beyond it.
    ValueCapture in(layer.inputs[0]), out(layer.outputs[0]);
    at::Tensor x, y;
    bool spill = false;
    int64_t at_row = 0;
    for (const at::Tensor& b : batches) {
      RETURN_IF_ERROR(Annotate(sim.Run({c10::IValue(b)}, &in).status(), layer.name));
      RETURN_IF_ERROR(Annotate(sim.RunFloat({c10::IValue(b)}, &out).status(), layer.name));
      const at::Tensor xb = in.Take(), yb = out.Take();
      if (!xb.defined() || !yb.defined()) {
        return absl::InternalError(absl::StrCat(layer.name, ": its input or output was not seen"));
      }
      if (!x.defined()) {
        auto shape_of = [&](const at::Tensor& t) {
          std::vector<int64_t> s = t.sizes().vec();
          s[0] = samples;
          return s;
        };
        const int64_t bytes = (xb.numel() / xb.size(0) + yb.numel() / yb.size(0)) * samples *
                              static_cast<int64_t>(sizeof(float));
        spill = bytes > options.memory_budget_bytes;
        ASSIGN_OR_RETURN(x, SampleCache(shape_of(xb), spill));
        ASSIGN_OR_RETURN(y, SampleCache(shape_of(yb), spill));
      }
      x.narrow(0, at_row, xb.size(0)).copy_(xb);
      y.narrow(0, at_row, yb.size(0)).copy_(yb);
      at_row += xb.size(0);
    }

    const at::Tensor weight = graph.values[wid].constant->toTensor();
    at::Tensor bias;
    if (const int bid = layer.Param("bias"); bid >= 0) {
      bias = graph.values[bid].constant->toTensor();
      if (auto q = sim.param_quantizers().find(bid); q != sim.param_quantizers().end() && q->second.has_encodings()) {
        bias = q->second.Apply(bias);
      }
    }
    const Quantizer& quantizer = sim.param_quantizers().at(wid);
    AdaRoundLayerResult result;
    ASSIGN_OR_RETURN(at::Tensor rounded,
                     AdaRoundLayer(graph, layer, weight, bias, quantizer, x, y, options,
                                   static_cast<int>(k), static_cast<int>(layers.size()), &result));
    result.spilled = spill;
    // The graph holds the rounded weight; the sim keeps the original as the float model.
    sim.SetFloatReference(wid, weight);
    graph.values[wid].constant = c10::IValue(rounded);
    RETURN_IF_ERROR(sim.SetParamEncodings(wid, quantizer.encodings(), /*freeze=*/true));
    results.push_back(std::move(result));
  }
  return results;
}

}  // namespace qopt
