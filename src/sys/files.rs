//! Opening files the operator names without ever blocking: `O_NONBLOCK` open,
//! then `fstat`, and a refusal unless the file is what is expected (a regular
//! file of bounded size, a directory). A FIFO, a device or /dev/zero given as
//! a file never hangs pipe.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Attachment files larger than this are refused (a typo'd path, /dev/zero).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Open read-only without blocking (a FIFO without writer opens at once).
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
}

/// What a file is, for messages: "a FIFO", "a directory", ...
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Read a regular file of at most [`MAX_FILE_BYTES`] as UTF-8; the error says
/// what is wrong with it (callers prefix the file's role).
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let f = open_nonblocking(path).map_err(ReadError::Io)?;
    let md = f.metadata().map_err(ReadError::Io)?;
    if !md.file_type().is_file() {
        return Err(ReadError::Bad(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind_of(md.file_type())
        )));
    }
    if md.len() > MAX_FILE_BYTES {
        return Err(ReadError::Bad(format!(
            "{} is {} bytes, more than the {MAX_FILE_BYTES} an attachments file may have",
            path.display(),
            md.len()
        )));
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::Bad(format!(
            "{} grew past {MAX_FILE_BYTES} bytes while being read",
            path.display()
        )));
    }
    String::from_utf8(buf)
        .map_err(|_| ReadError::Bad(format!("{} is not UTF-8 text", path.display())))
}

#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read (`NotFound` is the caller's call).
    Io(io::Error),
    /// It is not a bounded regular text file.
    Bad(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => {
                let t = e.to_string();
                write!(f, "{}", t.split(" (os error").next().unwrap_or(&t))
            }
            ReadError::Bad(s) => write!(f, "{s}"),
        }
    }
}

/// The state directory must be an absolute path, and a directory when it
/// exists (it is created when missing). `stat` never blocks.
pub fn check_state_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        // Records under a relative path would depend on the working directory:
        // a later detach or gc run elsewhere would not find them.
        return Err(format!(
            "state directory {:?} is a relative path; give an absolute one with --state-dir \
             (or PIPE_STATE_DIR), for example /run/pipe",
            dir.display().to_string()
        ));
    }
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(md) => Err(format!(
            "state directory {} is {}, not a directory; give a directory with --state-dir \
             (or PIPE_STATE_DIR); it is created when missing",
            dir.display(),
            kind_of(md.file_type())
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(format!(
            "state directory {}: a part of the path is not a directory; give a directory with --state-dir",
            dir.display()
        )),
        Err(e) => Err(format!("state directory {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_devices_are_refused_without_blocking() {
        let d = std::env::temp_dir().join(format!("pipe-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let fifo = d.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_text(&fifo).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let e = read_text(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        let e = read_text(&d).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        assert!(
            check_state_dir(Path::new("/dev/null"))
                .unwrap_err()
                .contains("/dev/null")
        );
        assert!(check_state_dir(&d).is_ok());
        assert!(check_state_dir(&d.join("missing")).is_ok());
        assert!(
            check_state_dir(Path::new("run/pipe"))
                .unwrap_err()
                .contains("relative")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
