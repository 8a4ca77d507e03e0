#include "recipe/runner.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Context.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "export/encodings_json.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "passes/cross_layer_equalization.h"
#include "quant/quantsim.h"
#include "recipe/auto_quant.h"
#include "recipe/process_memory.h"
#include "recipe/recipe.h"
#include "recipe_check.h"
#include "techniques/adaround.h"
#include "techniques/bias_correction.h"
#include "status.h"

namespace qopt {
namespace internal_runner {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

absl::StatusOr<c10::Device> ParseDevice(const std::string& name) {
  const std::string d = name.empty() ? "cpu" : name;
  try {
    c10::Device device(d);
    if (device.is_cuda() && !at::hasCUDA()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", d, " requested but this build or machine has no CUDA"));
    }
    return device;
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("unknown device '", d, "': use cpu or cuda:N"));
  }
}

// Writes files into a staging directory beside the output directory and moves them in
// only when every step succeeded.
class Staging {
 public:
  static absl::StatusOr<Staging> Create(const std::string& out_dir) {
    if (out_dir.empty()) return absl::InvalidArgumentError("no output directory given (--out)");
    std::error_code ec;
    fs::path out = fs::absolute(out_dir, ec);
    if (fs::exists(out, ec) && !fs::is_directory(out, ec)) {
      return absl::InvalidArgumentError(absl::StrCat("output path exists and is not a directory: ",
                                                     out_dir));
    }
    fs::path parent = out.parent_path();
    fs::create_directories(parent, ec);
    fs::path staging = parent / absl::StrCat(".", out.filename().string(), ".partial-", getpid());
    fs::remove_all(staging, ec);
    if (!fs::create_directories(staging, ec)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot create ", staging.string(), ": ",
                                                     ec.message()));
    }
    return Staging(out, staging);
  }
  Staging(Staging&& o) noexcept : out_(o.out_), dir_(o.dir_) { o.dir_.clear(); }
  ~Staging() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  absl::Status Commit(const std::vector<std::string>& names) {
    std::error_code ec;
    fs::create_directories(out_, ec);
    for (const auto& name : names) {
      fs::rename(dir_ / name, out_ / name, ec);
      if (ec) {
        return absl::InternalError(absl::StrCat("cannot move ", name, " into ", out_.string(),
                                                ": ", ec.message()));
      }
    }
    return absl::OkStatus();
  }

 private:
  Staging(fs::path out, fs::path dir) : out_(std::move(out)), dir_(std::move(dir)) {}
  fs::path out_, dir_;
};

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

DatasetSpec SpecFromRef(const v1::DataRef& ref) {
  DatasetSpec spec;
  spec.path = ref.path();
  spec.labels_path = ref.labels_path();
  if (!ref.format().empty()) spec.format = ref.format();
  spec.max_samples = ref.max_samples();
  spec.shuffle = ref.shuffle();
  spec.seed = ref.seed();
  const v1::Preprocess& p = ref.preprocess();
  if (p.scale() != 0.0) spec.preprocess.scale = p.scale();
  spec.preprocess.resize = p.resize();
  spec.preprocess.center_crop = p.center_crop();
  spec.preprocess.channels = p.channels();
  spec.preprocess.mean.assign(p.mean().begin(), p.mean().end());
  spec.preprocess.std.assign(p.std().begin(), p.std().end());
  return spec;
}

absl::StatusOr<std::vector<Batch>> LoadBatches(const v1::DataRef& ref, const c10::Device& device) {
  ASSIGN_OR_RETURN(Dataset data, LoadDataset(SpecFromRef(ref)));
  data.inputs = data.inputs.to(device);
  return MakeBatches(data, ref.batch_size() > 0 ? ref.batch_size() : 16);
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

AdaRoundOptions AdaRoundOptionsFrom(const v1::AdaRoundStep& a) {
  AdaRoundOptions o;
  o.num_iterations = a.num_iterations();
  if (a.reg_param() > 0) o.reg_param = a.reg_param();
  if (a.beta_start() > 0) o.beta_start = a.beta_start();
  if (a.beta_end() > 0) o.beta_end = a.beta_end();
  if (a.warm_start() > 0) o.warm_start = a.warm_start();
  if (a.learning_rate() > 0) o.learning_rate = a.learning_rate();
  o.batch_size = a.batch_size();
  o.quantize_activations = a.quantize_activations();
  if (a.memory_budget_mb() > 0) o.memory_budget_bytes = a.memory_budget_mb() << 20;
  o.skip_layers.assign(a.skip_layers().begin(), a.skip_layers().end());
  return o;
}

json AdaRoundJson(const std::vector<AdaRoundLayerResult>& layers) {
  json out = json::array();
  for (const AdaRoundLayerResult& r : layers) {
    out.push_back({{"layer", r.layer}, {"weights", r.weights}, {"iterations", r.iterations},
                   {"nearest_error", r.nearest_error}, {"adaround_error", r.adaround_error},
                   {"flipped", r.flipped}, {"seconds", r.seconds}, {"spilled", r.spilled}});
  }
  return out;
}

}  // namespace internal_runner

