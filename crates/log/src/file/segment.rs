//! Segment files: naming, preallocation, crash recovery and reading.
//!
//! A segment is created at its full size, filled with zeros and synced, before any record
//! goes in. Records then overwrite those zeros, so a commit's `fdatasync` has only data to
//! flush: the file's size and extents never change, and the filesystem writes no journal
//! entry for it. On ext4 this makes each commit's fsync about 2.5 times cheaper in CPU and
//! latency than appending to a growing file. Zeros after the last record are therefore the
//! normal end of a segment; anything else that does not decode there is a torn write.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::record::{self, HEADER_BYTES};
use crate::stepped::DIRECT_IO_ALIGN;
use crate::{LogError, Position, Record, SteppedFile};

const SEGMENT_SUFFIX: &str = ".log";
const PREPARED_PREFIX: &str = "prepared-";
/// A sparse index entry every this many records bounds the scan to reach a position.
const INDEX_EVERY: u64 = 1024;
const ZERO_CHUNK: usize = 1024 * 1024;

pub struct Segment {
    pub base: Position,
    pub path: PathBuf,
    /// Bytes of durable records: readers never look past this.
    pub len: u64,
    /// The file's size: records fit up to here without the file growing.
    pub capacity: u64,
    /// Records in the segment.
    pub count: u64,
    /// (position, byte offset) every [`INDEX_EVERY`] records.
    index: Vec<(Position, u64)>,
    /// Where the last read of this segment stopped, (position, byte offset): a record
    /// boundary, so a reader that goes on from there (a follower at the log's tail) does
    /// not re-read from the sparse index.
    last_read: Arc<Mutex<(Position, u64)>>,
}

impl Segment {
    pub fn end(&self) -> Position {
        self.base + self.count
    }

    pub fn note_record(&mut self, offset: u64, len: u64) {
        if self.count.is_multiple_of(INDEX_EVERY) {
            self.index.push((self.base + self.count, offset));
        }
        self.count += 1;
        self.len = offset + len;
    }
}

pub fn segment_path(dir: &Path, base: Position) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// An I/O error with what was being done; `context` is called only when one happens
/// (reading a segment checks for errors on every record).
fn io_error(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::io(context(), source)
}

/// Writes a zero-filled file of `capacity` bytes at `path` and syncs it, a step at a time
/// (see [`SteppedFile`]): the next segment is prepared while the log commits, and its tens
/// of megabytes must not queue ahead of the commits' fsyncs.
///
/// The zeros go to the disk by direct I/O where the filesystem allows it: copied into the
/// page cache and written back from there, they cost the process about 3% of its CPU
/// under load, and fill the cache with pages that records overwrite anyway.
fn write_zeroed(path: &Path, capacity: u64) -> std::io::Result<()> {
    let zeros = AlignedZeros::new();
    if capacity.is_multiple_of(DIRECT_IO_ALIGN as u64)
        && let Ok(file) = SteppedFile::create_direct(path)
        && fill_with_zeros(file, capacity, zeros.chunk()).is_ok()
    {
        return Ok(());
    }
    let filled =
        SteppedFile::create(path).and_then(|f| fill_with_zeros(f, capacity, zeros.chunk()));
    if filled.is_err() {
        // On a full disk, the part written would hold the space the log needs next.
        let _ = fs::remove_file(path);
    }
    filled
}

fn fill_with_zeros(mut file: SteppedFile, capacity: u64, zeros: &[u8]) -> std::io::Result<()> {
    let mut left = capacity;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.finish()
}

/// [`ZERO_CHUNK`] zeros starting at an address aligned for direct I/O.
struct AlignedZeros(Vec<u8>);

impl AlignedZeros {
    fn new() -> Self {
        AlignedZeros(vec![0u8; ZERO_CHUNK + DIRECT_IO_ALIGN])
    }

    fn chunk(&self) -> &[u8] {
        // `align_offset` may give up (usize::MAX); unaligned, the direct writes are refused
        // and the zeros go through the cache.
        let skip = Some(self.0.as_ptr().align_offset(DIRECT_IO_ALIGN))
            .filter(|skip| *skip < DIRECT_IO_ALIGN)
            .unwrap_or(0);
        &self.0[skip..skip + ZERO_CHUNK]
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(|| format!("fsync directory {}", dir.display())))
}

