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
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

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

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs step `i` (0-based) and returns its part of the report.
absl::StatusOr<json> RunStep(const v1::Recipe& recipe, int i, RunContext& run) {
  const v1::Step step = StepWithDefaults(recipe.steps(i));
  const std::string stage = StepName(step);
  const StepRun run_step = FindStepRun(step.kind_case());
  if (run_step == nullptr) {
    return absl::UnimplementedError(absl::StrCat("steps[", i, "]: ", stage.empty() ? "no operation" : stage,
                                                 " is not supported by this worker"));
  }
  const auto start = std::chrono::steady_clock::now();
  json part;
  part["step"] = stage;
  run.BeginStep(i + 1, stage, &part);
  RETURN_IF_ERROR(run.Progress(0.0, ""));
  RETURN_IF_ERROR(run_step(step, run));
  part["seconds"] = Seconds(start);
  RETURN_IF_ERROR(run.Progress(1.0, "done"));
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
  const int threads = recipe.num_threads() > 0 ? recipe.num_threads()
                                               : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;

  ASSIGN_OR_RETURN(Staging staging, Staging::Create(options.out_dir));
  RunContext run(recipe, device, sim_options, options, &staging);
  RETURN_IF_ERROR(LoadModel(run));
  json report;
  report["recipe"] = recipe.name();
  report["model"] = recipe.model().path();
  report["device"] = device.str();
  report["steps"] = json::array();
  for (int i = 0; i < recipe.steps_size(); ++i) {
    ASSIGN_OR_RETURN(json part, RunStep(recipe, i, run));
    report["steps"].push_back(std::move(part));
  }
  report["metrics"] = run.metrics;
  if (const std::optional<double> peak = PeakMemoryMiB()) report["peak_memory_mib"] = std::round(*peak * 10) / 10;

  RunSummary summary;
  summary.metrics = run.metrics;
  summary.report_json = report.dump(2);
  RETURN_IF_ERROR(run.WriteArtifact("report.json", summary.report_json));
  RETURN_IF_ERROR(staging.Commit(run.artifacts()));
  summary.artifacts = run.artifacts();
  return summary;
}

}  // namespace qopt
