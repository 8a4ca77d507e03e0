#include "store/job_store.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "recipe_check.h"
#include "sha256.h"
#include "status.h"

namespace qopt::server {
namespace internal_store {

constexpr char kJobColumns[] =
    "id, state, priority, recipe, attempts, stage, progress, eta, error, created_ms, updated_ms, "
    "leased_ms, metrics";

// The metrics column: a JSON object of numbers, non-finite ones as protobuf's JSON mapping
// writes them ("NaN", "Infinity"). Anything else is left out: it is a summary of the
// report, which stays the authority.
void ParseMetrics(const std::string& text, google::protobuf::Map<std::string, double>* metrics) {
  if (text.empty()) return;
  const nlohmann::json object = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!object.is_object()) return;
  for (const auto& [name, value] : object.items()) {
    double number = 0;
    if (value.is_number()) {
      (*metrics)[name] = value.get<double>();
    } else if (value.is_string() && absl::SimpleAtod(value.get<std::string>(), &number)) {
      (*metrics)[name] = number;
    }
  }
}

// The stage a queued job shows: why it waits, when a worker of some kind must come.
std::string QueuedStage(const std::string& device_kind) {
  return device_kind == "cpu" ? "queued" : absl::StrCat("waiting for a worker with ", device_kind);
}

std::string TokenHash(const std::string& token) {
  Sha256 hash;
  hash.Update(token);
  return hash.HexDigest();
}

}  // namespace internal_store

std::string DeviceKind(const v1::Recipe& recipe) {
  return absl::StartsWith(recipe.device(), "cuda") ? "cuda" : "cpu";
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path, Options options) {
  ASSIGN_OR_RETURN(std::shared_ptr<StoreDb> db, StoreDb::Open(path));
  return Open(std::move(db), options);
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(std::shared_ptr<StoreDb> db, Options options) {
  return std::unique_ptr<JobStore>(new JobStore(std::move(db), options));
}

absl::Status JobStore::Transaction(const std::function<absl::Status()>& body) {
  return store_->Transaction(body);
}

absl::StatusOr<v1::Job> JobStore::Load(const std::string& id) {
  ASSIGN_OR_RETURN(Statement st,
                   db_->Prepare(absl::StrCat("SELECT ", internal_store::kJobColumns,
                                             " FROM jobs WHERE id = ?")));
  st.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  v1::Job job;
  job.set_id(st.Text(0));
  job.set_state(static_cast<v1::JobState>(st.Int(1)));
  job.set_priority(static_cast<int32_t>(st.Int(2)));
  job.mutable_recipe()->ParseFromString(st.Blob(3));
  job.set_attempts(static_cast<int32_t>(st.Int(4)));
  job.set_stage(st.Text(5));
  job.set_progress(st.Double(6));
  job.set_eta_seconds(st.Double(7));
  job.set_error(st.Text(8));
  job.set_created_unix_ms(st.Int(9));
  job.set_updated_unix_ms(st.Int(10));
  job.set_started_unix_ms(st.Int(11));
  internal_store::ParseMetrics(st.Text(12), job.mutable_metrics());
  job.set_technique(RecipeTechnique(job.recipe()));
  ASSIGN_OR_RETURN(Statement arts, db_->Prepare(
      "SELECT name, sha256, size FROM artifacts WHERE job_id = ? ORDER BY name"));
  arts.Bind(1, id);
  for (;;) {
    ASSIGN_OR_RETURN(bool more, arts.Step());
    if (!more) break;
    v1::Artifact* a = job.add_artifacts();
    a->set_name(arts.Text(0));
    a->set_sha256(arts.Text(1));
    a->set_size(arts.Int(2));
  }
  return job;
}

absl::Status JobStore::AppendEvent(const std::string& id, v1::JobState state,
                                   const std::string& stage, double progress, double eta,
                                   const std::string& message,
                                   const v1::JobEvent* carried) {
  ASSIGN_OR_RETURN(Statement seq, db_->Prepare(
      "UPDATE jobs SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq - 1"));
  seq.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, seq.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  const int64_t n = seq.Int(0);
  RETURN_IF_ERROR(seq.Run());
  ASSIGN_OR_RETURN(Statement ins, db_->Prepare(
      "INSERT INTO events (job_id, seq, unix_ms, state, stage, progress, eta, message, metrics) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  // What an event carries beyond its columns (figures, a step's report) is a serialized
  // JobEvent holding only those, so new kinds need no new column.
  std::string figures;
  if (carried != nullptr) figures = carried->SerializeAsString();
  ins.Bind(1, id).Bind(2, n).Bind(3, NowUnixMs()).Bind(4, static_cast<int64_t>(state))
      .Bind(5, stage).Bind(6, progress).Bind(7, eta).Bind(8, message).BindBlob(9, figures);
  return ins.Run();
}

absl::StatusOr<v1::Job> JobStore::Submit(const std::string& tenant, const v1::Recipe& recipe,
                                         int priority, const std::string& request_id,
                                         const std::vector<std::string>& inputs) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!request_id.empty()) {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare(
        "SELECT id FROM jobs WHERE tenant = ? AND request_id = ?"));
    st.Bind(1, tenant).Bind(2, request_id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) return Load(st.Text(0));
  }
  const std::string id = RandomId("job-");
  const int64_t now = NowUnixMs();
  const std::string device_kind = DeviceKind(recipe);
  const std::string stage = internal_store::QueuedStage(device_kind);
  // The recipe's own limit, capped by the server's.
  int64_t time_limit_ms = int64_t{recipe.time_limit_seconds()} * 1000;
  if (options_.max_job_ms > 0 && (time_limit_ms == 0 || time_limit_ms > options_.max_job_ms)) {
    time_limit_ms = options_.max_job_ms;
  }
  RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
    ASSIGN_OR_RETURN(Statement st, db_->Prepare(
        "INSERT INTO jobs (id, tenant, request_id, state, priority, recipe, created_ms, updated_ms, "
        "technique, device_kind, time_limit_ms, stage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    st.Bind(1, id).Bind(2, tenant).Bind(3, request_id).Bind(4, static_cast<int64_t>(v1::QUEUED))
        .Bind(5, static_cast<int64_t>(priority)).BindBlob(6, recipe.SerializeAsString())
        .Bind(7, now).Bind(8, now).Bind(9, RecipeTechnique(recipe)).Bind(10, device_kind)
        .Bind(11, time_limit_ms).Bind(12, stage);
    RETURN_IF_ERROR(st.Run());
    for (const std::string& sha : inputs) {
      ASSIGN_OR_RETURN(Statement in, db_->Prepare(
          "INSERT OR IGNORE INTO job_inputs (job_id, sha256) VALUES (?, ?)"));
      in.Bind(1, id).Bind(2, sha);
      RETURN_IF_ERROR(in.Run());
    }
    return AppendEvent(id, v1::QUEUED, stage, 0.0, 0.0, "job queued");
  }));
  changed_.notify_all();
  return Load(id);
}

