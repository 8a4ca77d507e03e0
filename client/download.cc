#include "download.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "errors.h"
#include "sha256.h"
#include "status.h"

namespace qopt::cli {
namespace {

absl::StatusOr<v1::Artifact> FindArtifact(Connection& connection, const std::string& job_id,
                                          const std::string& name) {
  v1::GetJobRequest request;
  request.set_id(job_id);
  v1::Job job;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().GetJob(context.get(), request, &job)));
  for (const v1::Artifact& artifact : job.artifacts()) {
    if (artifact.name() == name) return artifact;
  }
  return absl::NotFoundError(absl::StrCat("job ", job_id, " has no artifact ", name));
}

// Fills `partial`; returns the received bytes' sha256.
absl::StatusOr<FileDigest> Receive(Connection& connection, const std::string& job_id,
                                   const std::string& name, const std::string& partial) {
  std::ofstream out(partial, std::ios::binary | std::ios::trunc);
  if (!out) return UsageError(absl::StrCat("cannot write ", partial));
  v1::DownloadArtifactRequest request;
  request.set_job_id(job_id);
  request.set_name(name);
  auto context = connection.StreamContext();
  auto reader = connection.jobs().DownloadArtifact(context.get(), request);
  Sha256 hash;
  FileDigest received;
  v1::Chunk chunk;
  while (reader->Read(&chunk)) {
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    if (!out) {
      context->TryCancel();
      static_cast<void>(reader->Finish());  // the local write error is the one to report
      return absl::ResourceExhaustedError(absl::StrCat("cannot write ", partial));
    }
    hash.Update(chunk.data());
    received.size += static_cast<int64_t>(chunk.data().size());
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish()));
  out.close();
  if (!out) return absl::ResourceExhaustedError(absl::StrCat("cannot write ", partial));
  received.sha256 = hash.HexDigest();
  return received;
}

}  // namespace

absl::StatusOr<v1::Artifact> DownloadArtifact(Connection& connection, const std::string& job_id,
                                              const std::string& name, const std::string& path) {
  ASSIGN_OR_RETURN(v1::Artifact artifact, FindArtifact(connection, job_id, name));
  const std::string partial = path + ".partial";
  absl::StatusOr<FileDigest> received = Receive(connection, job_id, name, partial);
  std::error_code ec;
  if (!received.ok()) {
    std::filesystem::remove(partial, ec);
    return received.status();
  }
  if (received->sha256 != artifact.sha256() || received->size != artifact.size()) {
    std::filesystem::remove(partial, ec);
    return absl::DataLossError(absl::StrCat(name, ": received ", received->size, " bytes with sha256 ",
                                            received->sha256, ", expected ", artifact.size(),
                                            " bytes with sha256 ", artifact.sha256()));
  }
  std::filesystem::rename(partial, path, ec);
  if (ec) return UsageError(absl::StrCat("cannot rename ", partial, " to ", path, ": ", ec.message()));
  return artifact;
}

}  // namespace qopt::cli
