//! The walls themselves: the Landlock ruleset and the seccomp programs, built in the server
//! before the fork, and [`Child::enter`], which runs in the forked child before `exec`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope,
    path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::error::{Context, Error, Result};

/// What a worker may open: everything else is refused by Landlock.
#[derive(Debug, Default)]
pub(super) struct Grants {
    /// Read and execute: system libraries and the worker's executable.
    pub(super) exec: Vec<PathBuf>,
    /// Read only: the app's own vault files, resolver and TLS configuration.
    pub(super) read: Vec<PathBuf>,
    /// Read and write: the worker's own directories, `/dev/null`.
    pub(super) write: Vec<PathBuf>,
}

/// Read-only system paths every worker needs (libraries, the loader's cache, name resolution,
/// TLS roots, time zones, the CPU count).
pub(super) const SYSTEM_EXEC: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];
pub(super) const SYSTEM_READ: &[&str] = &[
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/sys/devices/system/cpu",
];
pub(super) const SYSTEM_WRITE: &[&str] = &["/dev/null"];

/// The Landlock ABI this kernel offers, found by restricting a throwaway thread (the crate
/// keeps its own probe private, and a ruleset's status is known only once enforced).
pub(super) fn landlock_abi() -> Option<ABI> {
    std::thread::spawn(|| {
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI::V1))
            .ok()?
            .create()
            .ok()?
            .restrict_self()
            .ok()?;
        match status.landlock {
            landlock::LandlockStatus::Available { effective_abi, .. } => Some(effective_abi),
            _ => None,
        }
    })
    .join()
    .ok()
    .flatten()
}

/// The ruleset for one worker: every filesystem access right handled (so denied unless
/// granted), signals and abstract sockets scoped to the worker's own domain.
pub(super) fn ruleset(abi: ABI, access: &Grants) -> Result<RulesetCreated> {
    let wrap = |e: landlock::RulesetError| Error::msg(format!("Landlock ruleset: {e}"));
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(wrap)?
        .scope(Scope::from_all(abi))
        .map_err(wrap)?
        .create()
        .map_err(wrap)?
        .add_rules(path_beneath_rules(&access.exec, AccessFs::from_read(abi)))
        .map_err(wrap)?
        .add_rules(path_beneath_rules(
            &access.read,
            AccessFs::ReadFile | AccessFs::ReadDir,
        ))
        .map_err(wrap)?
        .add_rules(path_beneath_rules(
            &access.write,
            AccessFs::from_all(abi) & !AccessFs::Execute,
        ))
        .map_err(wrap)?;
    Ok(ruleset)
}

/// System calls a worker never needs and an attacker inside it wants: debugging and reading
/// other processes, mounts and namespaces, kernel keyrings, BPF, modules, io_uring (which
/// bypasses this filter), clocks, swap, reboot.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_process_madvise,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_bpf,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// `clone` flags that create namespaces (a new user namespace would hand the worker
/// capabilities inside it).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Two programs: the denials above (`EPERM`), and `clone3` answered `ENOSYS` — its flags sit
/// behind a pointer a filter cannot read, and on `ENOSYS` the C library falls back to `clone`,
/// whose flags the first program checks.
pub(super) fn seccomp_programs() -> Result<Vec<BpfProgram>> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| Error::msg(format!("seccomp on {}: {e}", std::env::consts::ARCH)))?;
    let wrap = |e: seccompiler::BackendError| Error::msg(format!("seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|s| (*s, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(wrap)?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(wrap)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(wrap)?;
    let compile = |f: SeccompFilter| -> Result<BpfProgram> {
        f.try_into()
            .map_err(|e: seccompiler::BackendError| wrap(e))
            .context("compiling the seccomp filter")
    };
    Ok(vec![compile(deny)?, compile(clone3)?])
}

/// Everything the child applies to itself between fork and exec, prepared by the server.
pub(super) struct Child {
    /// The app's network namespace (`--isolate-network`), entered first.
    pub(super) netns: Option<OwnedFd>,
    /// The uid (= gid) to become; `None` when the server is not root.
    pub(super) uid: Option<u32>,
    pub(super) no_new_privs: bool,
    pub(super) ruleset: Option<RulesetCreated>,
    pub(super) seccomp: Vec<BpfProgram>,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("netns", &self.netns.is_some())
            .field("uid", &self.uid)
            .field("no_new_privs", &self.no_new_privs)
            .field("landlock", &self.ruleset.is_some())
            .field("seccomp_programs", &self.seccomp.len())
            .finish()
    }
}

impl Child {
    /// Runs in the forked child, before `exec`: system calls only, nothing that allocates on
    /// the way to success. Order matters: the namespace needs the server's privileges, the
    /// uid change drops every capability, Landlock needs no_new_privs, seccomp comes last
    /// because it forbids `setns`.
    pub(super) fn enter(&mut self) -> std::io::Result<()> {
        use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
        if let Some(fd) = &self.netns {
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        }
        if let Some(id) = self.uid {
            setgroups(&[])?;
            setresgid(Gid::from_raw(id), Gid::from_raw(id), Gid::from_raw(id))?;
            setresuid(Uid::from_raw(id), Uid::from_raw(id), Uid::from_raw(id))?;
        }
        if self.no_new_privs {
            nix::sys::prctl::set_no_new_privs()?;
        }
        if let Some(ruleset) = self.ruleset.take() {
            ruleset
                .restrict_self()
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
        }
        for program in &self.seccomp {
            seccompiler::apply_filter(program)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
        }
        Ok(())
    }
}