absl::StatusOr<v1::Job> JobStore::Get(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT tenant FROM jobs WHERE id = ?"));
  st.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  // Another tenant's job is reported exactly like a missing one.
  if (!row || st.Text(0) != tenant) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return Load(id);
}

absl::StatusOr<v1::ListJobsResponse> JobStore::List(const std::string& tenant,
                                                    const std::vector<v1::JobState>& states,
                                                    int page_size, const std::string& page_token) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t offset = 0;
  if (!page_token.empty() && !absl::SimpleAtoi(page_token, &offset)) {
    return absl::InvalidArgumentError(absl::StrCat("bad page_token '", page_token, "'"));
  }
  const int64_t limit = page_size > 0 ? std::min(page_size, 1000) : 100;
  std::vector<int64_t> wanted;
  for (v1::JobState state : states) {
    if (state != v1::JOB_STATE_UNSPECIFIED) wanted.push_back(static_cast<int64_t>(state));
  }
  // One placeholder per state: the values stay parameters.
  const std::string in_states =
      wanted.empty() ? ""
                     : absl::StrCat(" AND state IN (",
                                    absl::StrJoin(std::vector<std::string>(wanted.size(), "?"), ", "), ")");
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(absl::StrCat(
      "SELECT id FROM jobs WHERE tenant = ?", in_states, " ORDER BY rowid DESC LIMIT ? OFFSET ?")));
  int index = 1;
  st.Bind(index++, tenant);
  for (int64_t state : wanted) st.Bind(index++, state);
  st.Bind(index++, limit + 1).Bind(index++, offset);
  v1::ListJobsResponse out;
  int64_t n = 0;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    if (n++ == limit) {
      out.set_next_page_token(std::to_string(offset + limit));
      break;
    }
    ASSIGN_OR_RETURN(*out.add_jobs(), Load(st.Text(0)));
  }
  return out;
}

