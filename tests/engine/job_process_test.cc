// Jobs in sandboxed child processes: the confinement itself (in a forked child), a real
// recipe run through `qopt-worker job`, cancellation, and children that die.
#include "sandbox/job_process.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <thread>

#include <google/protobuf/text_format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace qopt::sandbox {
namespace {

namespace fs = std::filesystem;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

// Each check the confined child makes; its exit code is the first that failed (0: all held).
enum Check : int {
  kEntered = 1, kInetSocket, kUnixSocket, kWriteInside, kWriteOutside, kExec, kUnshare, kFileLimit, kUid,
  kThreads,
};

TEST(SandboxTest, ConfinedProcessCannotReachOut) {
  ::qopt::testing::TempDir tmp;
  const std::string job_dir = tmp.File("job"), outside = tmp.File("outside");
  fs::create_directories(job_dir);
  fs::create_directories(outside);
  if (geteuid() == 0) {
    ASSERT_EQ(chown(job_dir.c_str(), 65534, 65534), 0);
    ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
    ASSERT_EQ(chmod(outside.c_str(), 0777), 0);  // only Landlock stands in the way
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SandboxOptions o;
    o.job_dir = job_dir;
    const absl::StatusOr<SandboxReport> r = EnterSandbox(o);
    if (!r.ok()) _exit(kEntered);
    if (socket(AF_INET, SOCK_STREAM, 0) >= 0 || errno != EACCES) _exit(kInetSocket);
    if (socket(AF_UNIX, SOCK_STREAM, 0) >= 0) _exit(kUnixSocket);
    const int inside = open((job_dir + "/a").c_str(), O_CREAT | O_WRONLY, 0600);
    if (inside < 0 || write(inside, "x", 1) != 1) _exit(kWriteInside);
    const bool landlock = r->Describe().find("Landlock)") != std::string::npos;
    if (landlock && open((outside + "/b").c_str(), O_CREAT | O_WRONLY, 0600) >= 0) _exit(kWriteOutside);
    char* const argv[] = {const_cast<char*>("true"), nullptr};
    execv("/bin/true", argv);
    if (errno != EPERM) _exit(kExec);
    if (unshare(CLONE_NEWNS) == 0) _exit(kUnshare);
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur != 256) _exit(kFileLimit);
    if (getuid() == 0 || geteuid() == 0) _exit(kUid);
    int sum = 0;
    std::thread t([&] { sum = 1; });
    t.join();
    if (sum != 1) _exit(kThreads);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "first check that failed (enum Check)";
  EXPECT_FALSE(fs::exists(outside + "/b"));
}

JobProcessOptions Options(const std::string& job_dir) {
  JobProcessOptions o;
  o.job_dir = job_dir;
  o.program = QOPT_TEST_WORKER;
  o.limits.job_dir = job_dir;
  return o;
}

TEST(JobProcessTest, RunsARecipeInTheSandboxedChild) {
  ::qopt::testing::TempDir tmp;
  const std::string job_dir = tmp.File("job");
  fs::create_directories(job_dir);
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  v1::Recipe recipe;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "name: 'sandboxed' model { path: '" + ::qopt::testing::SourcePath("zoo/small_cnn.pt") +
          "' } steps { fold_batch_norm {} } steps { export { torchscript: true } }",
      &recipe));
  std::vector<Progress> seen;
  RunOptions run;
  run.on_progress = [&](const Progress& p) { seen.push_back(p); };
  const absl::StatusOr<RunSummary> summary = RunJobProcess(recipe, run, Options(job_dir));
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_THAT(summary->artifacts, ::testing::Contains("model.pt"));
  EXPECT_TRUE(fs::exists(job_dir + "/out/model.pt"));
  EXPECT_THAT(summary->report_json, HasSubstr("\"fold_batch_norm\""));
  bool confined = false, step_report = false;
  for (const Progress& p : seen) {
    confined |= p.log && p.message.find("sandbox: rlimits") == 0 && p.message.find("seccomp") != std::string::npos;
    step_report |= p.step_report && p.step_report->step() == "fold_batch_norm";
  }
  EXPECT_TRUE(confined) << "no sandbox line among " << seen.size() << " progress frames";
  EXPECT_TRUE(step_report);
}

TEST(JobProcessTest, ErrorsOfTheJobComeBackAsTheirStatus) {
  ::qopt::testing::TempDir tmp;
  const std::string job_dir = tmp.File("job");
  fs::create_directories(job_dir);
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  v1::Recipe recipe;
  recipe.mutable_model()->set_path(::qopt::testing::Fixture("hostile_from_file.pt"));
  recipe.add_steps()->mutable_fold_batch_norm();
  // The child reads its own link to the model; the error names the caller's path.
  const absl::StatusOr<RunSummary> refused = RunJobProcess(recipe, RunOptions{}, Options(job_dir));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("aten::from_file")));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr(::qopt::testing::Fixture("hostile_from_file.pt")));
}

