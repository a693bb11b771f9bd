//! Folders only the gateway's own user may open: the spool and the ACME cache hold events and
//! private keys.

use std::path::Path;

/// Creates `dir` (and its parents) with mode 0700 if it is missing; an existing folder is left
/// as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