absl::StatusOr<v1::Job> JobStore::Cancel(const std::string& tenant, const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT tenant, state FROM jobs WHERE id = ?"));
    st.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row || st.Text(0) != tenant) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
    const auto state = static_cast<v1::JobState>(st.Int(1));
    if (IsFinal(state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " already ended (", v1::JobState_Name(state), ")"));
    }
    RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement up, db_->Prepare(
          "UPDATE jobs SET cancel_requested = 1, state = CASE WHEN state = ? THEN ? ELSE state END, "
          "updated_ms = ? WHERE id = ?"));
      up.Bind(1, static_cast<int64_t>(v1::QUEUED)).Bind(2, static_cast<int64_t>(v1::CANCELLED))
          .Bind(3, NowUnixMs()).Bind(4, id);
      RETURN_IF_ERROR(up.Run());
      if (state == v1::QUEUED) return AppendEvent(id, v1::CANCELLED, "cancelled", 0, 0, "cancelled");
      return AppendEvent(id, v1::RUNNING, "cancelling", 0, 0, "cancellation requested");
    }));
    if (state == v1::QUEUED) NotifyFinished(id);
  }
  changed_.notify_all();
  std::lock_guard<std::mutex> lock(mu_);
  return Load(id);
}

absl::StatusOr<std::vector<std::string>> JobStore::Delete(const std::string& tenant,
                                                          const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT tenant, state FROM jobs WHERE id = ?"));
  st.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row || st.Text(0) != tenant) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  const auto state = static_cast<v1::JobState>(st.Int(1));
  if (!IsFinal(state)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", id, " is ", v1::JobState_Name(state), "; cancel it before deleting it"));
  }
  std::vector<std::string> blobs;
  RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
    for (const char* sql : {"DELETE FROM job_inputs WHERE job_id = ? RETURNING sha256",
                            "DELETE FROM artifacts WHERE job_id = ? RETURNING sha256"}) {
      ASSIGN_OR_RETURN(Statement del, db_->Prepare(sql));
      del.Bind(1, id);
      for (;;) {
        ASSIGN_OR_RETURN(bool more, del.Step());
        if (!more) break;
        blobs.push_back(del.Text(0));
      }
    }
    for (const char* sql : {"DELETE FROM events WHERE job_id = ?", "DELETE FROM leases WHERE job_id = ?",
                            "DELETE FROM jobs WHERE id = ?"}) {
      ASSIGN_OR_RETURN(Statement del, db_->Prepare(sql));
      del.Bind(1, id);
      RETURN_IF_ERROR(del.Run());
    }
    return absl::OkStatus();
  }));
  return blobs;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::Events(const std::string& tenant,
                                                           const std::string& id, int64_t after) {
  ASSIGN_OR_RETURN(v1::Job job, Get(tenant, id));
  (void)job;
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(
      "SELECT seq, unix_ms, state, stage, progress, eta, message, metrics FROM events "
      "WHERE job_id = ? AND seq > ? ORDER BY seq"));
  st.Bind(1, id).Bind(2, after);
  std::vector<v1::JobEvent> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    v1::JobEvent e;
    e.set_sequence(st.Int(0));
    e.set_unix_ms(st.Int(1));
    e.set_state(static_cast<v1::JobState>(st.Int(2)));
    e.set_stage(st.Text(3));
    e.set_progress(st.Double(4));
    e.set_eta_seconds(st.Double(5));
    e.set_message(st.Text(6));
    if (const std::string figures = st.Blob(7); !figures.empty()) {
      v1::JobEvent holder;
      if (holder.ParseFromString(figures)) {
        *e.mutable_metrics() = holder.metrics();
        if (holder.has_step_report()) *e.mutable_step_report() = holder.step_report();
        if (holder.has_layer_row()) *e.mutable_layer_row() = holder.layer_row();
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

void JobStore::WaitForEvent(const std::string& id, int64_t after, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  auto has_news = [&] {
    auto st = db_->Prepare("SELECT next_seq FROM jobs WHERE id = ?");
    if (!st.ok()) return true;
    st->Bind(1, id);
    auto row = st->Step();
    return !row.ok() || !*row || st->Int(0) - 1 > after;
  };
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), has_news);
}