TEST(JobProcessTest, CancellationKillsTheChild) {
  ::qopt::testing::TempDir tmp;
  const std::string job_dir = tmp.File("job");
  fs::create_directories(job_dir);
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  v1::Recipe recipe;
  recipe.mutable_model()->set_path(::qopt::testing::SourcePath("zoo/small_cnn.pt"));
  recipe.add_steps()->mutable_fold_batch_norm();
  RunOptions run;
  run.cancelled = [] { return true; };
  EXPECT_THAT(RunJobProcess(recipe, run, Options(job_dir)), StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
}

// A child that dies by a signal, or exits without a result: the job fails with what it
// said last, and the caller (the worker) carries on.
TEST(JobProcessTest, AChildThatDiesFailsTheJobWithItsLastLine) {
  ::qopt::testing::TempDir tmp;
  const std::string job_dir = tmp.File("job");
  fs::create_directories(job_dir);
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  const std::string crasher = tmp.File("crasher.sh"), quitter = tmp.File("quitter.sh");
  std::ofstream(crasher) << "#!/bin/sh\necho 'frame #0: noise' >&2\n"
                            "echo \"terminate called: what():  index out of range\" >&2\nkill -SEGV $$\n";
  std::ofstream(quitter) << "#!/bin/sh\necho 'error: no result today' >&2\nexit 3\n";
  ASSERT_EQ(chmod(crasher.c_str(), 0755), 0);
  ASSERT_EQ(chmod(quitter.c_str(), 0755), 0);
  v1::Recipe recipe;
  JobProcessOptions o = Options(job_dir);
  o.program = crasher;
  EXPECT_THAT(RunJobProcess(recipe, RunOptions{}, o),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("killed by SIGSEGV; its last error line: terminate "
                                                              "called: what():  index out of range")));
  o.program = quitter;
  EXPECT_THAT(RunJobProcess(recipe, RunOptions{}, o),
              StatusIs(absl::StatusCode::kInternal,
                       HasSubstr("exited with code 3 without a result; its last error line: error: no result today")));
}

}  // namespace
}  // namespace qopt::sandbox

namespace qopt::sandbox {
namespace {

v1::Recipe FoldAndExport() {
  v1::Recipe recipe;
  recipe.set_name("zygote");
  recipe.mutable_model()->set_path(::qopt::testing::SourcePath("zoo/small_cnn.pt"));
  recipe.add_steps()->mutable_fold_batch_norm();
  recipe.add_steps()->mutable_export_()->set_torchscript(true);
  return recipe;
}

// Job children forked from a zygote: the same confinement and results as exec'd ones, and
// a child that dies (here: an address-space limit far below what LibTorch needs) fails its
// job only; the zygote serves the next.
TEST(ZygoteTest, ForkedChildrenRunJobsAndOneThatDiesFailsOnlyItsJob) {
  ::qopt::testing::TempDir tmp;
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  absl::StatusOr<std::unique_ptr<Zygote>> zygote = Zygote::Start(QOPT_TEST_WORKER);
  ASSERT_TRUE(zygote.ok()) << zygote.status();
  auto run_job = [&](const std::string& name, int64_t memory_mb, std::vector<Progress>* seen) {
    const std::string job_dir = tmp.File(name);
    fs::create_directories(job_dir);
    JobProcessOptions o = Options(job_dir);
    o.zygote = zygote->get();
    o.limits.memory_mb = memory_mb;
    RunOptions run;
    run.on_progress = [seen](const Progress& p) { seen->push_back(p); };
    return RunJobProcess(FoldAndExport(), run, o);
  };
  std::vector<Progress> seen;
  absl::StatusOr<RunSummary> first = run_job("first", 0, &seen);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(first->artifacts, ::testing::Contains("model.pt"));
  EXPECT_TRUE(fs::exists(tmp.File("first/out/model.pt")));
  bool confined = false;
  for (const Progress& p : seen) confined |= p.log && p.message.find("sandbox: rlimits") == 0;
  EXPECT_TRUE(confined);

  std::vector<Progress> ignored;
  const absl::StatusOr<RunSummary> starved = run_job("starved", 8, &ignored);
  EXPECT_FALSE(starved.ok());
  // Depending on where the first allocation fails: an error the job reports, or its death.
  EXPECT_THAT(std::string(starved.status().message()),
              ::testing::AnyOf(HasSubstr("out of memory"), HasSubstr("the job process")));

  EXPECT_TRUE((*zygote)->alive());
  const absl::StatusOr<RunSummary> again = run_job("again", 0, &ignored);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(fs::exists(tmp.File("again/out/model.pt")));
}

TEST(ZygoteTest, CancellationKillsTheForkedChild) {
  ::qopt::testing::TempDir tmp;
  ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
  absl::StatusOr<std::unique_ptr<Zygote>> zygote = Zygote::Start(QOPT_TEST_WORKER);
  ASSERT_TRUE(zygote.ok()) << zygote.status();
  const std::string job_dir = tmp.File("job");
  fs::create_directories(job_dir);
  JobProcessOptions o = Options(job_dir);
  o.zygote = zygote->get();
  bool started = false;
  RunOptions run;
  run.on_progress = [&](const Progress&) { started = true; };
  run.cancelled = [&] { return started; };  // as soon as the child has said anything
  EXPECT_THAT(RunJobProcess(FoldAndExport(), run, o), StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  EXPECT_FALSE(fs::exists(job_dir + "/out/model.pt"));
  EXPECT_TRUE((*zygote)->alive());
}

}  // namespace
}  // namespace qopt::sandbox
