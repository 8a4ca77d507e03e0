// qopt: the command-line client of qopt-server. Argument parsing with CLI11; each
// subcommand is a function in commands.h.
#include <cstdlib>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "catalog_commands.h"
#include "commands.h"
#include "file_text.h"
#include "errors.h"
#include "stream_memory.h"

namespace {

using qopt::cli::Connection;
using Command = std::function<absl::StatusOr<int>(Connection&)>;

CLI::App* AddJobCommand(CLI::App& app, const char* name, const char* help, std::string* job_id) {
  CLI::App* sub = app.add_subcommand(name, help);
  sub->add_option("JOB_ID", *job_id, "Job id, as printed by submit")->required();
  return sub;
}

// `qopt models ...` / `qopt datasets ...`: create, get, list, delete.
void AddRecordCommands(CLI::App& app, qopt::cli::RecordKind kind, Command* command,
                       qopt::cli::RecordArgs* args) {
  using namespace qopt::cli;
  const bool model = kind == RecordKind::kModel;
  CLI::App* group = app.add_subcommand(
      model ? "models" : "datasets",
      model ? "Named models (TorchScript files) that recipes refer to by model.name"
            : "Named datasets that recipes refer to by calibration_data.name / evaluation_data.name");
  group->require_subcommand(1);
  CLI::App* create = group->add_subcommand(
      "create", model ? "Upload a model file (or name a blob) under a name"
                      : "Upload a data file (or name a blob) under a name");
  create->add_option("NAME", args->name, "Record name: [A-Za-z0-9._-], up to 128")->required();
  create->add_option("FILE", args->file, "Local file, or the sha256 of an uploaded blob")->required();
  create->add_option("--description", args->description, "Free text shown by list");
  create->add_flag("--replace", args->replace, "Point an existing name at the new file");
  if (!model) {
    create->add_option("--labels", args->labels, "Labels file (IDX or .npy) or blob sha256");
    create->add_option("--format", args->format, "Data format (default: detect from content)")
        ->check(CLI::IsMember({"auto", "idx", "npy", "npz", "torch"}));
  }
  create->final_callback([=] { *command = [=](Connection& c) { return RunCreateRecord(c, kind, *args); }; });
  CLI::App* get = group->add_subcommand("get", "Show one record");
  get->add_option("NAME", args->name, "Record name")->required();
  get->final_callback([=] { *command = [=](Connection& c) { return RunGetRecord(c, kind, args->name); }; });
  CLI::App* list = group->add_subcommand("list", "List records by name");
  list->final_callback([=] { *command = [=](Connection& c) { return RunListRecords(c, kind); }; });
  CLI::App* del = group->add_subcommand(
      "delete", "Forget a record (its file is freed once no job or record uses it)");
  del->add_option("NAME", args->name, "Record name")->required();
  del->final_callback([=] { *command = [=](Connection& c) { return RunDeleteRecord(c, kind, args->name); }; });
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qopt::cli;
  qopt::KeepStreamBuffersForReuse();  // uploads and downloads stream MiB-sized messages
  CLI::App app{"qopt: submit, follow and fetch model-optimization jobs on a qopt-server"};
  app.footer(
      "Environment:\n"
      "  QOPT_SERVER  default for --server\n"
      "  QOPT_TOKEN   bearer token sent with every call\n"
      "  QOPT_TLS_CA  default for --tls-ca\n"
      "Exit codes: 0 ok, 1 RPC error, 2 usage or input error; watch: 3 job FAILED, 4 CANCELLED\n"
      "Recipe reference (every field, step and rule of step order): docs/recipe.md");
  app.require_subcommand(1);
  // Global options may follow the subcommand: `qopt status job-1 --output json`.
  app.fallthrough();

  ClientOptions options;
  options.server = "127.0.0.1:50051";
  std::string output = "text";
  app.add_option("--server", options.server, "HOST:PORT of qopt-server")
      ->envname("QOPT_SERVER")
      ->capture_default_str();
  std::string tls_ca;
  app.add_option("--tls-ca", tls_ca, "PEM certificate to trust; connects with TLS")
      ->envname("QOPT_TLS_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--output", output, "Output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();

  Command command;
  std::string file, job_id, name, path;
  SubmitArgs submit_args;
  ListArgs list_args;

  CLI::App* upload = app.add_subcommand("upload", "Upload a file as a blob; prints its sha256");
  upload->add_option("FILE", file, "File to upload")->required()->check(CLI::ExistingFile);
  upload->final_callback([&] { command = [&](Connection& c) { return RunUpload(c, file); }; });

  CLI::App* submit = app.add_subcommand(
      "submit", "Upload a recipe's local input files and submit it as a job; prints the job id");
  submit->add_option("RECIPE", submit_args.recipe_path, "Recipe file, JSON or YAML (fields: docs/recipe.md)")
      ->required()
      ->check(CLI::ExistingFile);
  submit->add_option("--model", submit_args.overrides.model, "Model file (replaces model.path)");
  submit->add_option("--data", submit_args.overrides.data,
                     "Calibration data file (replaces calibration_data.path)");
  submit->add_option("--eval-data", submit_args.overrides.eval_data,
                     "Evaluation data file (replaces evaluation_data.path)");
  submit->add_option("--eval-labels", submit_args.overrides.eval_labels,
                     "Evaluation labels file (replaces evaluation_data.labels_path)");
  submit->add_option("--priority", submit_args.priority, "Higher runs first")->capture_default_str();
  submit->add_option("--request-id", submit_args.request_id,
                     "Idempotency key: resubmitting it returns the first job");
  submit->add_flag("--watch", submit_args.watch, "Follow the job until it finishes (as watch)");
  submit->final_callback([&] { command = [&](Connection& c) { return RunSubmit(c, submit_args); }; });

  CLI::App* status = AddJobCommand(app, "status", "Show a job's state, progress and artifacts", &job_id);
  status->final_callback([&] { command = [&](Connection& c) { return RunStatus(c, job_id); }; });

  CLI::App* list = app.add_subcommand(
      "list",
      "List jobs, newest first: id, state, created (local time), how long it ran, name, technique, "
      "top-1 in % (FP32 → quantized), and a failed job's error or a running job's stage");
  list->add_option("--state", list_args.states, "Only jobs in these states (repeat it, or a comma list)")
      ->delimiter(',')
      ->check(CLI::IsMember({"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}, CLI::ignore_case));
  list->add_option("--name", list_args.name, "Only jobs whose recipe name contains this (any case)");
  list->add_option("--page-size", list_args.page_size, "Jobs per request (0 = server default)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  list->final_callback([&] { command = [&](Connection& c) { return RunList(c, list_args); }; });

  CLI::App* watch = AddJobCommand(
      app, "watch", "Follow a job's events until it finishes; exit 0/3/4 for SUCCEEDED/FAILED/CANCELLED",
      &job_id);
  watch->final_callback([&] { command = [&](Connection& c) { return RunWatch(c, job_id); }; });

  CLI::App* cancel = AddJobCommand(app, "cancel", "Cancel a job; prints its new state", &job_id);
  cancel->final_callback([&] { command = [&](Connection& c) { return RunCancel(c, job_id); }; });

  CLI::App* download = AddJobCommand(
      app, "download", "Download a job's artifact, or all of them, verified against their sha256", &job_id);
  bool all_artifacts = false;
  download->add_option("NAME", name, "Artifact name, as listed by status");
  download->add_flag("--all", all_artifacts, "Every artifact of the finished job, into the folder -o");
  download->add_option("-o", path, "Where to write it (default ./NAME); with --all a folder (default ./JOB_ID)");
  download->final_callback([&] {
    command = [&](Connection& c) -> absl::StatusOr<int> {
      if (all_artifacts == !name.empty()) return UsageError("download needs an artifact NAME or --all (not both)");
      if (all_artifacts) return RunDownloadAll(c, job_id, path);
      return RunDownload(c, job_id, name, path);
    };
  });

  CLI::App* del = AddJobCommand(
      app, "delete", "Delete a finished job with its events and artifacts, freeing storage", &job_id);
  del->final_callback([&] { command = [&](Connection& c) { return RunDeleteJob(c, job_id); }; });

  RecordArgs model_args, dataset_args;
  AddRecordCommands(app, RecordKind::kModel, &command, &model_args);
  AddRecordCommands(app, RecordKind::kDataset, &command, &dataset_args);

  CLI::App* usage = app.add_subcommand("usage", "Storage this tenant holds, against its quota");
  usage->final_callback([&] { command = [&](Connection& c) { return RunUsage(c); }; });

  CLI::App* report = AddJobCommand(app, "report", "Print a finished job's JSON report, or download its HTML report", &job_id);
  bool html = false;
  std::string html_path;
  report->add_flag("--html", html, "Download report.html (self-contained: charts of every step) instead");
  report->add_option("-o", html_path, "With --html: where to write it (default ./report.html)");
  report->final_callback([&] {
    command = [&](Connection& c) -> absl::StatusOr<int> {
      if (html) return RunDownload(c, job_id, "report.html", html_path);
      if (!html_path.empty()) return UsageError("-o needs --html (the JSON report prints to stdout)");
      return RunReport(c, job_id);
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 exits 100 and up on parse errors; our contract says 2 for usage errors.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  options.json = output == "json";
  if (const char* token = std::getenv("QOPT_TOKEN")) options.token = token;
  if (!tls_ca.empty()) {
    absl::StatusOr<std::string> pem = qopt::ReadTextFile(tls_ca);
    if (!pem.ok()) return ReportError(UsageError(pem.status().message()));
    options.tls_ca_pem = *pem;
  }
  Connection connection(options);
  absl::StatusOr<int> result = command(connection);
  return result.ok() ? *result : ReportError(result.status());
}
