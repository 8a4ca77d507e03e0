// adaround: learned rounding of each layer's weights on the calibrated simulation.
#include "absl/strings/str_format.h"
#include "recipe/steps/adaround_options.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {

AdaRoundOptions AdaRoundOptionsFrom(const v1::AdaRoundStep& a) {
  AdaRoundOptions o;
  o.num_iterations = a.num_iterations();
  o.reg_param = a.reg_param();
  o.beta_start = a.beta_start();
  o.beta_end = a.beta_end();
  o.warm_start = a.warm_start();
  o.learning_rate = a.learning_rate();
  o.batch_size = a.batch_size();
  o.quantize_activations = a.quantize_activations();
  o.memory_budget_bytes = a.memory_budget_mb() << 20;
  o.skip_layers.assign(a.skip_layers().begin(), a.skip_layers().end());
  o.stop_on_convergence = !a.run_all_iterations();
  o.schedule_iterations = a.schedule_iterations();
  return o;
}

absl::Status RunAdaRoundStep(const v1::Step& step, RunContext& run) {
  const v1::AdaRoundStep& a = step.adaround();
  ASSIGN_OR_RETURN(const std::vector<at::Tensor> inputs, run.CalibrationInputs(a.num_batches()));
  AdaRoundOptions options = AdaRoundOptionsFrom(a);
  options.on_progress = [&](const AdaRoundProgress& p) { return run.Progress(p.Fraction(), p.Describe()); };
  ASSIGN_OR_RETURN(std::vector<AdaRoundLayerResult> layers, ApplyAdaRound(*run.graph, *run.sim, inputs, options));
  double nearest = 0, learned = 0;
  int64_t run_iterations = 0, max_iterations = 0;
  int converged = 0;
  for (const AdaRoundLayerResult& r : layers) {
    run_iterations += r.iterations;
    max_iterations += r.max_iterations;
    converged += r.stop == AdaRoundLayerResult::Stop::kConverged;
    v1::LayerRow* row = run.part().add_layers();
    row->set_layer(r.layer);
    auto& f = *row->mutable_figures();
    f["weights"] = r.weights;
    f["iterations"] = r.iterations;
    f["max_iterations"] = r.max_iterations;
    f["converged_at"] = r.converged_at;
    f["hard_fraction"] = r.hard_fraction;
    (*row->mutable_labels())["stop"] = AdaRoundStopName(r.stop);
    (*row->mutable_labels())["stop_reason"] = r.stop_reason;
    f["nearest_error"] = r.nearest_error;
    f["adaround_error"] = r.adaround_error;
    f["flipped"] = r.flipped;
    f["seconds"] = r.seconds;
    f["spilled"] = r.spilled;
    v1::Series* curve = run.part().add_series();
    curve->set_name(r.layer + " reconstruction error");
    curve->mutable_x()->Add(r.curve_iterations.begin(), r.curve_iterations.end());
    curve->mutable_y()->Add(r.curve_error.begin(), r.curve_error.end());
    nearest += r.nearest_error;
    learned += r.adaround_error;
  }
  auto& figures = *run.part().mutable_figures();
  figures["nearest_error"] = nearest;
  figures["adaround_error"] = learned;
  figures["iterations"] = static_cast<double>(run_iterations);
  figures["max_iterations"] = static_cast<double>(max_iterations);
  figures["converged_layers"] = converged;
  return run.Log(absl::StrFormat(
      "adaround: %d layers, reconstruction error %.3g with learned rounding vs %.3g nearest (sum over layers); "
      "%d iterations of at most %d%s",
      static_cast<int>(layers.size()), learned, nearest, run_iterations, max_iterations,
      a.run_all_iterations() ? " (all run)"
                             : absl::StrFormat(", %d of %d layers stopped on convergence", converged,
                                               static_cast<int>(layers.size()))));
}

}  // namespace qopt