/// Makes zero-filled segment files ahead of need on a thread of its own, so that starting
/// a new segment never stalls the writer behind a large write.
pub struct Preparer {
    requests: Option<mpsc::Sender<()>>,
    ready: mpsc::Receiver<std::io::Result<PathBuf>>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    pub fn start(dir: &Path, capacity: u64) -> Result<Self, LogError> {
        let (requests, wanted) = mpsc::channel::<()>();
        let (done, ready) = mpsc::channel();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("spoor-log-prepare".into())
            .spawn(move || {
                for (n, ()) in wanted.into_iter().enumerate() {
                    let path = dir.join(format!("{PREPARED_PREFIX}{n}.tmp"));
                    if done
                        .send(write_zeroed(&path, capacity).map(|()| path))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .map_err(io_error(|| "start the segment preparer thread".into()))?;
        Ok(Preparer {
            requests: Some(requests),
            ready,
            thread: Some(thread),
        })
    }

    /// Asks for one more prepared segment.
    pub fn request(&self) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(());
        }
    }

    /// A prepared file, if one is ready now.
    pub fn take_ready(&self) -> Option<PathBuf> {
        match self.ready.try_recv() {
            Ok(Ok(path)) => Some(path),
            Ok(Err(error)) => {
                tracing::warn!(%error, "preparing a log segment failed; the writer will make its own");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Creates the segment starting at `base`, from a prepared file when one is ready, and
/// makes its directory entry durable.
pub fn create_segment(
    dir: &Path,
    base: Position,
    capacity: u64,
    preparer: Option<&Preparer>,
) -> Result<Segment, LogError> {
    let prepared = prepare_file(dir, capacity, preparer)?;
    let segment = install(dir, base, &prepared)?;
    sync_dir(dir)?;
    Ok(segment)
}

/// A zero-filled file of `capacity` bytes, not yet a segment: one the preparer made
/// ahead, or one made now. Nothing of the log has changed if this fails.
pub fn prepare_file(
    dir: &Path,
    capacity: u64,
    preparer: Option<&Preparer>,
) -> Result<PathBuf, LogError> {
    if let Some(prepared) = preparer.and_then(Preparer::take_ready) {
        return Ok(prepared);
    }
    let fresh = dir.join(format!("{PREPARED_PREFIX}now.tmp"));
    write_zeroed(&fresh, capacity).map_err(io_error(|| format!("create {}", fresh.display())))?;
    Ok(fresh)
}

/// Renames a prepared file into the segment starting at `base` (its directory entry not
/// yet synced: [`sync_dir`]). Nothing of the log has changed if this fails.
pub fn install(dir: &Path, base: Position, prepared: &Path) -> Result<Segment, LogError> {
    let started = std::time::Instant::now();
    let path = segment_path(dir, base);
    let capacity = fs::metadata(prepared)
        .map_err(io_error(|| format!("inspect {}", prepared.display())))?
        .len();
    fs::rename(prepared, &path).map_err(io_error(|| format!("create {}", path.display())))?;
    tracing::info!(
        segment = %path.display(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "new log segment"
    );
    Ok(Segment {
        base,
        path,
        len: 0,
        capacity,
        count: 0,
        index: Vec::new(),
        last_read: Arc::new(Mutex::new((base, 0))),
    })
}

/// Finds and checks every segment, and removes prepared files a previous run left unused.
/// With `repair`, a torn tail of the last segment is zeroed on disk; without, reading
/// simply ends there.
pub fn recover(dir: &Path, repair: bool) -> Result<Vec<Segment>, LogError> {
    let (mut bases, leftovers) = list_dir(dir)?;
    if repair {
        for leftover in leftovers {
            let _ = fs::remove_file(leftover);
        }
    }
    bases.sort_unstable();
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (i, base) in bases.iter().copied().enumerate() {
        if let Some(previous) = segments.last()
            && previous.end() != base
        {
            return Err(LogError::Corrupt {
                segment: segment_path(dir, base).display().to_string(),
                offset: 0,
                reason: format!(
                    "starts at record {base}, but the previous segment ends at {}",
                    previous.end()
                ),
            });
        }
        let is_last = i + 1 == bases.len();
        // A closed segment's index file spares reading it all; the last segment, where a
        // write may have been cut short, is always read.
        let indexed = if is_last { None } else { read_index(dir, base) };
        let segment = match indexed {
            Some(segment) => segment,
            None => {
                let segment = scan_segment(dir, base, is_last, repair)?;
                if repair && !is_last {
                    write_index(&segment)?;
                }
                segment
            }
        };
        segments.push(segment);
    }
    Ok(segments)
}

const INDEX_MAGIC: &[u8; 8] = b"SPOORIX1";

fn index_path(dir: &Path, base: Position) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// Writes a closed segment's index file: its record count, length and sparse index,
/// checksummed. Losing it costs only a full read of the segment at the next start.
pub fn write_index(segment: &Segment) -> Result<(), LogError> {
    let dir = segment.path.parent().unwrap_or(Path::new("."));
    let path = index_path(dir, segment.base);
    let mut bytes = INDEX_MAGIC.to_vec();
    for value in [segment.base, segment.count, segment.len, segment.capacity] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.extend_from_slice(&(segment.index.len() as u64).to_le_bytes());
    for (position, offset) in &segment.index {
        bytes.extend_from_slice(&position.to_le_bytes());
        bytes.extend_from_slice(&offset.to_le_bytes());
    }
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    let tmp = path.with_extension("idx.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(io_error(|| format!("write {}", path.display())))
}

/// A closed segment as its index file describes it, if the file is whole and matches.
fn read_index(dir: &Path, base: Position) -> Option<Segment> {
    let bytes = fs::read(index_path(dir, base)).ok()?;
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32fast::hash(body).to_le_bytes() != crc || body.get(..8)? != INDEX_MAGIC {
        return None;
    }
    let words: Vec<u64> = body[8..]
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .collect();
    let (&[file_base, count, len, capacity, entries], rest) = words.split_at_checked(5)? else {
        return None;
    };
    let path = segment_path(dir, base);
    let on_disk = fs::metadata(&path).ok()?.len();
    if file_base != base || rest.len() as u64 != entries * 2 || len > on_disk {
        return None;
    }
    Some(Segment {
        base,
        path,
        len,
        capacity: capacity.max(on_disk),
        count,
        index: rest.chunks_exact(2).map(|p| (p[0], p[1])).collect(),
        last_read: Arc::new(Mutex::new((base, 0))),
    })
}

/// Segment bases, and prepared files left over.
fn list_dir(dir: &Path) -> Result<(Vec<Position>, Vec<PathBuf>), LogError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(LogError::io(format!("list {}", dir.display()), e)),
    };
    let mut bases = Vec::new();
    let mut leftovers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(|| format!("list {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREPARED_PREFIX) || name.ends_with(".tmp") {
            leftovers.push(entry.path());
        } else if let Some(base) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|stem| stem.parse::<Position>().ok())
        {
            bases.push(base);
        }
    }
    Ok((bases, leftovers))
}

fn scan_segment(
    dir: &Path,
    base: Position,
    is_last: bool,
    repair: bool,
) -> Result<Segment, LogError> {
    let path = segment_path(dir, base);
    let bytes = fs::read(&path).map_err(io_error(|| format!("read {}", path.display())))?;
    let mut segment = Segment {
        base,
        path,
        len: 0,
        capacity: bytes.len() as u64,
        count: 0,
        index: Vec::new(),
        last_read: Arc::new(Mutex::new((base, 0))),
    };
    let mut offset = 0usize;
    while offset < bytes.len() {
        match record::decode(&bytes[offset..], segment.end()) {
            Ok((_, len)) => {
                segment.note_record(offset as u64, len as u64);
                offset += len;
            }
            // The preallocated zeros after the last record: the normal end.
            Err(_) if bytes[offset..].iter().all(|b| *b == 0) => break,
            Err(invalid) if is_last => {
                if repair {
                    tracing::warn!(
                        segment = %segment.path.display(),
                        offset,
                        reason = %invalid,
                        "clearing an incomplete write at the end of the log (interrupted by a \
                         crash before it was acknowledged)"
                    );
                    zero_from(&segment.path, offset as u64, bytes.len() as u64)?;
                }
                break;
            }
            Err(invalid) => {
                return Err(LogError::Corrupt {
                    segment: segment.path.display().to_string(),
                    offset: offset as u64,
                    reason: invalid.to_string(),
                });
            }
        }
    }
    Ok(segment)
}

/// Overwrites `[from, to)` with zeros and syncs, restoring the preallocated state.
fn zero_from(path: &Path, from: u64, to: u64) -> Result<(), LogError> {
    let context = format!("clear the torn tail of {}", path.display());
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(|| context.clone()))?;
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(io_error(|| context.clone()))?;
        at += n as u64;
    }
    file.sync_data().map_err(io_error(|| context))
}

/// What a reader needs of a segment, copied out so no lock is held during file I/O.
pub struct SegmentView {
    path: PathBuf,
    /// Durable bytes when the view was taken.
    len: u64,
    /// A record at or before the position to read from: (position, offset).
    start: (Position, u64),
    last_read: Arc<Mutex<(Position, u64)>>,
}

impl Segment {
    /// A view for reading at or after `from`.
    pub fn view(&self, from: Position) -> SegmentView {
        let after = self.index.partition_point(|(pos, _)| *pos <= from);
        let indexed = match after {
            0 => (self.base, 0),
            i => self.index[i - 1],
        };
        let last = *self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        SegmentView {
            path: self.path.clone(),
            len: self.len,
            start: if last.0 <= from && last.0 > indexed.0 {
                last
            } else {
                indexed
            },
            last_read: self.last_read.clone(),
        }
    }
}

impl Segment {
    /// The byte offset of the record at `position`, found by reading from the nearest
    /// indexed record.
    pub fn offset_of(&self, position: Position) -> Result<u64, LogError> {
        let view = self.view(position);
        let (mut at, mut offset) = view.start;
        let file =
            File::open(&view.path).map_err(io_error(|| format!("read {}", view.path.display())))?;
        let mut header = [0u8; HEADER_BYTES];
        while at < position {
            file.read_exact_at(&mut header, offset)
                .map_err(io_error(|| format!("read {}", view.path.display())))?;
            let len = record::length_field(&header).expect("a whole header");
            offset += (HEADER_BYTES + len) as u64;
            at += 1;
        }
        Ok(offset)
    }
}

/// The payload length of the record at `offset` of the segment at `path`.
pub fn record_length(path: &Path, offset: u64) -> Result<usize, LogError> {
    let context = || format!("read {}", path.display());
    let file = File::open(path).map_err(io_error(context))?;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, offset)
        .map_err(io_error(context))?;
    Ok(record::length_field(&header).expect("a whole header"))
}

/// Bytes read from a segment with one call: a follower at the log's tail reads everything
/// committed since its last read at once, and decodes the records in place.
const READ_WINDOW: usize = 256 * 1024;

thread_local! {
    /// The read window of this thread, kept between reads: a follower reads a few dozen
    /// kilobytes hundreds of times a second, and a fresh buffer each time is fresh pages
    /// each time, faulted in and zeroed by the kernel.
    static WINDOW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends to `out` up to `max` records at or after `from`, reading from the nearest
/// indexed offset a window at a time, and only as far as needed.
pub fn read_segment(
    view: &SegmentView,
    from: Position,
    max: usize,
    out: &mut Vec<Record>,
) -> Result<(), LogError> {
    WINDOW.with(|window| match window.try_borrow_mut() {
        Ok(mut window) => read_segment_with(view, from, max, out, &mut window),
        // Only a read that reads again from within (none does) finds it taken.
        Err(_) => read_segment_with(view, from, max, out, &mut Vec::new()),
    })
}

fn read_segment_with(
    view: &SegmentView,
    from: Position,
    max: usize,
    out: &mut Vec<Record>,
    window: &mut Vec<u8>,
) -> Result<(), LogError> {
    let context = || format!("read {}", view.path.display());
    let (mut position, mut offset) = view.start;
    let file = File::open(&view.path).map_err(io_error(context))?;
    let mut window_len = READ_WINDOW;
    while offset < view.len && out.len() < max {
        let left = view.len - offset;
        window.resize(left.min(window_len as u64) as usize, 0);
        file.read_exact_at(window, offset)
            .map_err(io_error(context))?;
        let mut used = 0;
        while used < window.len() && out.len() < max {
            let (payload, total) = match record::decode(&window[used..], position) {
                Ok(decoded) => decoded,
                // Runs on past the window: read again from its start.
                Err(record::Invalid::Truncated) if (window.len() as u64) < left => break,
                Err(record::Invalid::Truncated) => {
                    let reason = "record runs past the durable end".into();
                    return Err(corrupt(view, offset, reason));
                }
                Err(invalid) => return Err(corrupt(view, offset, invalid.to_string())),
            };
            if position >= from {
                out.push(Record {
                    position,
                    payload: payload.to_vec(),
                });
            }
            position += 1;
            offset += total as u64;
            used += total;
        }
        // A record larger than the window: widen it to hold that record whole.
        window_len = if used == 0 {
            HEADER_BYTES + record::length_field(window).unwrap_or(0)
        } else {
            READ_WINDOW
        };
    }
    *view
        .last_read
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = (position, offset);
    // A window widened for one very large record is not kept.
    if window.capacity() > 2 * READ_WINDOW {
        *window = Vec::new();
    }
    Ok(())
}

fn corrupt(view: &SegmentView, offset: u64, reason: String) -> LogError {
    LogError::Corrupt {
        segment: view.path.display().to_string(),
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_files_hold_zeros_whether_written_directly_or_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        // Whole pages go by direct I/O where the filesystem allows; an odd size cannot.
        for capacity in [3 * ZERO_CHUNK as u64 + 8192, 10_001] {
            let path = dir.path().join(format!("zeros-{capacity}"));
            fs::write(&path, vec![7u8; 20_000]).unwrap();
            write_zeroed(&path, capacity).unwrap();
            let bytes = fs::read(&path).unwrap();
            assert_eq!(bytes.len() as u64, capacity);
            assert!(bytes.iter().all(|b| *b == 0));
        }
    }
}