absl::StatusOr<std::string> JobStore::Report(const std::string& tenant, const std::string& id) {
  ASSIGN_OR_RETURN(v1::Job job, Get(tenant, id));
  if (job.state() != v1::SUCCEEDED) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " has no report: it is ",
                                                      v1::JobState_Name(job.state())));
  }
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT report FROM jobs WHERE id = ?"));
  st.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Text(0) : std::string();
}

absl::StatusOr<v1::Artifact> JobStore::GetArtifact(const std::string& tenant, const std::string& id,
                                                   const std::string& name) {
  ASSIGN_OR_RETURN(v1::Job job, Get(tenant, id));
  for (const auto& a : job.artifacts()) {
    if (a.name() == name) return a;
  }
  return absl::NotFoundError(absl::StrCat("job ", id, " has no artifact '", name, "'"));
}

absl::StatusOr<LeaseGrant> JobStore::Lease(const std::string& worker_id,
                                            const std::vector<std::string>& device_kinds, int wait_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  const auto offers = [&](const char* kind) {
    return static_cast<int64_t>(std::find(device_kinds.begin(), device_kinds.end(), kind) != device_kinds.end());
  };
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Fair share: among the jobs this worker can serve, those of the tenant with the
    // fewest running jobs come first, so a tenant's long queue cannot starve another's.
    ASSIGN_OR_RETURN(Statement pick, db_->Prepare(
        "SELECT j.id, j.checkpoint_sha256 FROM jobs j LEFT JOIN "
        "  (SELECT tenant, COUNT(*) AS n FROM jobs WHERE state = ?1 GROUP BY tenant) r ON r.tenant = j.tenant "
        "WHERE j.state = ?2 AND ((j.device_kind = 'cpu' AND ?3) OR (j.device_kind = 'cuda' AND ?4)) "
        "  AND (?5 = 0 OR COALESCE(r.n, 0) < ?5) "
        "ORDER BY COALESCE(r.n, 0), j.priority DESC, j.rowid LIMIT 1"));
    pick.Bind(1, static_cast<int64_t>(v1::RUNNING)).Bind(2, static_cast<int64_t>(v1::QUEUED))
        .Bind(3, offers("cpu")).Bind(4, offers("cuda"))
        .Bind(5, static_cast<int64_t>(options_.max_running_per_tenant));
    ASSIGN_OR_RETURN(bool row, pick.Step());
    if (row) {
      const std::string id = pick.Text(0);
      LeaseGrant grant;
      grant.checkpoint_sha256 = pick.Text(1);
      RETURN_IF_ERROR(pick.Run());
      grant.job_id = id;
      grant.lease_id = RandomId("lease-");
      ASSIGN_OR_RETURN(grant.token, RandomSecret());
      const int64_t now = NowUnixMs();
      grant.expires_unix_ms = now + options_.lease_ms;
      RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
        ASSIGN_OR_RETURN(Statement up, db_->Prepare(
            "UPDATE jobs SET state = ?, lease_id = ?, worker_id = ?, lease_expires_ms = ?, "
            "attempts = attempts + 1, stage = 'leased', progress = 0, updated_ms = ?, leased_ms = ? "
            "WHERE id = ? AND state = ?"));
        up.Bind(1, static_cast<int64_t>(v1::RUNNING)).Bind(2, grant.lease_id).Bind(3, worker_id)
            .Bind(4, grant.expires_unix_ms).Bind(5, now).Bind(6, now).Bind(7, id)
            .Bind(8, static_cast<int64_t>(v1::QUEUED));
        RETURN_IF_ERROR(up.Run());
        ASSIGN_OR_RETURN(Statement rec, db_->Prepare(
            "INSERT INTO leases (token_sha256, job_id, lease_id, worker_id, issued_ms) VALUES (?, ?, ?, ?, ?)"));
        rec.Bind(1, internal_store::TokenHash(grant.token)).Bind(2, id).Bind(3, grant.lease_id)
            .Bind(4, worker_id).Bind(5, now);
        RETURN_IF_ERROR(rec.Run());
        return AppendEvent(id, v1::RUNNING, "leased", 0, 0,
                           absl::StrCat("leased by ", worker_id,
                                        grant.checkpoint_sha256.empty() ? "" : "; it resumes from the job's checkpoint"));
      }));
      ASSIGN_OR_RETURN(v1::Job job, Load(id));
      grant.recipe = job.recipe();
      lock.unlock();
      changed_.notify_all();
      return grant;
    }
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      return absl::NotFoundError("no queued job");
    }
  }
}

