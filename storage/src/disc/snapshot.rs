//! Table snapshots: one file per table, replaced atomically.
//!
//! File name: `<table>.<lsn>.snap`, the table name with every byte outside
//! `[A-Za-z0-9_-]` written as `%XX`, the LSN as 20 zero-padded digits.
//! Contents:
//!
//! ```text
//! magic "BLSNAP\0\x01" | crc u32 | table_len u32 | lsn u64 | len u64 | table | bytes
//! crc = CRC32C of everything after the crc field
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::{DiscError, DiscResult};
use super::layout::{sync_dir, write_atomically};
use super::{Lsn, Snapshot};

const MAGIC: &[u8; 8] = b"BLSNAP\0\x01";
const HEADER_LEN: usize = 32;

fn encode_table_name(table: &str) -> String {
    let mut out = String::with_capacity(table.len());
    for b in table.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_table_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn file_name(table: &str, lsn: Lsn) -> String {
    format!("{}.{lsn:020}.snap", encode_table_name(table))
}

/// A snapshot file found in the directory, not yet read.
struct Entry {
    table: String,
    lsn: Lsn,
    path: PathBuf,
}

/// Lists snapshot files; `*.tmp` leftovers of interrupted writes are
/// returned separately so the opener can delete them.
fn list(dir: &Path) -> DiscResult<(Vec<Entry>, Vec<PathBuf>)> {
    let mut entries = Vec::new();
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DiscError::io(dir, e))? {
        let entry = entry.map_err(|e| DiscError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            leftovers.push(path);
            continue;
        }
        let Some(stem) = name.strip_suffix(".snap") else {
            continue;
        };
        let parsed = stem
            .rsplit_once('.')
            .and_then(|(table, lsn)| Some((decode_table_name(table)?, lsn.parse::<Lsn>().ok()?)));
        let Some((table, lsn)) = parsed else {
            return Err(DiscError::CorruptSnapshot {
                path,
                reason: "file name is not <table>.<lsn>.snap".into(),
            });
        };
        entries.push(Entry { table, lsn, path });
    }
    Ok((entries, leftovers))
}

/// The newest snapshot file per table, and the older ones.
fn newest_per_table(entries: Vec<Entry>) -> (BTreeMap<String, Entry>, Vec<Entry>) {
    let mut newest: BTreeMap<String, Entry> = BTreeMap::new();
    let mut older = Vec::new();
    for entry in entries {
        match newest.get(&entry.table) {
            Some(current) if current.lsn >= entry.lsn => older.push(entry),
            _ => {
                if let Some(replaced) = newest.insert(entry.table.clone(), entry) {
                    older.push(replaced);
                }
            }
        }
    }
    (newest, older)
}

