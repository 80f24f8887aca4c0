//! The modes of what the router creates on disk, set explicitly and not left to the umask
//! (this process runs with umask 0, so anything left to it would come out 0777): the control
//! socket 0660 (the daemon's group may connect), the directory it creates for it 0750; a
//! directory that already existed keeps its mode; the agent id file 0600.

use agentwire_router::agent_ids::AgentIdStore;
use agentwire_router::server::{AllowList, ControlListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-modes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The permission bits of `path` (not following a symlink).
fn mode(path: &Path) -> String {
    format!(
        "{:04o}",
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    )
}

/// A umask that would leave every mode wide open (the same in every test of this process).
fn open_umask() {
    rustix::process::umask(rustix::fs::Mode::empty());
}

#[test]
fn the_socket_is_0660_in_a_directory_the_daemon_creates_0750() {
    open_umask();
    let dir = scratch("created");
    let socket = dir.join("run/agentwire/agentwire.sock");
    let listener = ControlListener::bind(&socket, AllowList::current_user()).unwrap();
    assert_eq!(mode(&socket), "0660", "socket");
    assert_eq!(mode(socket.parent().unwrap()), "0750", "runtime directory");
    assert_eq!(mode(&dir.join("run")), "0750", "every directory created");
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_the_daemon_did_not_create_keeps_its_mode() {
    open_umask();
    let dir = scratch("existing");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("agentwire.sock");
    let listener = ControlListener::bind(&socket, AllowList::current_user()).unwrap();
    assert_eq!(mode(&socket), "0660", "socket");
    assert_eq!(
        mode(&dir),
        "0755",
        "a directory that existed is left as it was"
    );
    drop(listener);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_agent_id_file_is_0600() {
    open_umask();
    let dir = scratch("ids");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dlq.log.ids");
    let (mut store, first) = AgentIdStore::open(&path).unwrap();
    assert_eq!(mode(&path), "0600", "created");
    // A file an older build left world-readable is narrowed when it is written again.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    store
        .reserve(first + agentwire_router::agent_ids::AGENT_ID_BLOCK)
        .unwrap();
    assert_eq!(mode(&path), "0600", "rewritten");
    std::fs::remove_dir_all(&dir).unwrap();
}