absl::StatusOr<LeaseScope> JobStore::LeaseOfToken(const std::string& token) {
  if (token.empty()) {
    return absl::UnauthenticatedError("this call needs the lease's token (qopt-lease-token metadata)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT job_id, lease_id FROM leases WHERE token_sha256 = ?"));
  st.Bind(1, internal_store::TokenHash(token));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::UnauthenticatedError("unknown lease token");
  LeaseScope scope{st.Text(0), st.Text(1)};
  RETURN_IF_ERROR(st.Run());
  RETURN_IF_ERROR(CheckLease(scope.job_id, scope.lease_id));
  return scope;
}

absl::StatusOr<bool> JobStore::Reads(const std::string& job_id, const std::string& sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(
      "SELECT 1 FROM job_inputs WHERE job_id = ?1 AND sha256 = ?2 "
      "UNION SELECT 1 FROM jobs WHERE id = ?1 AND checkpoint_sha256 = ?2 AND ?2 != ''"));
  st.Bind(1, job_id).Bind(2, sha256);
  return st.Step();
}

void JobStore::NotifyFinished(const std::string& id) {
  if (!on_finished_) return;
  if (auto job = Load(id); job.ok()) on_finished_(*job);
}

absl::Status JobStore::CheckLease(const std::string& job_id, const std::string& lease_id) {
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT state, lease_id FROM jobs WHERE id = ?"));
  st.Bind(1, job_id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  if (st.Int(0) != v1::RUNNING || st.Text(1) != lease_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("lease ", lease_id, " on job ", job_id, " is no longer held"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<bool, int64_t>> JobStore::Heartbeat(const v1::HeartbeatRequest& hb) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(CheckLease(hb.job_id(), hb.lease_id()));
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT cancel_requested FROM jobs WHERE id = ?"));
    st.Bind(1, hb.job_id());
    ASSIGN_OR_RETURN(bool row, st.Step());
    const bool cancel = row && st.Int(0) != 0;
    RETURN_IF_ERROR(st.Run());
    const int64_t expires = NowUnixMs() + options_.lease_ms;
    RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement up, db_->Prepare(
          "UPDATE jobs SET lease_expires_ms = ?, stage = ?, progress = ?, eta = ?, updated_ms = ?, "
          "state = CASE WHEN cancel_requested = 1 THEN ? ELSE state END WHERE id = ?"));
      up.Bind(1, expires).Bind(2, hb.stage()).Bind(3, hb.progress()).Bind(4, hb.eta_seconds())
          .Bind(5, NowUnixMs()).Bind(6, static_cast<int64_t>(v1::CANCELLED)).Bind(7, hb.job_id());
      RETURN_IF_ERROR(up.Run());
      for (int i = 0; i < hb.log_lines_size(); ++i) {
        v1::JobEvent carried;
        auto row = hb.log_rows().find(i);
        if (row != hb.log_rows().end()) *carried.mutable_layer_row() = row->second;
        RETURN_IF_ERROR(AppendEvent(hb.job_id(), v1::RUNNING, hb.stage(), hb.progress(), hb.eta_seconds(),
                                    hb.log_lines(i), row != hb.log_rows().end() ? &carried : nullptr));
      }
      for (const v1::StepReport& step : hb.step_reports()) {
        v1::JobEvent carried;
        *carried.mutable_step_report() = step;
        RETURN_IF_ERROR(AppendEvent(hb.job_id(), v1::RUNNING, step.step(), hb.progress(), hb.eta_seconds(),
                                    absl::StrFormat("%s finished in %.1f s", step.step(), step.seconds()), &carried));
      }
      if (cancel) return AppendEvent(hb.job_id(), v1::CANCELLED, "cancelled", hb.progress(), 0, "cancelled");
      v1::JobEvent figures;
      *figures.mutable_metrics() = hb.metrics();
      return AppendEvent(hb.job_id(), v1::RUNNING, hb.stage(), hb.progress(), hb.eta_seconds(),
                         hb.message(), hb.metrics().empty() ? nullptr : &figures);
    }));
    if (cancel) NotifyFinished(hb.job_id());
    changed_.notify_all();
    return std::make_pair(cancel, expires);
  }
}