fn encode(table: &str, lsn: Lsn, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + table.len() + bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&u32::try_from(table.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(bytes);
    let crc = crc32c::crc32c(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(path: &Path, data: Vec<u8>, want_table: &str, want_lsn: Lsn) -> DiscResult<Snapshot> {
    let bad = |reason: &str| DiscError::CorruptSnapshot {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(bad("missing snapshot header"));
    }
    let field = |at: usize, n: usize| -> u64 {
        data[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    };
    let crc = field(8, 4) as u32;
    let table_len = field(12, 4) as usize;
    let lsn = field(16, 8);
    let len = field(24, 8);
    let table_end = HEADER_LEN
        .checked_add(table_len)
        .filter(|end| *end <= data.len())
        .ok_or_else(|| bad("table name runs past the end of the file"))?;
    if (data.len() - table_end) as u64 != len {
        return Err(bad("length field does not match the file size"));
    }
    if crc32c::crc32c(&data[12..]) != crc {
        return Err(bad("checksum mismatch"));
    }
    let table = std::str::from_utf8(&data[HEADER_LEN..table_end])
        .map_err(|_| bad("table name is not UTF-8"))?
        .to_string();
    if table != want_table || lsn != want_lsn {
        return Err(bad("table or LSN inside differs from the file name"));
    }
    let mut bytes = data;
    bytes.drain(..table_end);
    Ok(Snapshot { table, lsn, bytes })
}

/// Writes a snapshot atomically and then removes the table's older ones.
pub(crate) fn write(dir: &Path, table: &str, lsn: Lsn, bytes: &[u8]) -> DiscResult<()> {
    let (entries, _) = list(dir)?;
    let older: Vec<Entry> = entries.into_iter().filter(|e| e.table == table).collect();
    if let Some(newest) = older.iter().map(|e| e.lsn).max().filter(|n| *n > lsn) {
        return Err(DiscError::StaleSnapshot {
            table: table.to_string(),
            lsn,
            newest,
        });
    }
    let name = file_name(table, lsn);
    write_atomically(dir, &name, &encode(table, lsn, bytes))?;
    // Only after the new one is durable may the old ones go.
    let mut removed = false;
    for entry in older.into_iter().filter(|e| e.lsn != lsn) {
        fs::remove_file(&entry.path).map_err(|e| DiscError::io(&entry.path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads the newest snapshot of every table. With `clean_up`, deletes
/// leftovers of interrupted writes and snapshots superseded by newer ones.
pub(crate) fn load(dir: &Path, clean_up: bool) -> DiscResult<Vec<Snapshot>> {
    let (entries, leftovers) = list(dir)?;
    let (newest, older) = newest_per_table(entries);
    let mut out = Vec::with_capacity(newest.len());
    for (table, entry) in newest {
        let data = fs::read(&entry.path).map_err(|e| DiscError::io(&entry.path, e))?;
        out.push(decode(&entry.path, data, &table, entry.lsn)?);
    }
    if clean_up && (!leftovers.is_empty() || !older.is_empty()) {
        for path in leftovers.iter().chain(older.iter().map(|e| &e.path)) {
            fs::remove_file(path).map_err(|e| DiscError::io(path, e))?;
        }
        sync_dir(dir)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_survive_the_file_name() {
        for name in ["roster", "muc_room", "a.b/c d", "ünï", "%41", ""] {
            assert_eq!(
                decode_table_name(&encode_table_name(name)).as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn newest_snapshot_wins_and_older_ones_go() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), "t.1", 5, b"five").expect("write 5");
        write(tmp.path(), "t.1", 9, b"nine").expect("write 9");
        write(tmp.path(), "other", 2, b"two").expect("write other");
        let snaps = load(tmp.path(), true).expect("load");
        assert_eq!(snaps.len(), 2);
        let t = snaps.iter().find(|s| s.table == "t.1").expect("t.1");
        assert_eq!((t.lsn, t.bytes.as_slice()), (9, &b"nine"[..]));
        assert_eq!(fs::read_dir(tmp.path()).expect("dir").count(), 2);
        assert!(matches!(
            write(tmp.path(), "t.1", 3, b"old"),
            Err(DiscError::StaleSnapshot { newest: 9, .. })
        ));
    }

    #[test]
    fn damaged_snapshot_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), "t", 1, b"some table bytes").expect("write");
        let path = tmp.path().join(file_name("t", 1));
        let good = fs::read(&path).expect("read");
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).expect("truncate");
            assert!(matches!(
                load(tmp.path(), false),
                Err(DiscError::CorruptSnapshot { .. })
            ));
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).expect("flip");
            assert!(matches!(
                load(tmp.path(), false),
                Err(DiscError::CorruptSnapshot { .. })
            ));
        }
    }

    #[test]
    fn leftover_temp_files_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("t.00000000000000000001.snap.tmp"), b"junk").expect("junk");
        assert!(load(tmp.path(), true).expect("load").is_empty());
        assert_eq!(fs::read_dir(tmp.path()).expect("dir").count(), 0);
    }
}
