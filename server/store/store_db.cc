#include "store/store_db.h"

#include <openssl/rand.h>

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "qopt/v1/service.pb.h"
#include "status.h"

namespace qopt::server {
namespace {

static_assert(v1::SUCCEEDED == 3 && v1::FAILED == 4 && v1::CANCELLED == 5,
              "migration 5's trigger names the final job states by number");

// Schema versions, applied in order; PRAGMA user_version records how many ran. Never edit
// one that has shipped: add the next.
constexpr const char* kMigrations[] = {
    R"sql(
    CREATE TABLE jobs (
      id TEXT PRIMARY KEY,
      tenant TEXT NOT NULL,
      request_id TEXT NOT NULL DEFAULT '',
      state INTEGER NOT NULL,
      priority INTEGER NOT NULL DEFAULT 0,
      recipe BLOB NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      lease_id TEXT NOT NULL DEFAULT '',
      worker_id TEXT NOT NULL DEFAULT '',
      lease_expires_ms INTEGER NOT NULL DEFAULT 0,
      cancel_requested INTEGER NOT NULL DEFAULT 0,
      stage TEXT NOT NULL DEFAULT '',
      progress REAL NOT NULL DEFAULT 0,
      eta REAL NOT NULL DEFAULT 0,
      error TEXT NOT NULL DEFAULT '',
      report TEXT NOT NULL DEFAULT '',
      created_ms INTEGER NOT NULL,
      updated_ms INTEGER NOT NULL,
      next_seq INTEGER NOT NULL DEFAULT 1
    );
    CREATE UNIQUE INDEX jobs_request ON jobs(tenant, request_id) WHERE request_id != '';
    CREATE INDEX jobs_queue ON jobs(state, priority DESC);
    CREATE TABLE events (
      job_id TEXT NOT NULL REFERENCES jobs(id),
      seq INTEGER NOT NULL,
      unix_ms INTEGER NOT NULL,
      state INTEGER NOT NULL,
      stage TEXT NOT NULL,
      progress REAL NOT NULL,
      eta REAL NOT NULL,
      message TEXT NOT NULL,
      PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE artifacts (
      job_id TEXT NOT NULL REFERENCES jobs(id),
      name TEXT NOT NULL,
      sha256 TEXT NOT NULL,
      size INTEGER NOT NULL,
      PRIMARY KEY (job_id, name)
    );
    )sql",
    // Named models and datasets, blob ownership per tenant, and each job's input blobs
    // (for storage accounting and deletion).
    R"sql(
    CREATE TABLE tenant_blobs (
      tenant TEXT NOT NULL,
      sha256 TEXT NOT NULL,
      size INTEGER NOT NULL,
      created_ms INTEGER NOT NULL,
      PRIMARY KEY (tenant, sha256)
    );
    CREATE INDEX tenant_blobs_sha ON tenant_blobs(sha256);
    CREATE TABLE records (
      tenant TEXT NOT NULL,
      kind TEXT NOT NULL,
      name TEXT NOT NULL,
      sha256 TEXT NOT NULL,
      size INTEGER NOT NULL,
      labels_sha256 TEXT NOT NULL DEFAULT '',
      format TEXT NOT NULL DEFAULT '',
      description TEXT NOT NULL DEFAULT '',
      created_ms INTEGER NOT NULL,
      PRIMARY KEY (tenant, kind, name)
    );
    CREATE TABLE job_inputs (
      job_id TEXT NOT NULL REFERENCES jobs(id),
      sha256 TEXT NOT NULL,
      PRIMARY KEY (job_id, sha256)
    );
    CREATE INDEX job_inputs_sha ON job_inputs(sha256);
    CREATE INDEX artifacts_sha ON artifacts(sha256);
    )sql",
    // What each job does (RecipeTechnique), for metrics by technique; the figures an
    // event carries (a serialized JobEvent holding only its metrics).
    R"sql(
    ALTER TABLE jobs ADD COLUMN technique TEXT NOT NULL DEFAULT '';
    ALTER TABLE events ADD COLUMN metrics BLOB NOT NULL DEFAULT '';
    )sql",
    // Issue 11: the device a job needs ('cpu' or 'cuda'), its wall-time limit and when its
    // current lease began; every lease issued with the hash of its secret token, so a
    // worker's calls are scoped to its own lease (and a token of a lease that ended is
    // recognised as such).
    R"sql(
    ALTER TABLE jobs ADD COLUMN device_kind TEXT NOT NULL DEFAULT 'cpu';
    ALTER TABLE jobs ADD COLUMN time_limit_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN leased_ms INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_tenant_state ON jobs(tenant, state);
    CREATE TABLE leases (
      token_sha256 TEXT PRIMARY KEY,
      job_id TEXT NOT NULL REFERENCES jobs(id),
      lease_id TEXT NOT NULL,
      worker_id TEXT NOT NULL,
      issued_ms INTEGER NOT NULL
    );
    CREATE INDEX leases_job ON leases(job_id);
    )sql",
    // The latest epoch checkpoint of a job that trains (PutCheckpoint), which a job queued
    // again after losing its worker hands to the next one. Only a job that may still run
    // keeps it: the trigger drops it with every change to a final state (3 SUCCEEDED,
    // 4 FAILED, 5 CANCELLED), whichever statement makes it; garbage collection then removes
    // the file unless something else refers to it.
    R"sql(
    ALTER TABLE jobs ADD COLUMN checkpoint_sha256 TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN checkpoint_size INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_checkpoint ON jobs(checkpoint_sha256);
    CREATE TRIGGER jobs_end_drops_checkpoint AFTER UPDATE OF state ON jobs
      WHEN NEW.state IN (3, 4, 5) AND NEW.checkpoint_sha256 != ''
    BEGIN
      UPDATE jobs SET checkpoint_sha256 = '', checkpoint_size = 0 WHERE id = NEW.id;
    END;
    )sql",
    // Issue 16: the report's metrics (a JSON object: the last evaluation's figures) beside
    // the report, so a listing shows top-1 without reading whole reports; jobs that
    // succeeded before get theirs from their reports.
    R"sql(
    ALTER TABLE jobs ADD COLUMN metrics TEXT NOT NULL DEFAULT '';
    UPDATE jobs SET metrics = COALESCE(json_extract(report, '$.metrics'), '')
      WHERE report != '' AND json_valid(report);
    )sql",
};

}  // namespace