absl::Status JobStore::AddArtifact(const std::string& job_id, const std::string& lease_id,
                                   const v1::Artifact& artifact,
                                   const std::function<absl::Status()>& publish) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckLease(job_id, lease_id));
  if (publish) RETURN_IF_ERROR(publish());
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(
      "INSERT OR REPLACE INTO artifacts (job_id, name, sha256, size) VALUES (?, ?, ?, ?)"));
  st.Bind(1, job_id).Bind(2, artifact.name()).Bind(3, artifact.sha256()).Bind(4, artifact.size());
  return st.Run();
}

absl::StatusOr<std::string> JobStore::SetCheckpoint(const std::string& job_id, const std::string& lease_id,
                                                    const v1::CheckpointHeader& checkpoint,
                                                    const std::function<absl::Status()>& publish) {
  std::string replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(CheckLease(job_id, lease_id));
    ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT checkpoint_sha256, stage, progress, eta FROM jobs WHERE id = ?"));
    st.Bind(1, job_id);
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
    replaced = st.Text(0) == checkpoint.sha256() ? "" : st.Text(0);
    const std::string stage = st.Text(1);
    const double progress = st.Double(2), eta = st.Double(3);
    RETURN_IF_ERROR(st.Run());
    if (publish) RETURN_IF_ERROR(publish());
    RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement up, db_->Prepare(
          "UPDATE jobs SET checkpoint_sha256 = ?, checkpoint_size = ? WHERE id = ?"));
      up.Bind(1, checkpoint.sha256()).Bind(2, checkpoint.size()).Bind(3, job_id);
      RETURN_IF_ERROR(up.Run());
      return AppendEvent(job_id, v1::RUNNING, stage, progress, eta,
                         absl::StrCat("checkpoint stored (", checkpoint.size(),
                                      " bytes); if the job loses its worker, the next one resumes from it"));
    }));
  }
  changed_.notify_all();
  return replaced;
}

absl::StatusOr<std::string> JobStore::Checkpoint(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT checkpoint_sha256 FROM jobs WHERE id = ?"));
  st.Bind(1, job_id);
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return st.Text(0);
}

absl::Status JobStore::Complete(const std::string& job_id, const std::string& lease_id,
                                const std::string& report_json) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(CheckLease(job_id, lease_id));
    RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
      // The metrics are copied out of the report as the migration that added their column
      // did; a report that is not JSON keeps none (GetReport says what is wrong with it).
      ASSIGN_OR_RETURN(Statement up, db_->Prepare(
          "UPDATE jobs SET state = ?1, report = ?2, stage = 'done', progress = 1, eta = 0, "
          "lease_id = '', updated_ms = ?3, "
          "metrics = CASE WHEN json_valid(?2) THEN COALESCE(json_extract(?2, '$.metrics'), '') ELSE '' END "
          "WHERE id = ?4"));
      up.Bind(1, static_cast<int64_t>(v1::SUCCEEDED)).Bind(2, report_json).Bind(3, NowUnixMs())
          .Bind(4, job_id);
      RETURN_IF_ERROR(up.Run());
      return AppendEvent(job_id, v1::SUCCEEDED, "done", 1.0, 0.0, "succeeded");
    }));
    NotifyFinished(job_id);
  }
  changed_.notify_all();
  return absl::OkStatus();
}

