//! The dead-letter queue's files are the daemon's alone: payloads of undelivered frames live
//! there. The queue, its lock and the files that replace it are 0600 and its directory, when
//! the daemon creates it, 0750, set explicitly (this process runs with umask 0, so a mode
//! left to it would come out 0777 or 0666).

use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aw-dlq-modes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

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

fn lock_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[test]
fn the_queue_and_its_lock_are_0600_in_a_directory_created_0750() {
    rustix::process::umask(rustix::fs::Mode::empty());
    let dir = scratch("fresh");
    let path = dir.join("state/agentwire/dlq.log");
    let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
    assert_eq!(mode(&path), "0600", "queue");
    assert_eq!(mode(&lock_of(&path)), "0600", "lock");
    assert_eq!(mode(path.parent().unwrap()), "0750", "directory created");
    assert_eq!(mode(&dir.join("state")), "0750", "every directory created");
    // Purge replaces the file through a new one: that one is 0600 from the start.
    dlq.append(2, b"a secret payload").unwrap();
    dlq.purge().unwrap();
    assert_eq!(mode(&path), "0600", "queue after a rewrite");
    drop(dlq);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_world_readable_queue_of_an_older_build_is_narrowed_on_open() {
    rustix::process::umask(rustix::fs::Mode::empty());
    let dir = scratch("older");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("dlq.log");
    drop(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
    for file in [path.clone(), lock_of(&path)] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    drop(DeadLetterQueue::open(DlqConfig::new(&path)).unwrap());
    assert_eq!(mode(&path), "0600", "queue");
    assert_eq!(mode(&lock_of(&path)), "0600", "lock");
    assert_eq!(
        mode(&dir),
        "0755",
        "a directory that existed keeps its mode"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
