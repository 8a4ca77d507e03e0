#include "recipe/runner.h"

#include <chrono>
#include <cmath>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "recipe/process_memory.h"
#include "recipe/recipe.h"
#include "recipe/staging.h"
#include "recipe/steps/run_context.h"
#include "report_json.h"
#include "status.h"
#include "steps/step_spec.h"

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

// A step's run, with any exception LibTorch (or anything below it) throws turned into an
// error, so that no job ever ends in an abort.
absl::Status Guarded(StepRun run_step, const v1::Step& step, RunContext& run) {
  try {
    return run_step(step, run);
  } catch (const c10::Error& e) {
    return absl::InternalError(FirstLine(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(FirstLine(e.what()));
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
  RETURN_IF_ERROR(Annotate(Guarded(run_step, step, run), stage));
  part.set_seconds(Seconds(start));
  for (size_t k = artifacts_before; k < run.artifacts().size(); ++k) part.add_artifacts(run.artifacts()[k]);
  RETURN_IF_ERROR(run.Finish(part));
  return part;
}

absl::Status LoadModel(RunContext& run) {
  run.BeginStep(0, "load", /*part=*/nullptr);
  RETURN_IF_ERROR(run.Progress(0.0, absl::StrCat("loading ", run.recipe().model().path())));
  ASSIGN_OR_RETURN(run.graph, run.Import());
  return run.Log(absl::StrCat("loaded: ", run.graph->LiveNodes().size(), " ops, ", run.graph->ParamBytes() / 1024,
                              " KiB of parameters"));
}

}  // namespace

absl::StatusOr<RunSummary> RunRecipe(const v1::Recipe& recipe, const RunOptions& options) {
  ASSIGN_OR_RETURN(QuantSimOptions sim_options, ValidateRecipe(recipe));
  // The report's peak memory is this job's, not that of earlier jobs of a service worker.
  ResetPeakMemory();
  ASSIGN_OR_RETURN(c10::Device device, ParseDevice(recipe.device()));
  // More threads than cores only adds threads (LibTorch keeps its pools after the job).
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = recipe.num_threads() > 0 ? std::min(recipe.num_threads(), cores) : cores;
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;

  ASSIGN_OR_RETURN(Staging staging, Staging::Create(options.out_dir));
  RunContext run(recipe, device, sim_options, options, &staging);
  RETURN_IF_ERROR(LoadModel(run));
  RunSummary summary;
  v1::Report& report = summary.report;
  report.set_recipe(recipe.name());
  report.set_model(recipe.model().path());
  report.set_device(device.str());
  for (int i = 0; i < recipe.steps_size(); ++i) {
    ASSIGN_OR_RETURN(*report.add_steps(), RunStep(recipe, i, run));
  }
  report.mutable_metrics()->insert(run.metrics.begin(), run.metrics.end());
  if (const std::optional<double> peak = PeakMemoryMiB()) report.set_peak_memory_mib(std::round(*peak * 10) / 10);

  summary.metrics = run.metrics;
  summary.report_json = ReportToJson(report);
  RETURN_IF_ERROR(run.WriteArtifact("report.json", summary.report_json));
  RETURN_IF_ERROR(staging.Commit(run.artifacts()));
  summary.artifacts = run.artifacts();
  return summary;
}

}  // namespace qopt
