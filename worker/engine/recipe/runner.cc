#include "recipe/runner.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "calibration_method.h"
#include "ir/cost_model.h"
#include "ir/shape_inference.h"
#include "recipe/process_memory.h"
#include "recipe/recipe.h"
#include "recipe/staging.h"
#include "recipe/steps/run_context.h"
#include "recipe_files.h"
#include "report_html.h"
#include "report_json.h"
#include "sha256.h"
#include "status.h"
#include "steps/step_spec.h"
#include "version.h"

namespace qopt {
namespace {

absl::StatusOr<c10::Device> ParseDevice(const std::string& name) {
  const std::string d = name.empty() ? "cpu" : name;
  try {
    c10::Device device(d);
    if (device.is_cuda() && !at::hasCUDA()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", d, " requested but this build or machine has no CUDA"));
    }
    if (device.is_cuda() && device.has_index() && device.index() >= static_cast<int>(at::getNumGPUs())) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", d, " requested but this machine has ", at::getNumGPUs(), " GPUs"));
    }
    return device;
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("unknown device '", d, "': use cpu or cuda:N"));
  }
}

}  // namespace

absl::Status CheckDeviceAvailable(const std::string& device) { return ParseDevice(device).status(); }

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs `work`, with any exception LibTorch (or anything below it) throws turned into an
// error (its first line after `prefix`), so that no job ever ends in an abort.
template <typename Work>
absl::Status Guarded(Work&& work, const std::string& prefix = "") {
  try {
    return work();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(prefix + "out of memory");
  } catch (const c10::Error& e) {
    return absl::InternalError(prefix + FirstLine(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(prefix + FirstLine(e.what()));
  }
}

// Runs step `i` (0-based) and returns its part of the report.
absl::StatusOr<v1::StepReport> RunStep(const v1::Recipe& recipe, int i, RunContext& run) {
  const v1::Step step = StepWithDefaults(recipe.steps(i));
  const std::string stage = StepName(step);
  const StepRun run_step = FindStepRun(step.kind_case());
  if (run_step == nullptr) {
    return absl::UnimplementedError(absl::StrCat("steps[", i, "]: ", stage.empty() ? "no operation" : stage,
                                                 " is not supported by this worker"));
  }
  const auto start = std::chrono::steady_clock::now();
  const size_t artifacts_before = run.artifacts().size();
  v1::StepReport part;
  part.set_step(stage);
  part.set_index(i + 1);
  run.BeginStep(i + 1, stage, &part);
  RETURN_IF_ERROR(run.Progress(0.0, ""));
  RETURN_IF_ERROR(Annotate(Guarded([&] { return run_step(step, run); }), stage));
  part.set_seconds(Seconds(start));
  for (size_t k = artifacts_before; k < run.artifacts().size(); ++k) part.add_artifacts(run.artifacts()[k]);
  RETURN_IF_ERROR(run.Finish(part));
  return part;
}

// The imported model's cost for one input shaped like the recipe's data. The cost only
// informs, so a model or data set it cannot be counted for is said in the log, and the
// step that needs the data reports any error loading it.
absl::StatusOr<std::string> CountModelCost(RunContext& run, v1::ModelCost* out) {
  const v1::Recipe& recipe = run.recipe();
  if (recipe.calibration_data().path().empty() && recipe.evaluation_data().path().empty()) {
    return std::string("no data to take the input shape from");
  }
  std::vector<int64_t> shape;
  try {
    absl::StatusOr<std::vector<int64_t>> input = run.InputShape();
    if (!input.ok()) return std::string("its data could not be read");
    shape = *std::move(input);
  } catch (const std::exception&) {
    return std::string("its data could not be read");
  }
  absl::StatusOr<ModelCost> cost = [&]() -> absl::StatusOr<ModelCost> {
    try {
      RETURN_IF_ERROR(InferShapes(*run.graph, {shape}));
      return CountCost(*run.graph);
    } catch (const std::exception& e) {
      return absl::InternalError(FirstLine(e.what()));
    }
  }();
  if (!cost.ok()) return absl::StrCat("shapes could not be inferred: ", cost.status().message());
  out->mutable_input_shape()->Add(shape.begin(), shape.end());
  out->set_macs(static_cast<double>(cost->macs));
  out->set_parameters(static_cast<double>(cost->parameters));
  out->set_parameter_bytes(static_cast<double>(cost->parameter_bytes));
  out->set_activation_bytes(static_cast<double>(cost->activation_bytes));
  for (const LayerCost& layer : cost->layers) {
    if (layer.macs == 0 && layer.parameters == 0) continue;
    v1::LayerRow* row = out->add_layers();
    row->set_layer(layer.layer);
    (*row->mutable_labels())["op_type"] = layer.op_type;
    auto& f = *row->mutable_figures();
    f["macs"] = static_cast<double>(layer.macs);
    f["parameters"] = static_cast<double>(layer.parameters);
    f["parameter_bytes"] = static_cast<double>(layer.parameter_bytes);
    f["activation_bytes"] = static_cast<double>(layer.activation_bytes);
  }
  return std::string();
}

absl::Status LoadModelUnguarded(RunContext& run, v1::Report& report) {
  RETURN_IF_ERROR(run.Progress(0.0, "loading the model"));
  ASSIGN_OR_RETURN(run.graph, run.Import());
  std::string line = absl::StrCat("loaded: ", run.graph->LiveNodes().size(), " ops, ",
                                  run.graph->ParamBytes() / 1024, " KiB of parameters");
  ASSIGN_OR_RETURN(const std::string not_counted, CountModelCost(run, report.mutable_cost()));
  if (!not_counted.empty()) {
    report.clear_cost();
    absl::StrAppend(&line, "; cost not counted: ", not_counted);
  } else {
    const v1::ModelCost& c = report.cost();
    absl::StrAppend(&line, absl::StrFormat("; %.4g MMACs, %.4g M parameters for input %s", c.macs() / 1e6,
                                           c.parameters() / 1e6, absl::StrJoin(c.input_shape(), "x")));
  }
  return run.Log(line);
}

absl::Status LoadModel(RunContext& run, v1::Report& report) {
  run.BeginStep(0, "load", /*part=*/nullptr);
  return Guarded([&] { return LoadModelUnguarded(run, report); }, "load: ");
}

int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// SHA-256 of a file the recipe names; "" for a folder (image data sets), and for a file
// that cannot be read, which the step loading it reports.
std::string FileSha256(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::string();
  absl::StatusOr<FileDigest> digest = Sha256File(path);
  return digest.ok() ? digest->sha256 : std::string();
}

// The caller's name for a recipe input: its catalog name in the service, else its file's.
std::string InputName(const std::string& name, const std::string& path) {
  return name.empty() ? std::filesystem::path(path).filename().string() : name;
}

// The report's header parts known before the run: the model and data sets as the caller
// named them, with the hashes of their files, and who runs the job.
void FillHeader(const v1::Recipe& recipe, const RunOptions& options, v1::Report& report) {
  report.set_recipe(recipe.name());
  report.set_model(InputName(recipe.model().name(), recipe.model().path()));
  report.set_model_sha256(FileSha256(recipe.model().path()));
  report.set_qopt_version(QoptVersion());
  report.set_worker_id(options.worker_id);
  for (const auto& [role, data] : RecipeDataRefs(recipe)) {
    if (data->path().empty()) continue;
    v1::DataInput* input = report.add_datasets();
    input->set_role(role);
    input->set_name(InputName(data->name(), data->path()));
    input->set_sha256(FileSha256(data->path()));
    if (!data->labels_path().empty()) input->set_labels_sha256(FileSha256(data->labels_path()));
  }
}

// Where a quantizer sits, as the report names it.
std::pair<std::string, std::string> ParamSite(const Value& param) {
  const size_t dot = param.name.rfind('.');
  if (dot == std::string::npos) return {param.name, "parameter"};
  return {param.name.substr(0, dot), param.name.substr(dot + 1)};
}

std::pair<std::string, std::string> ActivationSiteName(const ActivationSite& site) {
  if (site.is_input) return {"", absl::StrCat("input ", site.index)};
  return {site.layer, site.index == 0 ? "output" : absl::StrCat("output ", site.index)};
}

void AddQuantizer(const std::pair<std::string, std::string>& site, const Quantizer& q, v1::ResolvedQuantization& out) {
  v1::QuantizerSetting* row = out.add_quantizers();
  row->set_layer(site.first);
  row->set_tensor(site.second);
  row->set_bitwidth(q.spec().bitwidth);
  row->set_symmetric(q.spec().symmetric);
  row->set_per_channel(q.axis() >= 0);
  row->set_enabled(q.enabled());
  row->set_calibration(std::string(CalibrationMethodName(q.method())));
  row->set_frozen(q.frozen());
}

// The quantization the run used: the settings with their defaults, the config, and the
// simulation's quantizers as the last step left them.
absl::Status ResolveQuantization(const QuantSimOptions& o, const QuantSim* sim, v1::ResolvedQuantization& out) {
  out.set_param_bitwidth(o.param_bitwidth);
  out.set_activation_bitwidth(o.activation_bitwidth);
  out.set_per_channel(o.per_channel);
  out.set_param_calibration(std::string(CalibrationMethodName(o.param_method)));
  out.set_activation_calibration(std::string(CalibrationMethodName(o.activation_method)));
  out.set_percentile(o.percentile);
  const auto parsed = google::protobuf::util::JsonStringToMessage(QuantSimConfigToJson(o.config), out.mutable_config());
  if (!parsed.ok()) return absl::InternalError(absl::StrCat("report: the quantsim config: ", parsed.message().as_string()));
  out.mutable_exclude_layers()->Add(o.exclude_layers.begin(), o.exclude_layers.end());
  if (sim == nullptr) return absl::OkStatus();
  for (const auto& [id, q] : sim->param_quantizers()) AddQuantizer(ParamSite(sim->graph().values[id]), q, out);
  for (const auto& [id, q] : sim->activation_quantizers()) {
    AddQuantizer(ActivationSiteName(sim->activation_sites().at(id)), q, out);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RunSummary> RunRecipe(const v1::Recipe& recipe, const RunOptions& options) {
  ASSIGN_OR_RETURN(QuantSimOptions sim_options, ValidateRecipe(recipe));
  // The report's peak memory is this job's, not that of earlier jobs of a service worker.
  ResetPeakMemory();
  KeepFreedMemory();
  ASSIGN_OR_RETURN(c10::Device device, ParseDevice(recipe.device()));
  // More threads than cores only adds threads (LibTorch keeps its pools after the job).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = recipe.num_threads() > 0 ? std::min(recipe.num_threads(), cores) : cores;
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;

  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(Staging staging, Staging::Create(options.out_dir));
  RunContext run(recipe, device, sim_options, options, &staging);
  RunSummary summary;
  v1::Report& report = summary.report;
  report.set_started_unix_ms(UnixMillis());
  FillHeader(recipe, options, report);
  report.set_device(device.str());
  RETURN_IF_ERROR(LoadModel(run, report));
  for (int i = 0; i < recipe.steps_size(); ++i) {
    ASSIGN_OR_RETURN(*report.add_steps(), RunStep(recipe, i, run));
  }
  report.mutable_metrics()->insert(run.metrics.begin(), run.metrics.end());
  report.mutable_warnings()->Add(run.warnings().begin(), run.warnings().end());
  if (const std::optional<double> peak = PeakMemoryMiB()) report.set_peak_memory_mib(std::round(*peak * 10) / 10);
  RETURN_IF_ERROR(ResolveQuantization(run.sim ? run.sim->options() : run.sim_options(), run.sim.get(),
                                      *report.mutable_quantization()));
  report.set_finished_unix_ms(UnixMillis());
  report.set_wall_seconds(std::round(Seconds(start) * 1000) / 1000);

  summary.metrics = run.metrics;
  summary.report_json = ReportToJson(report);
  RETURN_IF_ERROR(run.WriteArtifact("report.json", summary.report_json));
  RETURN_IF_ERROR(run.WriteArtifact("report.html", ReportToHtml(report)));
  RETURN_IF_ERROR(staging.Commit(run.artifacts()));
  summary.artifacts = run.artifacts();
  return summary;
}

}  // namespace qopt