absl::Status JobStore::Fail(const std::string& job_id, const std::string& lease_id,
                            const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(CheckLease(job_id, lease_id));
    RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement up, db_->Prepare(
          "UPDATE jobs SET state = ?, error = ?, stage = 'failed', lease_id = '', updated_ms = ? WHERE id = ?"));
      up.Bind(1, static_cast<int64_t>(v1::FAILED)).Bind(2, error).Bind(3, NowUnixMs()).Bind(4, job_id);
      RETURN_IF_ERROR(up.Run());
      return AppendEvent(job_id, v1::FAILED, "failed", 0.0, 0.0, error);
    }));
    NotifyFinished(job_id);
  }
  changed_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<int> JobStore::ExpireLeases() {
  int expired = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(Statement st, db_->Prepare(
        "SELECT id, attempts, cancel_requested, device_kind FROM jobs WHERE state = ? AND lease_expires_ms < ?"));
    st.Bind(1, static_cast<int64_t>(v1::RUNNING)).Bind(2, NowUnixMs());
    struct Stale {
      std::string id;
      int64_t attempts;
      bool cancel;
      std::string device_kind;
    };
    std::vector<Stale> stale;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      stale.push_back({st.Text(0), st.Int(1), st.Int(2) != 0, st.Text(3)});
    }
    for (const auto& [id, attempts, cancel, device_kind] : stale) {
      const bool give_up = attempts >= options_.max_attempts;
      // A job cancelled while its worker was lost ends cancelled, not queued again.
      const v1::JobState next = cancel ? v1::CANCELLED : (give_up ? v1::FAILED : v1::QUEUED);
      RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
        ASSIGN_OR_RETURN(Statement up, db_->Prepare(
            "UPDATE jobs SET state = ?, lease_id = '', error = ?, stage = ?, updated_ms = ? "
            "WHERE id = ? AND state = ?"));
        const std::string error = next == v1::FAILED
                                      ? absl::StrCat("worker lost ", attempts, " times (lease expired)")
                                      : "";
        const std::string stage = next == v1::QUEUED ? internal_store::QueuedStage(device_kind)
                                                     : next == v1::FAILED ? "failed" : "cancelled";
        up.Bind(1, static_cast<int64_t>(next)).Bind(2, error).Bind(3, stage)
            .Bind(4, NowUnixMs()).Bind(5, id).Bind(6, static_cast<int64_t>(v1::RUNNING));
        RETURN_IF_ERROR(up.Run());
        switch (next) {
          case v1::CANCELLED: return AppendEvent(id, next, stage, 0, 0, "cancelled");
          case v1::FAILED: return AppendEvent(id, next, stage, 0, 0, error);
          default: return AppendEvent(id, next, stage, 0, 0, "lease expired; queued again");
        }
      }));
      if (next != v1::QUEUED) NotifyFinished(id);
      ++expired;
    }
  }
  if (expired > 0) changed_.notify_all();
  return expired;
}

absl::StatusOr<int> JobStore::EnforceTimeLimits() {
  int stopped = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(Statement st, db_->Prepare(
        "SELECT id, time_limit_ms FROM jobs WHERE state = ? AND time_limit_ms > 0 AND leased_ms + time_limit_ms < ?"));
    st.Bind(1, static_cast<int64_t>(v1::RUNNING)).Bind(2, NowUnixMs());
    std::vector<std::pair<std::string, int64_t>> over;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      over.emplace_back(st.Text(0), st.Int(1));
    }
    for (const auto& [id, limit_ms] : over) {
      const std::string error = absl::StrFormat(
          "time limit of %g s exceeded; the job was stopped (recipe time_limit_seconds, capped by the "
          "server's --max-job-seconds)", limit_ms / 1000.0);
      RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
        ASSIGN_OR_RETURN(Statement up, db_->Prepare(
            "UPDATE jobs SET state = ?, lease_id = '', error = ?, stage = 'failed', updated_ms = ? "
            "WHERE id = ? AND state = ?"));
        up.Bind(1, static_cast<int64_t>(v1::FAILED)).Bind(2, error).Bind(3, NowUnixMs()).Bind(4, id)
            .Bind(5, static_cast<int64_t>(v1::RUNNING));
        RETURN_IF_ERROR(up.Run());
        return AppendEvent(id, v1::FAILED, "failed", 0, 0, error);
      }));
      NotifyFinished(id);
      ++stopped;
    }
  }
  if (stopped > 0) changed_.notify_all();
  return stopped;
}

absl::StatusOr<std::vector<std::pair<v1::JobState, int64_t>>> JobStore::CountByState() {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  std::vector<std::pair<v1::JobState, int64_t>> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.emplace_back(static_cast<v1::JobState>(st.Int(0)), st.Int(1));
  }
  return out;
}

absl::StatusOr<std::vector<JobStore::TechniqueCount>> JobStore::CountByTechnique() {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement st, db_->Prepare(
      "SELECT state, technique, COUNT(*) FROM jobs GROUP BY state, technique"));
  std::vector<TechniqueCount> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back({static_cast<v1::JobState>(st.Int(0)), st.Text(1), st.Int(2)});
  }
  return out;
}

}  // namespace qopt::server
