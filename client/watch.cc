#include "watch.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "errors.h"
#include "job_format.h"
#include "status.h"

namespace qopt::cli {
namespace {

constexpr int kMaxReconnects = 4;

class EventPrinter {
 public:
  EventPrinter(bool json, bool live) : json_(json), live_(live && !json) {}
  EventPrinter(const EventPrinter&) = delete;
  EventPrinter& operator=(const EventPrinter&) = delete;
  // Leaves the terminal on a fresh line whatever way the watch ends.
  ~EventPrinter() {
    if (bar_drawn_) std::fputs("\n", stderr);
  }

  // A line on stderr that must not end up glued to the progress line.
  void Notice(const std::string& text) {
    if (bar_drawn_) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "%s\n", text.c_str());
    bar_drawn_ = false;
  }

  absl::Status Print(const v1::JobEvent& event) {
    if (json_) {
      ASSIGN_OR_RETURN(std::string line, ToJson(event, /*pretty=*/false));
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      return absl::OkStatus();
    }
    // Without a live line, which shows the stage, each line says its stage itself.
    std::string line = live_ ? event.message() : EventLine(event);
    // Without a live line, progress-only events would flood a log; a change of state or
    // stage is still worth a line.
    if (line.empty() && !live_ && (event.state() != last_state_ || event.stage() != last_stage_)) {
      line = StateName(event.state()) + (event.stage().empty() ? "" : " " + event.stage());
    }
    last_state_ = event.state();
    last_stage_ = event.stage();
    if (!line.empty()) {
      if (bar_drawn_) std::fputs("\r\033[K", stderr);
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    if (live_ && IsFinished(event.state())) {
      // The job's summary follows; a bar frozen at the last percentage would contradict it.
      if (bar_drawn_) std::fputs("\r\033[K", stderr);
      bar_drawn_ = false;
    } else if (live_) {
      std::fprintf(stderr, "\r%s\033[K", ProgressBar(event).c_str());
      std::fflush(stderr);
      bar_drawn_ = true;
    }
    return absl::OkStatus();
  }

 private:
  const bool json_;
  const bool live_;
  bool bar_drawn_ = false;
  v1::JobState last_state_ = v1::JOB_STATE_UNSPECIFIED;
  std::string last_stage_;
};

// The job's state when the server closed the stream without a final event.
absl::StatusOr<v1::JobState> CurrentState(Connection& connection, const std::string& id) {
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.jobs().GetJob(context.get(), request, &job)));
  return job.state();
}

}  // namespace

absl::StatusOr<v1::JobState> WatchJob(Connection& connection, const std::string& id) {
  EventPrinter printer(connection.options().json, isatty(STDERR_FILENO) != 0);
  int64_t after = 0;
  int failures = 0;
  bool ever_received = false;
  while (true) {
    auto context = connection.StreamContext();
    v1::WatchJobRequest request;
    request.set_id(id);
    request.set_after_sequence(after);
    auto reader = connection.jobs().WatchJob(context.get(), request);
    v1::JobEvent event;
    bool received = false;
    while (reader->Read(&event)) {
      received = true;
      ever_received = true;
      // Events are replayed from `after`; a server that resends one must not print twice.
      if (event.sequence() <= after) continue;
      after = event.sequence();
      RETURN_IF_ERROR(printer.Print(event));
      if (IsFinished(event.state())) {
        context->TryCancel();
        static_cast<void>(reader->Finish());  // cancelled by us; the job's state is the answer
        return event.state();
      }
    }
    absl::Status status = FromGrpc(reader->Finish());
    if (status.ok()) {
      ASSIGN_OR_RETURN(v1::JobState state, CurrentState(connection, id));
      if (IsFinished(state)) return state;
    } else if (!absl::IsUnavailable(status) || !ever_received) {
      // Every job has at least its QUEUED event, so a stream that broke before any event
      // means the server is not there at all: fail now rather than after the backoff.
      return status;
    }
    if (received) failures = 0;
    if (++failures > kMaxReconnects) {
      return status.ok() ? absl::UnavailableError("the server keeps closing the event stream")
                         : status;
    }
    const int delay = 1 << (failures - 1);
    printer.Notice(std::string(status.ok() ? "event stream ended" : "connection lost") +
                   ", reconnecting in " + std::to_string(delay) + "s");
    std::this_thread::sleep_for(std::chrono::seconds(delay));
  }
}

int ExitCodeForState(v1::JobState state) {
  switch (state) {
    case v1::SUCCEEDED: return kExitOk;
    case v1::FAILED: return kExitJobFailed;
    case v1::CANCELLED: return kExitJobCancelled;
    default: return kExitRpcError;
  }
}

}  // namespace qopt::cli
