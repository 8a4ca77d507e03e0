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
#include "eval/metrics.h"
#include "export/encodings_json.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "passes/cross_layer_equalization.h"
#include "quant/quantsim.h"
#include "recipe/recipe.h"
#include "recipe_check.h"
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

}  // namespace internal_runner

absl::StatusOr<RunSummary> RunRecipe(const v1::Recipe& recipe, const RunOptions& options) {
  using namespace internal_runner;
  ASSIGN_OR_RETURN(QuantSimOptions sim_options, ValidateRecipe(recipe));
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
  ASSIGN_OR_RETURN(Graph graph, ImportTorchScript(recipe.model().path()));
  graph.To(device);
  RETURN_IF_ERROR(log(0, "load",
         absl::StrCat("loaded: ", graph.LiveNodes().size(), " ops, ", graph.ParamBytes() / 1024, " KiB of parameters")));

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
        ASSIGN_OR_RETURN(auto folded, FoldBatchNorms(graph));
        json pairs = json::array();
        for (const auto& f : folded) pairs.push_back({f.batch_norm, f.layer});
        jstep["folded"] = pairs;
        RETURN_IF_ERROR(log(i + 1, stage, absl::StrCat("fold_batch_norm: ", folded.size(), " batch norms folded")));
        break;
      }
      case v1::Step::kCrossLayerEqualization: {
        CleOptions cle;
        cle.high_bias_absorption = !step.cross_layer_equalization().skip_high_bias_absorption();
        ASSIGN_OR_RETURN(CleReport eq, CrossLayerEqualize(graph, cle));
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
      case v1::Step::kCalibrate: {
        ASSIGN_OR_RETURN(sim, QuantSim::Create(graph, sim_options));
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
        AccuracyMeter float_accuracy, sim_accuracy;
        FidelityMeter fidelity;
        double float_seconds = 0.0, sim_seconds = 0.0;
        bool labelled = true;
        for (size_t b = 0; b < n; ++b) {
          const Batch& batch = (*data)[b];
          auto t0 = std::chrono::steady_clock::now();
          ASSIGN_OR_RETURN(at::Tensor ref, sim->ForwardFloat(batch.inputs));
          float_seconds += Seconds(t0);
          t0 = std::chrono::steady_clock::now();
          ASSIGN_OR_RETURN(at::Tensor q, sim->Forward(batch.inputs));
          sim_seconds += Seconds(t0);
          fidelity.Add(ref, q);
          labelled = labelled && batch.labels.has_value() && ref.dim() == 2;
          if (labelled) {
            float_accuracy.Add(ref, *batch.labels);
            sim_accuracy.Add(q, *batch.labels);
          }
          RETURN_IF_ERROR(report(i + 1, stage, static_cast<double>(b + 1) / n, absl::StrCat("batch ", b + 1, "/", n)));
        }
        const Fidelity f = fidelity.Result();
        summary.metrics["output_sqnr_db"] = f.output_sqnr_db;
        summary.metrics["top1_agreement"] = f.top1_agreement;
        summary.metrics["mean_kl"] = f.mean_kl;
        summary.metrics["eval_samples"] = static_cast<double>(f.samples);
        if (labelled && n > 0) {
          const Accuracy fa = float_accuracy.Result(), sa = sim_accuracy.Result();
          summary.metrics["fp32_top1"] = fa.top1;
          summary.metrics["fp32_top5"] = fa.top5;
          summary.metrics["top1"] = sa.top1;
          summary.metrics["top5"] = sa.top5;
        }
        summary.metrics["float_seconds"] = float_seconds;
        summary.metrics["simulated_seconds"] = sim_seconds;
        for (const auto& [k, v] : summary.metrics) jstep[k] = v;
        jstep["batches"] = n;
        {
          std::string line = absl::StrFormat("evaluate: output SQNR %.2f dB, top-1 agreement %.4f",
                                             f.output_sqnr_db, f.top1_agreement);
          if (summary.metrics.count("top1")) {
            absl::StrAppendFormat(&line, ", top1 %.4f (fp32 %.4f)", summary.metrics["top1"],
                                  summary.metrics["fp32_top1"]);
          }
          RETURN_IF_ERROR(log(i + 1, stage, line, summary.metrics));
        }
        break;
      }
      case v1::Step::kExport: {
        const auto& e = step.export_();
        const bool both = !e.encodings() && !e.torchscript();
        const std::string prefix = e.prefix().empty() ? "model" : e.prefix();
        if ((both || e.torchscript())) {
          const std::string name = prefix + ".pt";
          RETURN_IF_ERROR(ExportTorchScript(graph, sim.get(), staging.Path(name)));
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
  summary.report_json = jreport.dump(2);
  RETURN_IF_ERROR(WriteText(staging.Path("report.json"), summary.report_json));
  files.push_back("report.json");
  RETURN_IF_ERROR(staging.Commit(files));
  summary.artifacts = files;
  return summary;
}

}  // namespace qopt
