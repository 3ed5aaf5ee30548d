//! Linux security module labels: `process.apparmorProfile`,
//! `process.selinuxLabel` and `linux.mountLabel`. Each is applied only where
//! the kernel runs that LSM; asked for where it does not, the config is
//! refused naming the field (a label silently dropped would run the
//! container less confined than its author meant).

use std::path::Path;

/// Whether AppArmor is enabled in the running kernel (the module's own
/// switch; absent when it is not built in).
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim_start().starts_with('Y'))
}

/// Whether SELinux is enabled in the running kernel: selinuxfs is
/// registered only when SELinux was initialized at boot.
pub fn selinux_enabled() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("selinuxfs"))
    })
}

/// The LSMs the kernel runs, from securityfs when it is mounted, for
/// messages.
fn active_lsms() -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(s) => format!("the kernel's LSMs are {}", s.trim()),
        Err(_) => "securityfs is not mounted to list the kernel's LSMs".into(),
    }
}

/// Checks a label's text: non-empty, one line, no NUL.
fn check_text(label: &str) -> Result<(), String> {
    if label.is_empty() || label.contains(['\0', '\n']) {
        return Err(format!(
            "{label:?} is not a label (one non-empty line, no NUL)"
        ));
    }
    Ok(())
}

/// Checks `process.apparmorProfile` and `process.selinuxLabel` (each
/// returned error starts with the field's name after `prefix`).
pub(crate) fn check_process(p: &oci_spec::runtime::Process, prefix: &str) -> Result<(), String> {
    if let Some(profile) = p.apparmor_profile().as_deref() {
        check_text(profile).map_err(|e| format!("field `{prefix}.apparmorProfile`: {e}"))?;
        if !apparmor_enabled() {
            return Err(format!(
                "field `{prefix}.apparmorProfile`: AppArmor profile {profile:?} asked for, but AppArmor is not enabled in this kernel (/sys/module/apparmor/parameters/enabled; {}); remove the field or run on a host with AppArmor",
                active_lsms()
            ));
        }
    }
    if let Some(label) = p.selinux_label().as_deref() {
        check_text(label).map_err(|e| format!("field `{prefix}.selinuxLabel`: {e}"))?;
        if !selinux_enabled() {
            return Err(format!(
                "field `{prefix}.selinuxLabel`: SELinux label {label:?} asked for, but SELinux is not enabled in this kernel (no selinuxfs in /proc/filesystems; {}); remove the field or run on a host with SELinux",
                active_lsms()
            ));
        }
    }
    Ok(())
}

/// Checks `linux.mountLabel` (an SELinux context for the container's
/// mounts).
pub(crate) fn check_mount_label(label: Option<&str>) -> Result<(), String> {
    let Some(label) = label else { return Ok(()) };
    check_text(label).map_err(|e| format!("field `linux.mountLabel`: {e}"))?;
    // Added to mount data as context="<label>": MCS categories hold
    // commas, which the quotes keep, but a quote would end it.
    if label.contains('"') {
        return Err(format!(
            "field `linux.mountLabel`: {label:?} contains a double quote, which would break the mount options it is added to"
        ));
    }
    if !selinux_enabled() {
        return Err(format!(
            "field `linux.mountLabel`: mount label {label:?} asked for, but SELinux is not enabled in this kernel (no selinuxfs in /proc/filesystems; {}); remove the field or run on a host with SELinux",
            active_lsms()
        ));
    }
    Ok(())
}

/// The mount data option that labels a new filesystem with `label`.
pub(crate) fn mount_context(label: &str) -> String {
    format!("context=\"{label}\"")
}

/// The labels to set on the process's next execve.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecLabels {
    apparmor: Option<String>,
    selinux: Option<String>,
}

impl ExecLabels {
    /// The labels of `p` (checked by [`check_process`]).
    pub(crate) fn of(p: &oci_spec::runtime::Process) -> ExecLabels {
        ExecLabels {
            apparmor: p.apparmor_profile().clone(),
            selinux: p.selinux_label().clone(),
        }
    }

    /// In the forked child: asks the kernel to switch to the labels at the
    /// next execve (the profile takes effect with the container's program,
    /// not while the runtime still sets it up).
    pub(crate) fn apply(&self) -> Result<(), String> {
        if let Some(profile) = &self.apparmor {
            let own = Path::new("/proc/thread-self/attr/apparmor/exec");
            let attr = if own.exists() {
                own
            } else {
                Path::new("/proc/thread-self/attr/exec")
            };
            std::fs::write(attr, format!("exec {profile}")).map_err(|e| {
                format!(
                    "cannot set AppArmor profile {profile:?} (is it loaded? see aa-status): {e}"
                )
            })?;
        }
        if let Some(label) = &self.selinux {
            std::fs::write("/proc/thread-self/attr/exec", label)
                .map_err(|e| format!("cannot set SELinux label {label:?}: {e}"))?;
        }
        Ok(())
    }
}
