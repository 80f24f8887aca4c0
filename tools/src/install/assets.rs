//! The files `agentwire install` puts on a system, embedded in the binary from the
//! repository's `systemd/` and `runtime/default.toml` (the Debian package ships the same
//! files; see `[package.metadata.deb]` in tools/Cargo.toml).

/// Where the installed binary goes (the Debian package's is `/usr/bin/agentwire`).
pub const BIN_PATH: &str = "/usr/local/bin/agentwire";
/// The daemon's config file.
pub const CONFIG_PATH: &str = "/etc/agentwire/agentwire.toml";
/// Where the manifest of installed files is kept.
pub const MANIFEST_PATH: &str = "/usr/local/share/agentwire/install-manifest.json";
/// The state directory (dead-letter queue, agent ids, the streaming engine's log and
/// checkpoints); created by the tmpfiles.d entry, removed only by `uninstall --purge`.
pub const STATE_DIR: &str = "/var/lib/agentwire";
/// The system user and group the daemon runs as.
pub const SERVICE_USER: &str = "agentwire";
/// The sysusers.d file (it creates [`SERVICE_USER`]).
pub const SYSUSERS_PATH: &str = "/etc/sysusers.d/agentwire.conf";
/// The tmpfiles.d file (it creates the state directory).
pub const TMPFILES_PATH: &str = "/etc/tmpfiles.d/agentwire.conf";

/// A file installed as it is.
pub struct Asset {
    /// Target-system path.
    pub path: &'static str,
    /// Contents.
    pub contents: &'static str,
    /// What it is, for the step list.
    pub what: &'static str,
}

/// The unit files, the drop-in example and the sysusers/tmpfiles entries.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/etc/systemd/system/agentwire.service",
        contents: include_str!("../../../systemd/agentwire.service"),
        what: "the daemon's unit",
    },
    Asset {
        path: "/etc/systemd/system/agentwire.slice",
        contents: include_str!("../../../systemd/agentwire.slice"),
        what: "the slice the daemon runs in (`agentwire plan --cpuset` fills in its CPUs)",
    },
    Asset {
        path: "/etc/systemd/system/agentwire-hugepages.service",
        contents: include_str!("../../../systemd/agentwire-hugepages.service"),
        what: "the unit that reserves huge pages before the daemon starts",
    },
    Asset {
        path: "/usr/local/share/doc/agentwire/kernel-bypass.conf",
        contents: include_str!("../../../systemd/agentwire.service.d/kernel-bypass.conf"),
        what: "a drop-in for kernel-bypass networking (copy it to \
               /etc/systemd/system/agentwire.service.d/ to use it)",
    },
    Asset {
        path: SYSUSERS_PATH,
        contents: include_str!("../../../systemd/sysusers.d/agentwire.conf"),
        what: "the agentwire system user and group",
    },
    Asset {
        path: TMPFILES_PATH,
        contents: include_str!("../../../systemd/tmpfiles.d/agentwire.conf"),
        what: "the state directory",
    },
];

/// `contents` of a unit with the packaged binary path (`/usr/bin/agentwire`) replaced by
/// the installed one ([`BIN_PATH`]).
pub fn with_bin_path(contents: &str) -> String {
    contents.replace("/usr/bin/agentwire", BIN_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_unit_runs_the_installed_binary_on_the_installed_config() {
        let unit = with_bin_path(ASSETS[0].contents);
        let exec = unit
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("ExecStart");
        assert!(exec.contains(BIN_PATH), "{exec}");
        assert!(exec.contains(CONFIG_PATH), "{exec}");
    }

    #[test]
    fn the_sysusers_and_tmpfiles_entries_name_the_user_and_the_state_directory() {
        let sysusers = ASSETS.iter().find(|a| a.path == SYSUSERS_PATH).unwrap();
        assert!(sysusers.contents.contains(&format!("u {SERVICE_USER} ")));
        let tmpfiles = ASSETS.iter().find(|a| a.path == TMPFILES_PATH).unwrap();
        assert!(
            tmpfiles.contents.contains(STATE_DIR),
            "{}",
            tmpfiles.contents
        );
    }
}
