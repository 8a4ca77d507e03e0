#include "commands.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

#include "download.h"
#include "file_name.h"
#include "errors.h"
#include "job_format.h"
#include "report_json.h"
#include "status.h"
#include "upload.h"
#include "watch.h"

namespace qopt::cli {
namespace {

void PrintLine(const std::string& text) { std::printf("%s\n", text.c_str()); }

absl::Status PrintJob(const Connection& connection, const v1::Job& job, bool pretty = true) {
  if (!connection.options().json) {
    PrintLine(JobDetails(job));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string json, ToJson(job, pretty));
  PrintLine(json);
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> GetJob(Connection& connection, const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_id(job_id);
  v1::Job job;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().GetJob(context.get(), request, &job)));
  return job;
}

}  // namespace

absl::StatusOr<int> RunUpload(Connection& connection, const std::string& file) {
  ASSIGN_OR_RETURN(FileDigest blob, UploadFile(connection, file));
  if (connection.options().json) {
    PrintLine(nlohmann::json{{"sha256", blob.sha256}, {"size", blob.size}}.dump());
  } else {
    PrintLine(blob.sha256);
  }
  return kExitOk;
}

absl::StatusOr<int> RunSubmit(Connection& connection, const SubmitArgs& args) {
  v1::SubmitJobRequest request;
  ASSIGN_OR_RETURN(*request.mutable_recipe(), LoadRecipe(args.recipe_path, args.overrides));
  RETURN_IF_ERROR(UploadRecipeInputs(connection, request.mutable_recipe()));
  request.set_priority(args.priority);
  request.set_request_id(args.request_id);
  v1::Job job;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().SubmitJob(context.get(), request, &job)));
  if (connection.options().json) {
    // Followed by event lines when watching: keep every record on one line.
    RETURN_IF_ERROR(PrintJob(connection, job, /*pretty=*/!args.watch));
  } else {
    PrintLine(job.id());
  }
  std::fflush(stdout);
  if (!args.watch) return kExitOk;
  return RunWatch(connection, job.id());
}

absl::StatusOr<int> RunStatus(Connection& connection, const std::string& job_id) {
  ASSIGN_OR_RETURN(v1::Job job, GetJob(connection, job_id));
  RETURN_IF_ERROR(PrintJob(connection, job));
  return kExitOk;
}

absl::StatusOr<int> RunList(Connection& connection, const ListArgs& args) {
  v1::ListJobsRequest request;
  for (const std::string& state : args.states) {
    v1::JobState parsed;
    if (!v1::JobState_Parse(absl::AsciiStrToUpper(state), &parsed)) return UsageError("unknown job state " + state);
    request.add_states(parsed);
  }
  request.set_page_size(args.page_size);
  const std::string name = absl::AsciiStrToLower(args.name);
  std::vector<v1::Job> jobs;
  while (true) {
    v1::ListJobsResponse response;
    auto context = connection.UnaryContext();
    RETURN_IF_ERROR(FromGrpc(connection.jobs().ListJobs(context.get(), request, &response)));
    for (const v1::Job& job : response.jobs()) {
      if (absl::StrContains(absl::AsciiStrToLower(job.recipe().name()), name)) jobs.push_back(job);
    }
    // A server that hands back the token it was given would otherwise loop forever.
    if (response.next_page_token().empty() || response.next_page_token() == request.page_token()) {
      break;
    }
    request.set_page_token(response.next_page_token());
  }
  if (!connection.options().json) {
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    PrintLine(JobTable(jobs, now));
    return kExitOk;
  }
  nlohmann::json all = nlohmann::json::array();
  for (const v1::Job& job : jobs) {
    ASSIGN_OR_RETURN(std::string json, ToJson(job, /*pretty=*/false));
    all.push_back(nlohmann::json::parse(json));
  }
  PrintLine(all.dump(2));
  return kExitOk;
}

absl::StatusOr<int> RunWatch(Connection& connection, const std::string& job_id) {
  ASSIGN_OR_RETURN(v1::JobState state, WatchJob(connection, job_id));
  if (!connection.options().json) {
    // The events said how it ended; the job says what came of it (error, artifacts).
    absl::StatusOr<v1::Job> job = GetJob(connection, job_id);
    PrintLine(job.ok() ? JobDetails(*job) : job_id + " " + StateName(state));
  }
  return ExitCodeForState(state);
}

absl::StatusOr<int> RunCancel(Connection& connection, const std::string& job_id) {
  v1::CancelJobRequest request;
  request.set_id(job_id);
  v1::Job job;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().CancelJob(context.get(), request, &job)));
  if (connection.options().json) {
    RETURN_IF_ERROR(PrintJob(connection, job));
  } else {
    PrintLine(JobSummary(job));
  }
  return kExitOk;
}

absl::StatusOr<int> RunDownload(Connection& connection, const std::string& job_id,
                                const std::string& name, const std::string& path) {
  // An artifact name never picks a folder: names with separators (or hidden names) are
  // refused, as the server refuses to store them.
  if (absl::Status s = CheckPlainFileName("artifact", name); !s.ok()) return UsageError(std::string(s.message()));
  const std::string target = path.empty() ? name : path;
  ASSIGN_OR_RETURN(v1::Artifact artifact, DownloadArtifact(connection, job_id, name, target));
  if (connection.options().json) {
    PrintLine(nlohmann::json{{"path", target},
                             {"name", artifact.name()},
                             {"sha256", artifact.sha256()},
                             {"size", artifact.size()}}
                  .dump());
  } else {
    PrintLine(target);
  }
  return kExitOk;
}

absl::StatusOr<int> RunDownloadAll(Connection& connection, const std::string& job_id,
                                   const std::string& dir) {
  const std::string target = dir.empty() ? job_id : dir;
  ASSIGN_OR_RETURN(std::vector<DownloadedArtifact> files, DownloadAllArtifacts(connection, job_id, target));
  if (connection.options().json) {
    nlohmann::json all = nlohmann::json::array();
    for (const DownloadedArtifact& file : files) {
      all.push_back({{"path", file.path},
                     {"name", file.artifact.name()},
                     {"sha256", file.artifact.sha256()},
                     {"size", file.artifact.size()}});
    }
    PrintLine(all.dump(2));
  } else {
    for (const DownloadedArtifact& file : files) PrintLine(file.path);
  }
  return kExitOk;
}

absl::StatusOr<int> RunReport(Connection& connection, const std::string& job_id) {
  v1::GetReportRequest request;
  request.set_id(job_id);
  v1::Report report;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().GetReport(context.get(), request, &report)));
  const std::string json = ReportToJson(report);
  std::fputs(json.c_str(), stdout);
  if (json.empty() || json.back() != '\n') std::fputs("\n", stdout);
  return kExitOk;
}

}  // namespace qopt::cli
