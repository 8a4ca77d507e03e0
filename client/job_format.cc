#include "job_format.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace qopt::cli {
namespace {

int Percent(double progress) {
  return static_cast<int>(std::floor(std::clamp(progress, 0.0, 1.0) * 100.0));
}

// Columns on a terminal: UTF-8 code points, so "→" counts as one.
size_t DisplayWidth(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

std::string PadRight(std::string text, size_t width) {
  const size_t shown = DisplayWidth(text);
  if (shown < width) text.append(width - shown, ' ');
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
  // A finished job's stage ("done", "failed") only repeats its state.
  if (!job.stage().empty() && !IsFinished(job.state())) absl::StrAppend(&line, " ", job.stage());
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

std::string FormatLocalTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm local{};
  if (localtime_r(&seconds, &local) == nullptr) return "-";
  char text[32];
  return std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M", &local) > 0 ? text : "-";
}

std::string JobDuration(const v1::Job& job, int64_t now_unix_ms) {
  if (job.started_unix_ms() <= 0) return "-";
  const int64_t end = IsFinished(job.state()) ? job.updated_unix_ms() : now_unix_ms;
  return FormatDuration(static_cast<double>(end - job.started_unix_ms()) / 1000.0);
}

std::string TopOne(const v1::Job& job) {
  const auto& metrics = job.metrics();
  const auto percent = [](double fraction) { return absl::StrFormat("%.1f", fraction * 100.0); };
  const auto quantized = metrics.find("top1");
  if (quantized == metrics.end()) return "-";
  const auto fp32 = metrics.find("fp32_top1");
  if (fp32 == metrics.end()) return percent(quantized->second);
  return absl::StrCat(percent(fp32->second), " → ", percent(quantized->second));
}

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string JobTable(const std::vector<v1::Job>& jobs, int64_t now_unix_ms) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "CREATED", "DURATION", "NAME", "TECHNIQUE", "TOP-1 FP32 → Q", "STAGE / ERROR"}};
  for (const v1::Job& job : jobs) {
    std::string last;
    if (job.state() == v1::FAILED) {
      last = absl::StrCat("error: ", FirstLine(job.error()));
    } else if (job.state() == v1::RUNNING) {
      last = absl::StrCat(job.stage(), job.stage().empty() ? "" : " ", Percent(job.progress()), "%");
      if (job.eta_seconds() > 0) absl::StrAppend(&last, " (eta ", FormatDuration(job.eta_seconds()), ")");
    } else if (job.state() == v1::QUEUED) {
      last = job.stage();
    }
    rows.push_back({job.id(), StateName(job.state()), FormatLocalTime(job.created_unix_ms()),
                    JobDuration(job, now_unix_ms), job.recipe().name().empty() ? "-" : job.recipe().name(),
                    job.technique().empty() ? "-" : job.technique(), TopOne(job), last});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], DisplayWidth(row[i]));
  }
  std::string table;
  for (const auto& row : rows) {
    std::string line;
    // The last column is free text: not padded, so lines end where their text does.
    for (size_t i = 0; i + 1 < row.size(); ++i) absl::StrAppend(&line, PadRight(row[i], widths[i]), "  ");
    absl::StrAppend(&line, row.back());
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&table, table.empty() ? "" : "\n", line);
  }
  return table;
}

std::string EventLine(const v1::JobEvent& event) {
  const std::string& message = event.message();
  if (event.state() != v1::RUNNING || event.stage().empty() || message.empty() ||
      absl::StartsWith(message, event.stage())) {
    return message;
  }
  // A log line the engine wrote names its own step ("calibrate: 8 batches"): the event's
  // stage is where the job was when the line was sent, which may be a later step.
  const size_t label = message.find_first_not_of(
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
  if (label != std::string::npos && label > 0 && message[label] == ':') return message;
  return absl::StrCat(event.stage(), ": ", message);
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