absl::StatusOr<RunSummary> RunRecipe(const v1::Recipe& recipe, const RunOptions& options) {
  using namespace internal_runner;
  ASSIGN_OR_RETURN(QuantSimOptions sim_options, ValidateRecipe(recipe));
  // The report's peak memory is this job's, not that of earlier jobs of a service worker.
  ResetPeakMemory();
  ASSIGN_OR_RETURN(c10::Device device, ParseDevice(recipe.device()));
  const int threads = recipe.num_threads() > 0
                          ? recipe.num_threads()
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;

  const int num_steps = recipe.steps_size();
  // Reports progress; fails with Cancelled once the caller asks to stop.
  auto report = [&](int step, const std::string& stage, double fraction,
                    std::string msg) -> absl::Status {
    if (options.on_progress) {
      options.on_progress(Progress{step, num_steps, stage, fraction, std::move(msg)});
    }
    if (options.cancelled && options.cancelled()) return absl::CancelledError("job cancelled");
    return absl::OkStatus();
  };
  // A result line for the job's history (and the figures behind it).
  auto log = [&](int step, const std::string& stage, std::string msg,
                 std::map<std::string, double> metrics = {}) -> absl::Status {
    if (options.on_progress) {
      options.on_progress(Progress{step, num_steps, stage, 1.0, std::move(msg), true, std::move(metrics)});
    }
    if (options.cancelled && options.cancelled()) return absl::CancelledError("job cancelled");
    return absl::OkStatus();
  };

  ASSIGN_OR_RETURN(Staging staging, Staging::Create(options.out_dir));
  RETURN_IF_ERROR(report(0, "load", 0.0, absl::StrCat("loading ", recipe.model().path())));
  // A fresh copy of the model on the run's device (auto_quant imports several).
  auto import = [&]() -> absl::StatusOr<std::unique_ptr<Graph>> {
    ASSIGN_OR_RETURN(Graph g, ImportTorchScript(recipe.model().path()));
    g.To(device);
    return std::make_unique<Graph>(std::move(g));
  };
  ASSIGN_OR_RETURN(std::unique_ptr<Graph> graph, import());
  RETURN_IF_ERROR(log(0, "load",
         absl::StrCat("loaded: ", graph->LiveNodes().size(), " ops, ", graph->ParamBytes() / 1024, " KiB of parameters")));

  // Data is loaded when the first step needs it.
  std::vector<Batch> batches, eval_batches;
  bool batches_loaded = false, eval_loaded = false;
  auto calibration = [&]() -> absl::StatusOr<const std::vector<Batch>*> {
    if (!batches_loaded) {
      ASSIGN_OR_RETURN(batches, LoadBatches(recipe.calibration_data(), device));
      batches_loaded = true;
    }
    return &batches;
  };
  auto evaluation = [&]() -> absl::StatusOr<const std::vector<Batch>*> {
    if (recipe.evaluation_data().path().empty()) return calibration();
    if (!eval_loaded) {
      ASSIGN_OR_RETURN(eval_batches, LoadBatches(recipe.evaluation_data(), device));
      eval_loaded = true;
    }
    return &eval_batches;
  };
  auto limit = [](int n, size_t available) {
    return n > 0 ? std::min<size_t>(n, available) : available;
  };
  // The inputs of the first `n` calibration batches (0 = all), for the techniques.
  auto calibration_inputs = [&](int n) -> absl::StatusOr<std::vector<at::Tensor>> {
    ASSIGN_OR_RETURN(const std::vector<Batch>* data, calibration());
    std::vector<at::Tensor> inputs;
    for (size_t b = 0; b < limit(n, data->size()); ++b) inputs.push_back((*data)[b].inputs);
    return inputs;
  };

  json jreport;
  jreport["recipe"] = recipe.name();
  jreport["model"] = recipe.model().path();
  jreport["device"] = device.str();
  json jsteps = json::array();
  RunSummary summary;
  std::unique_ptr<QuantSim> sim;
  std::vector<std::string> files;

  for (int i = 0; i < num_steps; ++i) {
    const v1::Step& step = recipe.steps(i);
    const std::string stage = StepName(step);
    const auto start = std::chrono::steady_clock::now();
    json jstep;
    jstep["step"] = stage;
    RETURN_IF_ERROR(report(i + 1, stage, 0.0, ""));
    switch (step.kind_case()) {
      case v1::Step::kFoldBatchNorm: {
        ASSIGN_OR_RETURN(auto folded, FoldBatchNorms(*graph));
        json pairs = json::array();
        for (const auto& f : folded) pairs.push_back({f.batch_norm, f.layer});
        jstep["folded"] = pairs;
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat("fold_batch_norm: ", folded.size(), " batch norms folded")));
        break;
      }
      case v1::Step::kCrossLayerEqualization: {
        CleOptions cle;
        cle.high_bias_absorption = !step.cross_layer_equalization().skip_high_bias_absorption();
        ASSIGN_OR_RETURN(CleReport eq, CrossLayerEqualize(*graph, cle));
        jstep["chains"] = eq.chains;
        json absorbed = json::array();
        for (const auto& [from, to] : eq.absorbed) absorbed.push_back({from, to});
        jstep["high_bias_absorbed"] = absorbed;
        jstep["relu6_clipped_per_channel"] = eq.clipped_relu6;
        size_t layers = 0;
        for (const auto& c : eq.chains) layers += c.size();
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat(
            "cross_layer_equalization: ", eq.chains.size(), " chains over ", layers, " layers, ",
            eq.absorbed.size(), " high biases absorbed")));
        break;
      }
      case v1::Step::kAdaround: {
        const v1::AdaRoundStep& a = step.adaround();
        ASSIGN_OR_RETURN(const std::vector<at::Tensor> inputs, calibration_inputs(a.num_batches()));
        AdaRoundOptions ao = AdaRoundOptionsFrom(a);
        ao.on_progress = [&](const AdaRoundProgress& p) {
          return report(i + 1, stage, p.Fraction(), p.Describe());
        };
        ASSIGN_OR_RETURN(std::vector<AdaRoundLayerResult> layers, ApplyAdaRound(*graph, *sim, inputs, ao));
        jstep["layers"] = AdaRoundJson(layers);
        double nearest = 0, learned = 0;
        for (const auto& r : layers) {
          nearest += r.nearest_error;
          learned += r.adaround_error;
        }
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrFormat(
            "adaround: %d layers, reconstruction error %.3g with learned rounding vs %.3g nearest (sum over layers)",
            static_cast<int>(layers.size()), learned, nearest)));
        break;
      }
      case v1::Step::kBiasCorrection: {
        const v1::BiasCorrectionStep& bc = step.bias_correction();
        BiasCorrectionOptions bo;
        if (bc.mode() == "analytical") bo.mode = BiasCorrectionOptions::Mode::kAnalytical;
        bo.skip_layers.assign(bc.skip_layers().begin(), bc.skip_layers().end());
        bo.on_layer = [&](int done, int total, const std::string& layer) {
          return report(i + 1, stage, static_cast<double>(done) / std::max(1, total),
                        absl::StrCat(layer, " (", done, "/", total, ")"));
        };
        ASSIGN_OR_RETURN(const std::vector<at::Tensor> inputs,
                         calibration_inputs(bc.num_batches() > 0 ? bc.num_batches() : 16));
        ASSIGN_OR_RETURN(std::vector<BiasCorrectionResult> corrected, CorrectBias(*graph, *sim, inputs, bo));
        json layers = json::array();
        int analytical = 0;
        for (const BiasCorrectionResult& r : corrected) {
          layers.push_back({{"layer", r.layer}, {"method", r.method}, {"mean_abs_shift", r.mean_abs_shift}});
          analytical += r.method == "analytical";
        }
        jstep["layers"] = layers;
        jstep["batches"] = inputs.size();
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat("bias_correction: ", corrected.size(), " layers (",
                                                      analytical, " analytical, ", corrected.size() - analytical,
                                                      " empirical)")));
        break;
      }
      case v1::Step::kAutoQuant: {
        const v1::AutoQuantStep& aq = step.auto_quant();
        AutoQuantInputs in;
        ASSIGN_OR_RETURN(in.calibration, calibration_inputs(0));
        ASSIGN_OR_RETURN(const std::vector<Batch>* eval, evaluation());
        in.import = import;
        in.sim_options = sim_options;
        in.evaluation = eval;
        in.eval_batches = limit(aq.eval_batches(), eval->size());
        if (aq.allowed_drop() > 0) in.allowed_drop = aq.allowed_drop();
        in.adaround = AdaRoundOptionsFrom(aq.adaround());
        in.progress = [&](double fraction, const std::string& message) {
          return report(i + 1, stage, fraction, message);
        };
        in.log = [&](const std::string& line, const Figures& figures) { return log(i + 1, stage, line, figures); };
        ASSIGN_OR_RETURN(AutoQuantResult chosen, RunAutoQuant(in));
        sim.reset();
        graph = std::move(chosen.graph);
        sim = std::move(chosen.sim);
        json stages = json::array();
        for (const AutoQuantStage& st : chosen.stages) {
          json js = {{"stage", st.name}, {"drop", st.drop}, {"seconds", st.seconds}};
          for (const auto& [k, v] : st.figures) js[k] = v;
          stages.push_back(std::move(js));
        }
        jstep["stages"] = stages;
        jstep["kept"] = chosen.kept;
        jstep["figure"] = chosen.figure;
        jstep["allowed_drop"] = in.allowed_drop;
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat("auto_quant: kept ", chosen.kept)));
        break;
      }
      case v1::Step::kCalibrate: {
        ASSIGN_OR_RETURN(sim, QuantSim::Create(*graph, sim_options));
        if (!recipe.quantization().freeze_encodings_path().empty()) {
          RETURN_IF_ERROR(LoadEncodingsFile(*sim, recipe.quantization().freeze_encodings_path(),
                                            /*freeze=*/true));
        }
        ASSIGN_OR_RETURN(const std::vector<Batch>* data, calibration());
        const size_t n = limit(step.calibrate().num_batches(), data->size());
        for (size_t b = 0; b < n; ++b) {
          RETURN_IF_ERROR(Annotate(sim->ObserveBatch({c10::IValue((*data)[b].inputs)}),
                                   absl::StrCat("calibration batch ", b + 1)));
          RETURN_IF_ERROR(report(i + 1, stage, static_cast<double>(b + 1) / n,
                 absl::StrCat("batch ", b + 1, "/", n)));
        }
        RETURN_IF_ERROR(sim->FinishCalibration());
        jstep["batches"] = n;
        jstep["param_quantizers"] = sim->param_quantizers().size();
        jstep["activation_quantizers"] = sim->activation_quantizers().size();
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat(
            "calibrate: ", n, " batches, ", sim->param_quantizers().size(), " parameter and ",
            sim->activation_quantizers().size(), " activation quantizers")));
        break;
      }
      case v1::Step::kEvaluate: {
        ASSIGN_OR_RETURN(const std::vector<Batch>* data, evaluation());
        const size_t n = limit(step.evaluate().num_batches(), data->size());
        ASSIGN_OR_RETURN(summary.metrics, EvaluateSim(*sim, *data, n, [&](size_t done, size_t total) {
          return report(i + 1, stage, static_cast<double>(done) / total, absl::StrCat("batch ", done, "/", total));
        }));
        const Figures& f = summary.metrics;
        for (const auto& [k, v] : summary.metrics) jstep[k] = v;
        jstep["batches"] = n;
        {
          std::string line = absl::StrFormat("evaluate: output SQNR %.2f dB, top-1 agreement %.4f",
                                             f.at("output_sqnr_db"), f.at("top1_agreement"));
          if (f.count("top1")) {
            absl::StrAppendFormat(&line, ", top1 %.4f (fp32 %.4f)", f.at("top1"), f.at("fp32_top1"));
          }
          RETURN_IF_ERROR(log(i + 1, stage, line, f));
        }
        break;
      }
      case v1::Step::kExport: {
        const auto& e = step.export_();
        const bool both = !e.encodings() && !e.torchscript();
        const std::string prefix = e.prefix().empty() ? "model" : e.prefix();
        if ((both || e.torchscript())) {
          const std::string name = prefix + ".pt";
          RETURN_IF_ERROR(ExportTorchScript(*graph, sim.get(), staging.Path(name)));
          files.push_back(name);
        }
        if ((both || e.encodings()) && sim) {
          const std::string name = prefix + ".encodings";
          RETURN_IF_ERROR(WriteText(staging.Path(name), EncodingsToJson(*sim)));
          files.push_back(name);
        }
        jstep["files"] = files;
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat("export: ", absl::StrJoin(files, ", "))));
        break;
      }
      default:
        return absl::UnimplementedError(absl::StrCat("steps[", i, "]: ", stage.empty() ? "no operation" : stage,
                                                     " is not supported by this worker"));
    }
    jstep["seconds"] = Seconds(start);
    jsteps.push_back(std::move(jstep));
    RETURN_IF_ERROR(report(i + 1, stage, 1.0, "done"));
  }
  jreport["steps"] = std::move(jsteps);
  jreport["metrics"] = summary.metrics;
  if (const std::optional<double> peak = PeakMemoryMiB()) jreport["peak_memory_mib"] = std::round(*peak * 10) / 10;
  summary.report_json = jreport.dump(2);
  RETURN_IF_ERROR(WriteText(staging.Path("report.json"), summary.report_json));
  files.push_back("report.json");
  RETURN_IF_ERROR(staging.Commit(files));
  summary.artifacts = files;
  return summary;
}

}  // namespace qopt
