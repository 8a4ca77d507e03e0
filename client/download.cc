#include "download.h"

#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "durable_file.h"
#include "errors.h"
#include "file_name.h"
#include "job_format.h"
#include "sha256.h"
#include "status.h"

namespace qopt::cli {
namespace {

absl::StatusOr<v1::Job> GetJob(Connection& connection, const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_id(job_id);
  v1::Job job;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().GetJob(context.get(), request, &job)));
  return job;
}

absl::StatusOr<v1::Artifact> FindArtifact(Connection& connection, const std::string& job_id,
                                          const std::string& name) {
  ASSIGN_OR_RETURN(v1::Job job, GetJob(connection, job_id));
  for (const v1::Artifact& artifact : job.artifacts()) {
    if (artifact.name() == name) return artifact;
  }
  return absl::NotFoundError(absl::StrCat("job ", job_id, " has no artifact ", name));
}

// Streams `artifact` into `path` via `path`.partial (see DurableFileWriter), kept only once
// its size and sha256 match and it is on disk.
absl::Status Fetch(Connection& connection, const std::string& job_id, const v1::Artifact& artifact,
                   const std::string& path) {
  const std::string& name = artifact.name();
  absl::StatusOr<std::unique_ptr<DurableFileWriter>> file = DurableFileWriter::Create(path);
  if (!file.ok()) return UsageError(std::string(file.status().message()));
  v1::DownloadArtifactRequest request;
  request.set_job_id(job_id);
  request.set_name(name);
  auto context = connection.StreamContext();
  auto reader = connection.jobs().DownloadArtifact(context.get(), request);
  v1::Chunk chunk;
  while (reader->Read(&chunk)) {
    if (absl::Status s = (*file)->Append(std::move(*chunk.mutable_data())); !s.ok()) {
      context->TryCancel();
      static_cast<void>(reader->Finish());  // the local write error is the one to report
      return s;
    }
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  const FileDigest received = (*file)->Digest();
  if (received.sha256 != artifact.sha256() || received.size != artifact.size()) {
    return absl::DataLossError(absl::StrCat(name, ": received ", received.size, " bytes with sha256 ",
                                            received.sha256, ", expected ", artifact.size(),
                                            " bytes with sha256 ", artifact.sha256()));
  }
  return (*file)->Commit();
}

}  // namespace

absl::StatusOr<v1::Artifact> DownloadArtifact(Connection& connection, const std::string& job_id,
                                              const std::string& name, const std::string& path) {
  ASSIGN_OR_RETURN(v1::Artifact artifact, FindArtifact(connection, job_id, name));
  RETURN_IF_ERROR(Fetch(connection, job_id, artifact, path));
  return artifact;
}

absl::StatusOr<std::vector<DownloadedArtifact>> DownloadAllArtifacts(Connection& connection,
                                                                     const std::string& job_id,
                                                                     const std::string& dir) {
  ASSIGN_OR_RETURN(v1::Job job, GetJob(connection, job_id));
  // A running job's artifacts are not all there yet: a partial set must not pass for all.
  if (!IsFinished(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is ", StateName(job.state()), "; its artifacts are complete once it has finished"));
  }
  if (job.artifacts().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " (", StateName(job.state()), ") has no artifacts",
        job.state() == v1::FAILED ? absl::StrCat(": ", FirstLine(job.error())) : ""));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UsageError(absl::StrCat("cannot make folder ", dir, ": ", ec.message()));
  std::vector<DownloadedArtifact> files;
  for (const v1::Artifact& artifact : job.artifacts()) {
    // The server stores plain names only; checked again because the name picks the file.
    if (absl::Status s = CheckPlainFileName("artifact", artifact.name()); !s.ok()) return s;
    const std::string path = (std::filesystem::path(dir) / artifact.name()).string();
    RETURN_IF_ERROR(Fetch(connection, job_id, artifact, path));
    files.push_back({artifact, path});
  }
  return files;
}

}  // namespace qopt::cli
