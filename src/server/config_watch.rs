//! Notices when the config or a file it names (certificate, key, CA, IP set) has changed, so
//! the gateway reloads without a SIGHUP. It polls a fingerprint (modification time, size,
//! inode) once a second instead of using inotify: Kubernetes and editors replace files by
//! renaming or swapping symlinks, which a poll that follows symlinks sees the same way on every
//! filesystem, NFS included, and it needs no extra dependency. A change is acted on once the
//! fingerprint has been stable for one more poll (debounce: half-written files are not loaded).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

pub const POLL_EVERY: Duration = Duration::from_secs(1);

type Fingerprint = Vec<Option<(i64, i64, u64, u64)>>;

pub struct ConfigWatch {
    files: Vec<PathBuf>,
    applied: Fingerprint,
    pending: Option<Fingerprint>,
}

impl ConfigWatch {
    pub fn new(files: Vec<PathBuf>) -> ConfigWatch {
        let applied = fingerprint(&files);
        ConfigWatch {
            files,
            applied,
            pending: None,
        }
    }

    /// Call once per poll. True when a change has settled and a reload is due.
    pub fn poll(&mut self) -> bool {
        let now = fingerprint(&self.files);
        if now == self.applied {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.applied = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }

    /// After a successful reload the set of named files may have changed.
    pub fn watch(&mut self, files: Vec<PathBuf>) {
        self.applied = fingerprint(&files);
        self.files = files;
        self.pending = None;
    }
}

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.yaml");
        std::fs::write(&file, "a").unwrap();
        let mut watch = ConfigWatch::new(vec![file.clone()]);
        assert!(!watch.poll());
        // Replace the file the way editors and Kubernetes do: write elsewhere, rename over.
        let tmp = dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, "bb").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(!watch.poll(), "first sight of a change waits one more poll");
        assert!(watch.poll(), "stable: reload now");
        assert!(!watch.poll(), "and only once");
    }
}