absl::StatusOr<std::shared_ptr<StoreDb>> StoreDb::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto db, Database::Open(path));
  std::shared_ptr<StoreDb> store(new StoreDb(std::move(db)));
  RETURN_IF_ERROR(store->Migrate());
  return store;
}

absl::Status StoreDb::Migrate() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t total = static_cast<int64_t>(std::size(kMigrations));
  for (;;) {
    bool done = false;
    // Reads the version inside the write transaction, so two processes opening the same
    // file cannot both apply a migration.
    RETURN_IF_ERROR(Transaction([&]() -> absl::Status {
      ASSIGN_OR_RETURN(Statement version, db_->Prepare("PRAGMA user_version"));
      ASSIGN_OR_RETURN(bool row, version.Step());
      const int64_t applied = row ? version.Int(0) : 0;
      if (applied > total) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the database has schema version ", applied, " but this qopt-server knows only ", total,
            "; run a newer qopt-server"));
      }
      if (applied == total) {
        done = true;
        return absl::OkStatus();
      }
      RETURN_IF_ERROR(Annotate(db_->Exec(kMigrations[applied]),
                               absl::StrCat("schema migration ", applied + 1)));
      return db_->Exec(absl::StrCat("PRAGMA user_version = ", applied + 1));
    }));
    if (done) return absl::OkStatus();
  }
}

absl::Status StoreDb::Transaction(const std::function<absl::Status()>& body) {
  RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  if (absl::Status s = body(); !s.ok()) {
    db_->Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return db_->Exec("COMMIT");
}

std::string RandomId(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = prefix;
  for (int i = 0; i < 16; ++i) id += hex[rng() % 16];
  return id;
}

absl::StatusOr<std::string> RandomSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return absl::InternalError("no random bytes for a secret");
  static const char* hex = "0123456789abcdef";
  std::string secret;
  for (unsigned char b : bytes) {
    secret += hex[b >> 4];
    secret += hex[b & 15];
  }
  return secret;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace qopt::server
