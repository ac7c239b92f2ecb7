//! File system events of the inbox directory, through the `notify` crate
//! (inotify on Linux), turned into the few changes the inbox cares about.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// A change in the inbox directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A file was created or written; stat it again.
    Written(PathBuf),
    /// A file was renamed into the directory.
    RenamedIn(PathBuf),
    /// A file was removed or renamed away.
    Gone(PathBuf),
    /// Events may have been lost, as when the kernel's queue overflowed;
    /// list the directory again.
    Rescan,
}

/// Watches `dir`, not its subdirectories, and sends each change to
/// `changes`. The watch lasts as long as the returned watcher.
///
/// # Errors
///
/// Fails when the watch cannot be set up, as when the inotify limits are
/// reached.
pub fn watch_dir(
    dir: &Path,
    changes: mpsc::UnboundedSender<Change>,
) -> notify::Result<RecommendedWatcher> {
    let handler = move |result: notify::Result<Event>| {
        let found = match result {
            Ok(event) => changes_of(&event),
            Err(err) => {
                tracing::warn!(error = %err, "file system event error; listing the inbox again");
                vec![Change::Rescan]
            }
        };
        for change in found {
            // The receiver is gone only once the watcher stops.
            let _ = changes.send(change);
        }
    };
    let mut watcher = notify::recommended_watcher(handler)?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Returns the changes that one event reports.
fn changes_of(event: &Event) -> Vec<Change> {
    if event.need_rescan() {
        return vec![Change::Rescan];
    }
    let each = |change: fn(PathBuf) -> Change| event.paths.iter().cloned().map(change).collect();
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each(Change::RenamedIn),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            each(Change::Gone)
        }
        // The `From` and `To` events of the same rename came first.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => Vec::new(),
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(Change::Written),
        EventKind::Access(_) => Vec::new(),
        EventKind::Any | EventKind::Other => vec![Change::Rescan],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use notify::event::{CreateKind, DataChange, RemoveKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn events_map_to_changes() {
        let cases = [
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                vec![Change::RenamedIn("/in/a".into())],
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                vec![Change::Gone("/in/a".into())],
            ),
            (
                EventKind::Remove(RemoveKind::File),
                vec![Change::Gone("/in/a".into())],
            ),
            (
                EventKind::Create(CreateKind::File),
                vec![Change::Written("/in/a".into())],
            ),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                vec![Change::Written("/in/a".into())],
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                Vec::new(),
            ),
            (EventKind::Other, vec![Change::Rescan]),
        ];
        for (kind, expected) in cases {
            assert_eq!(changes_of(&event(kind, "/in/a")), expected, "{kind:?}");
        }
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(changes_of(&overflow), [Change::Rescan]);
    }

    #[tokio::test]
    async fn rename_into_the_directory_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = watch_dir(&dir, tx).unwrap();
        std::fs::write(dir.join("a.part"), b"x").unwrap();

        std::fs::rename(dir.join("a.part"), dir.join("a.csv")).unwrap();

        let renamed = Change::RenamedIn(dir.join("a.csv"));
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(change) = rx.recv().await {
                if change == renamed {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no rename event for a.csv");
    }
}
