//! Files written beside the log without holding its fsyncs up.
//!
//! A disk serves syncs in the order their data was handed to it. A snapshot of tens or
//! hundreds of megabytes written in one go and then synced sits in the disk's queue ahead
//! of the log's next fsync, and every request waiting for that fsync waits for the whole
//! snapshot too. Written a step at a time, each step synced before the next is handed
//! over, the log's fsyncs wait for one step at most.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// The most bytes handed to the disk between two syncs.
pub const STEP_BYTES: usize = 1024 * 1024;

/// A new file, synced every [`STEP_BYTES`] written.
pub struct SteppedFile {
    file: File,
    unsynced: usize,
}

impl SteppedFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(SteppedFile {
            file: File::create(path)?,
            unsynced: 0,
        })
    }

    /// Creates (or truncates) the file at `path` for direct I/O: what is written goes from
    /// the caller's buffer to the disk without a copy in the page cache. Every write's
    /// buffer address, length and file offset must then be multiples of the disk's block
    /// size ([`DIRECT_IO_ALIGN`] serves the disks in use); a filesystem without direct
    /// I/O (tmpfs) refuses the open.
    pub fn create_direct(path: &Path) -> std::io::Result<Self> {
        Ok(SteppedFile {
            file: open_direct(path)?,
            unsynced: 0,
        })
    }

    /// Syncs what is left, data and metadata.
    pub fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

/// The alignment that direct I/O asks of buffers, lengths and offsets: the largest logical
/// block size of common disks, and the page size.
pub const DIRECT_IO_ALIGN: usize = 4096;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<File> {
    Err(std::io::ErrorKind::Unsupported.into())
}

impl Write for SteppedFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = STEP_BYTES - self.unsynced;
        let written = self.file.write(&bytes[..bytes.len().min(room)])?;
        self.unsynced += written;
        if self.unsynced >= STEP_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_write_spans_two_steps_and_everything_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let bytes: Vec<u8> = (0..STEP_BYTES * 2 + 12_345).map(|i| i as u8).collect();
        let mut file = SteppedFile::create(&path).unwrap();
        // One call may not hand over more than what is left of the current step.
        assert_eq!(file.write(&bytes[..10]).unwrap(), 10);
        assert_eq!(file.write(&bytes[10..]).unwrap(), STEP_BYTES - 10);
        assert_eq!(file.unsynced, 0);
        file.write_all(&bytes[STEP_BYTES..]).unwrap();
        assert_eq!(file.unsynced, 12_345);
        file.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
