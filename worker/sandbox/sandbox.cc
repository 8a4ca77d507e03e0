#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "status.h"

namespace qopt::sandbox {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat("sandbox: ", what, ": ", std::strerror(errno)));
}

absl::Status SetLimit(int resource, int64_t value, const char* name) {
  const rlimit limit{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
  if (setrlimit(resource, &limit) != 0) return Errno(absl::StrCat("setrlimit ", name));
  return absl::OkStatus();
}

absl::Status ApplyLimits(const SandboxOptions& o) {
  if (o.memory_mb > 0) RETURN_IF_ERROR(SetLimit(RLIMIT_AS, o.memory_mb << 20, "RLIMIT_AS"));
  if (o.cpu_seconds > 0) RETURN_IF_ERROR(SetLimit(RLIMIT_CPU, o.cpu_seconds, "RLIMIT_CPU"));
  RETURN_IF_ERROR(SetLimit(RLIMIT_FSIZE, o.max_file_mb << 20, "RLIMIT_FSIZE"));
  RETURN_IF_ERROR(SetLimit(RLIMIT_NOFILE, o.max_open_files, "RLIMIT_NOFILE"));
  RETURN_IF_ERROR(SetLimit(RLIMIT_NPROC, o.max_processes, "RLIMIT_NPROC"));
  return SetLimit(RLIMIT_CORE, 0, "RLIMIT_CORE");
}

// A network namespace of its own has only a loopback device that is down: no route to
// anything. As root it is one call; otherwise an unprivileged user namespace may allow it.
bool LeaveNetwork() {
  if (unshare(CLONE_NEWNET) == 0) return true;
  return geteuid() != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0;
}

absl::Status DropRoot(const SandboxOptions& o) {
  if (setgroups(0, nullptr) != 0) return Errno("setgroups");
  if (setresgid(o.gid, o.gid, o.gid) != 0) return Errno("setresgid");
  if (setresuid(o.uid, o.uid, o.uid) != 0) return Errno("setresuid");
  if (setresuid(0, 0, 0) == 0) return absl::InternalError("sandbox: could regain root after dropping it");
  return absl::OkStatus();
}

// Landlock: every right that changes the file system is handled, and granted beneath the
// job's folder only. Reading stays allowed (models, data and libraries are read).
// Returns false where the kernel has no Landlock.
absl::StatusOr<bool> RestrictWrites(const std::string& job_dir) {
  const long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) return false;
  uint64_t writes = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                    LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
                    LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
  if (abi >= 2) writes |= LANDLOCK_ACCESS_FS_REFER;
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
  if (abi >= 3) writes |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = writes;
  const int ruleset = static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0));
  if (ruleset < 0) return Errno("landlock_create_ruleset");
  const int dir = open(job_dir.c_str(), O_PATH | O_CLOEXEC);
  if (dir < 0) {
    close(ruleset);
    return Errno(absl::StrCat("open job folder"));
  }
  landlock_path_beneath_attr beneath{};
  beneath.allowed_access = writes;
  beneath.parent_fd = dir;
  const bool added = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0) == 0;
  close(dir);
  if (!added) {
    close(ruleset);
    return Errno("landlock_add_rule");
  }
  const bool restricted = syscall(SYS_landlock_restrict_self, ruleset, 0) == 0;
  close(ruleset);
  if (!restricted) return Errno("landlock_restrict_self");
  return true;
}

// Calls a job never needs. Denied with EPERM (EACCES for sockets), so LibTorch sees an
// ordinary failure; clone3 answers ENOSYS so threads fall back to clone, whose namespace
// flags are checked.
absl::Status InstallSeccomp() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return absl::InternalError("sandbox: seccomp_init failed");
  const int denied[] = {
      SCMP_SYS(socket), SCMP_SYS(socketpair), SCMP_SYS(connect), SCMP_SYS(bind), SCMP_SYS(listen),
      SCMP_SYS(accept), SCMP_SYS(accept4), SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(ptrace),
      SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(mount), SCMP_SYS(umount2),
      SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns), SCMP_SYS(kexec_load),
      SCMP_SYS(kexec_file_load), SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module),
      SCMP_SYS(bpf), SCMP_SYS(perf_event_open), SCMP_SYS(keyctl), SCMP_SYS(add_key), SCMP_SYS(request_key),
      SCMP_SYS(acct), SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(reboot), SCMP_SYS(sethostname),
      SCMP_SYS(setdomainname), SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(open_by_handle_at),
      SCMP_SYS(name_to_handle_at), SCMP_SYS(userfaultfd), SCMP_SYS(fanotify_init), SCMP_SYS(syslog),
      SCMP_SYS(quotactl), SCMP_SYS(mknod), SCMP_SYS(mknodat), SCMP_SYS(setuid), SCMP_SYS(setgid),
      SCMP_SYS(setreuid), SCMP_SYS(setregid), SCMP_SYS(setresuid), SCMP_SYS(setresgid), SCMP_SYS(setgroups),
      SCMP_SYS(setfsuid), SCMP_SYS(setfsgid), SCMP_SYS(capset), SCMP_SYS(vhangup), SCMP_SYS(lookup_dcookie),
      SCMP_SYS(fsopen), SCMP_SYS(fsmount), SCMP_SYS(move_mount), SCMP_SYS(open_tree),
  };
  int rc = 0;
  for (int call : denied) {
    const bool socket_call = call == SCMP_SYS(socket) || call == SCMP_SYS(socketpair) ||
                             call == SCMP_SYS(connect) || call == SCMP_SYS(bind);
    rc = rc ? rc : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(socket_call ? EACCES : EPERM), call, 0);
  }
  rc = rc ? rc : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
                        CLONE_NEWCGROUP}) {
    rc = rc ? rc : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
  }
  rc = rc ? rc : seccomp_load(ctx);
  seccomp_release(ctx);
  if (rc != 0) return absl::InternalError(absl::StrCat("sandbox: seccomp filter: ", std::strerror(-rc)));
  return absl::OkStatus();
}

}  // namespace

std::string SandboxReport::Describe() const { return absl::StrJoin(layers, ", "); }

absl::StatusOr<SandboxReport> EnterSandbox(const SandboxOptions& o) {
  SandboxReport report;
  const pid_t parent = getppid();
  RETURN_IF_ERROR(ApplyLimits(o));
  report.layers.push_back("rlimits");
  report.layers.push_back(LeaveNetwork() ? "no network (namespace)" : "no network (seccomp)");
  if (geteuid() == 0 && o.drop_root) {
    RETURN_IF_ERROR(DropRoot(o));
    report.layers.push_back(absl::StrCat("uid ", o.uid));
  }
  // After the uid change, which clears it: the job dies with the worker.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return Errno("PR_SET_PDEATHSIG");
  if (getppid() != parent) return absl::AbortedError("sandbox: the worker exited");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Errno("PR_SET_NO_NEW_PRIVS");
  ASSIGN_OR_RETURN(const bool landlocked, RestrictWrites(o.job_dir));
  report.layers.push_back(landlocked ? "writes only in its folder (Landlock)" : "no Landlock in this kernel");
  RETURN_IF_ERROR(InstallSeccomp());
  report.layers.push_back("seccomp");
  return report;
}

}  // namespace qopt::sandbox
