#include "catalog_commands.h"

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "errors.h"
#include "job_format.h"
#include "status.h"
#include "upload.h"

namespace qopt::cli {
namespace {

void PrintLine(const std::string& text) { std::printf("%s\n", text.c_str()); }

// A local file is uploaded; a sha256 of an uploaded blob is used as it is.
absl::StatusOr<std::string> BlobFor(Connection& connection, const std::string& what,
                                    const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(file, ec)) {
    ASSIGN_OR_RETURN(FileDigest blob, UploadFile(connection, file));
    return blob.sha256;
  }
  if (IsSha256Hex(file)) return file;
  return UsageError(absl::StrCat(what, ": no such file: ", file));
}

std::string HumanBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

// Both kinds travel as v1::Dataset here (a model is a dataset without labels/format).
v1::Dataset AsRecord(const v1::Model& m) {
  v1::Dataset r;
  r.set_name(m.name());
  r.set_sha256(m.sha256());
  r.set_size(m.size());
  r.set_description(m.description());
  r.set_created_unix_ms(m.created_unix_ms());
  return r;
}

absl::Status PrintRecord(const Connection& connection, RecordKind kind, const v1::Dataset& r) {
  if (connection.options().json) {
    v1::Model model;
    const google::protobuf::Message* message = &r;
    if (kind == RecordKind::kModel) {
      model.set_name(r.name());
      model.set_sha256(r.sha256());
      model.set_size(r.size());
      model.set_description(r.description());
      model.set_created_unix_ms(r.created_unix_ms());
      message = &model;
    }
    ASSIGN_OR_RETURN(std::string json, ToJson(*message, /*pretty=*/false));
    PrintLine(json);
    return absl::OkStatus();
  }
  std::string line = absl::StrFormat("%-24s %s  %10s", r.name(), r.sha256().substr(0, 12), HumanBytes(r.size()));
  if (!r.labels_sha256().empty()) absl::StrAppend(&line, "  labels ", r.labels_sha256().substr(0, 12));
  if (!r.format().empty()) absl::StrAppend(&line, "  ", r.format());
  if (!r.description().empty()) absl::StrAppend(&line, "  ", r.description());
  PrintLine(line);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> RunCreateRecord(Connection& connection, RecordKind kind, const RecordArgs& args) {
  v1::Dataset record;
  record.set_name(args.name);
  ASSIGN_OR_RETURN(*record.mutable_sha256(), BlobFor(connection, "FILE", args.file));
  record.set_description(args.description);
  auto context = connection.UnaryContext();
  if (kind == RecordKind::kModel) {
    v1::CreateModelRequest request;
    request.mutable_model()->set_name(record.name());
    request.mutable_model()->set_sha256(record.sha256());
    request.mutable_model()->set_description(record.description());
    request.set_replace(args.replace);
    v1::Model model;
    RETURN_IF_ERROR(FromGrpc(connection.models().CreateModel(context.get(), request, &model)));
    record = AsRecord(model);
  } else {
    if (!args.labels.empty()) {
      ASSIGN_OR_RETURN(*record.mutable_labels_sha256(), BlobFor(connection, "--labels", args.labels));
    }
    record.set_format(args.format);
    v1::CreateDatasetRequest request;
    *request.mutable_dataset() = record;
    request.set_replace(args.replace);
    RETURN_IF_ERROR(FromGrpc(connection.datasets().CreateDataset(context.get(), request, &record)));
  }
  RETURN_IF_ERROR(PrintRecord(connection, kind, record));
  return kExitOk;
}

absl::StatusOr<int> RunGetRecord(Connection& connection, RecordKind kind, const std::string& name) {
  auto context = connection.UnaryContext();
  v1::Dataset record;
  if (kind == RecordKind::kModel) {
    v1::GetModelRequest request;
    request.set_name(name);
    v1::Model model;
    RETURN_IF_ERROR(FromGrpc(connection.models().GetModel(context.get(), request, &model)));
    record = AsRecord(model);
  } else {
    v1::GetDatasetRequest request;
    request.set_name(name);
    RETURN_IF_ERROR(FromGrpc(connection.datasets().GetDataset(context.get(), request, &record)));
  }
  RETURN_IF_ERROR(PrintRecord(connection, kind, record));
  return kExitOk;
}

absl::StatusOr<int> RunListRecords(Connection& connection, RecordKind kind) {
  std::string token;
  do {
    auto context = connection.UnaryContext();
    std::vector<v1::Dataset> page;
    std::string next;
    if (kind == RecordKind::kModel) {
      v1::ListModelsRequest request;
      request.set_page_token(token);
      v1::ListModelsResponse response;
      RETURN_IF_ERROR(FromGrpc(connection.models().ListModels(context.get(), request, &response)));
      for (const v1::Model& m : response.models()) page.push_back(AsRecord(m));
      next = response.next_page_token();
    } else {
      v1::ListDatasetsRequest request;
      request.set_page_token(token);
      v1::ListDatasetsResponse response;
      RETURN_IF_ERROR(FromGrpc(connection.datasets().ListDatasets(context.get(), request, &response)));
      page.assign(response.datasets().begin(), response.datasets().end());
      next = response.next_page_token();
    }
    for (const v1::Dataset& r : page) RETURN_IF_ERROR(PrintRecord(connection, kind, r));
    // A server that hands back the token it was given would otherwise loop forever.
    if (next == token) break;
    token = next;
  } while (!token.empty());
  return kExitOk;
}

absl::StatusOr<int> RunDeleteRecord(Connection& connection, RecordKind kind, const std::string& name) {
  auto context = connection.UnaryContext();
  v1::Empty empty;
  if (kind == RecordKind::kModel) {
    v1::DeleteModelRequest request;
    request.set_name(name);
    RETURN_IF_ERROR(FromGrpc(connection.models().DeleteModel(context.get(), request, &empty)));
  } else {
    v1::DeleteDatasetRequest request;
    request.set_name(name);
    RETURN_IF_ERROR(FromGrpc(connection.datasets().DeleteDataset(context.get(), request, &empty)));
  }
  if (!connection.options().json) PrintLine(absl::StrCat("deleted ", name));
  return kExitOk;
}

absl::StatusOr<int> RunUsage(Connection& connection) {
  auto context = connection.UnaryContext();
  v1::Usage usage;
  RETURN_IF_ERROR(FromGrpc(connection.blobs().GetUsage(context.get(), v1::GetUsageRequest(), &usage)));
  if (connection.options().json) {
    PrintLine(nlohmann::json{{"used_bytes", usage.used_bytes()}, {"quota_bytes", usage.quota_bytes()}}.dump());
  } else if (usage.quota_bytes() > 0) {
    PrintLine(absl::StrFormat("%s of %s (%.0f%%)", HumanBytes(usage.used_bytes()),
                              HumanBytes(usage.quota_bytes()),
                              100.0 * static_cast<double>(usage.used_bytes()) / static_cast<double>(usage.quota_bytes())));
  } else {
    PrintLine(absl::StrCat(HumanBytes(usage.used_bytes()), " (no quota)"));
  }
  return kExitOk;
}

absl::StatusOr<int> RunDeleteJob(Connection& connection, const std::string& job_id) {
  v1::DeleteJobRequest request;
  request.set_id(job_id);
  v1::Empty empty;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().DeleteJob(context.get(), request, &empty)));
  if (!connection.options().json) PrintLine(absl::StrCat("deleted ", job_id));
  return kExitOk;
}

}  // namespace qopt::cli
