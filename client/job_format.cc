#include "job_format.h"

#include <algorithm>
#include <cmath>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"

namespace qopt::cli {
namespace {

int Percent(double progress) {
  return static_cast<int>(std::floor(std::clamp(progress, 0.0, 1.0) * 100.0));
}

std::string PadRight(std::string text, size_t width) {
  if (text.size() < width) text.append(width - text.size(), ' ');
  return text;
}

std::string TwoDigits(long value) { return value < 10 ? absl::StrCat("0", value) : absl::StrCat(value); }

}  // namespace

std::string StateName(v1::JobState state) { return v1::JobState_Name(state); }

bool IsFinished(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

std::string FormatDuration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m", TwoDigits(s % 60), "s");
  return absl::StrCat(s / 3600, "h", TwoDigits(s / 60 % 60), "m");
}

std::string JobSummary(const v1::Job& job) {
  std::string line = absl::StrCat(job.id(), " ", StateName(job.state()));
  if (!job.stage().empty()) absl::StrAppend(&line, " ", job.stage());
  if (job.state() == v1::RUNNING) {
    absl::StrAppend(&line, " ", Percent(job.progress()), "%");
    if (job.eta_seconds() > 0) absl::StrAppend(&line, " (eta ", FormatDuration(job.eta_seconds()), ")");
  }
  return line;
}

std::string JobDetails(const v1::Job& job) {
  std::string text = JobSummary(job);
  if (!job.error().empty()) absl::StrAppend(&text, "\n  error: ", job.error());
  for (const v1::Artifact& artifact : job.artifacts()) {
    absl::StrAppend(&text, "\n  artifact ", artifact.name(), "  ", artifact.size(), " bytes  sha256 ",
                    artifact.sha256());
  }
  return text;
}

std::string JobListLine(const v1::Job& job) {
  std::string progress = job.stage();
  if (job.state() == v1::RUNNING) {
    absl::StrAppend(&progress, progress.empty() ? "" : " ", Percent(job.progress()), "%");
  }
  return absl::StrCat(PadRight(job.id(), 20), " ", PadRight(StateName(job.state()), 10), " ",
                      PadRight(progress, 16), " ", job.recipe().name());
}

std::string ProgressBar(const v1::JobEvent& event) {
  constexpr int kWidth = 20;
  const int percent = Percent(event.progress());
  const int filled = percent * kWidth / 100;
  std::string bar = absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, '-'), "] ");
  absl::StrAppend(&bar, percent < 10 ? "  " : percent < 100 ? " " : "", percent, "% ",
                  event.stage().empty() ? StateName(event.state()) : event.stage());
  if (event.eta_seconds() > 0) absl::StrAppend(&bar, "  eta ", FormatDuration(event.eta_seconds()));
  return bar;
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return absl::InternalError(status.message().as_string());
  // Pretty output from protobuf ends with a newline, compact output does not; callers
  // add their own.
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

}  // namespace qopt::cli
