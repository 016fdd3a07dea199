//! One writer per ledger file. Two gateways writing one SQLite file would not corrupt it, but
//! each would rebuild budgets from the other's records while keeping its own spend in memory,
//! and retention, schema rebuilds and group commits would contend; so a second gateway is
//! refused at start. The lock is an OS file lock on a file beside the ledger, so it is released
//! however the process ends (`kill -9` included) and a restart never finds a stale one.

use super::LedgerError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Held for as long as the ledger is open.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

pub fn lock_path(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl WriterLock {
    pub fn acquire(ledger: &Path) -> Result<WriterLock, LedgerError> {
        let path = lock_path(ledger);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                path: dir.to_path_buf(),
                source: Arc::new(source),
            })?;
        }
        let io = |source: std::io::Error| LedgerError::Lock {
            path: path.clone(),
            source: Arc::new(source),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(LedgerError::InUse {
                    path: ledger.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // Who holds it, for the message a second gateway prints.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "pid {}", std::process::id()).map_err(io)?;
        Ok(WriterLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("tollgate-lock-{}", std::process::id()));
        let ledger = dir.join("ledger.sqlite");
        let first = WriterLock::acquire(&ledger).unwrap();
        let second = WriterLock::acquire(&ledger).unwrap_err().to_string();
        assert!(second.contains("in use by another gateway"), "{second}");
        assert!(
            second.contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        WriterLock::acquire(&ledger).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
