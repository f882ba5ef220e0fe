//! host-local's on-disk store, byte for byte as the reference's
//! `backend/disk` keeps it, so that pipe and the plugin (and every other
//! plugin that runs it) share one data directory:
//!
//! - `<dataDir>/<network>/` (made 0755), and in it:
//! - `lock`: an empty file (made 0750, opened read-only) whose `flock(2)`
//!   exclusive lock is held while the store is read or changed;
//! - one file per reserved address, named by the address, mode 0644, holding
//!   `<container ID>\r\n<ifname>` (no newline at the end; older versions
//!   wrote the container ID alone, which is still matched);
//! - `last_reserved_ip.<range set index>`: the last address reserved from that
//!   set, where the next allocation starts looking.
//!
//! Finding a container's addresses walks every file below the directory and
//! compares its content with surrounding white space trimmed, as the
//! reference's `filepath.Walk` does.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::debug;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::range::Ip;

const LAST_RESERVED: &str = "last_reserved_ip.";

/// An I/O error's text as Go words it (`permission denied`).
fn go_text(e: &io::Error) -> String {
    let mut t = e.to_string();
    if let Some(i) = t.find(" (os error ") {
        t.truncate(i);
    }
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => t,
    }
}

/// An I/O error on a path as Go words it (`open PATH: permission denied`).
fn go_err(op: &str, path: &Path, e: &io::Error) -> String {
    format!("{op} {}: {}", path.display(), go_text(e))
}

/// A bare errno as Go words it (the plugin's lock reports no path).
fn errno(e: nix::errno::Errno) -> String {
    go_text(&io::Error::from(e))
}

/// The store of one network, locked for as long as it lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Make the directory, open its `lock` and wait for it, as the plugin does.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| go_err("mkdir", dir, &e))?;
        let p = dir.join("lock");
        debug!("cni: host-local: locking {}", p.display());
        let fd = nix::fcntl::open(
            &p,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o750),
        )
        .map_err(errno)?;
        // Blocking, as the plugin's: whoever holds it is allocating right now.
        let lock =
            Flock::lock(File::from(fd), FlockArg::LockExclusive).map_err(|(_, e)| errno(e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Reserve `ip` for `id`/`ifname`: false when another holds it.
    pub fn reserve(&self, id: &str, ifname: &str, ip: Ip, set: usize) -> Result<bool, String> {
        let p = self.dir.join(ip.to_string());
        let mut f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(go_err("open", &p, &e)),
        };
        if let Err(e) = f.write_all(format!("{}\r\n{ifname}", id.trim()).as_bytes()) {
            drop(f);
            let _ = std::fs::remove_file(&p);
            return Err(go_err("write", &p, &e));
        }
        drop(f);
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&last)
            .and_then(|mut f| f.write_all(ip.to_string().as_bytes()))
            .map_err(|e| {
                // Not reserved after all: a failed ADD leaves no address taken
                // (the plugin itself would leave the file behind here).
                let _ = std::fs::remove_file(&p);
                go_err("open", &last, &e)
            })?;
        Ok(true)
    }

    /// The last address reserved from set `set`, when it reads as one.
    pub fn last_reserved(&self, set: usize) -> Option<Ip> {
        let b = std::fs::read(self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?;
        // Go's net.ParseIP of the whole content: no trimming.
        std::str::from_utf8(&b)
            .ok()?
            .parse::<std::net::IpAddr>()
            .ok()
            .map(Ip::from)
    }

    /// Every file below the directory, in the order Go's `filepath.Walk`
    /// visits them (names sorted bytewise, directories entered in place),
    /// with its content trimmed; unreadable ones are skipped.
    fn walk(&self, f: &mut dyn FnMut(&Path, &str)) {
        fn go(p: &Path, f: &mut dyn FnMut(&Path, &str)) {
            let Ok(md) = std::fs::symlink_metadata(p) else {
                return;
            };
            if md.is_dir() {
                let Ok(rd) = std::fs::read_dir(p) else { return };
                let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
                names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
                for n in names {
                    go(&p.join(n), f);
                }
                return;
            }
            let Ok(b) = std::fs::read(p) else { return };
            // Content that is not UTF-8 cannot equal an ID and an ifname.
            if let Ok(s) = std::str::from_utf8(&b) {
                f(p, s.trim());
            }
        }
        go(&self.dir, f);
    }

    fn keys(id: &str, ifname: &str) -> (String, String) {
        let id = id.trim();
        (format!("{id}\r\n{ifname}"), id.to_string())
    }

    /// The addresses held by `id`/`ifname` (or by `id` in the old format).
    pub fn get_by_id(&self, id: &str, ifname: &str) -> Vec<Ip> {
        let (new, old) = Self::keys(id, ifname);
        let mut out = Vec::new();
        self.walk(&mut |p, s| {
            if (s == new || s == old)
                && let Some(ip) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<std::net::IpAddr>().ok())
            {
                out.push(Ip::from(ip));
            }
        });
        out
    }

    fn remove_matching(&self, key: &str) -> bool {
        let mut found = false;
        self.walk(&mut |p, s| {
            if s == key && std::fs::remove_file(p).is_ok() {
                found = true;
            }
        });
        found
    }

    /// Release what `id`/`ifname` holds; when nothing is, what `id` holds in
    /// the old format. Errors are swallowed, as the plugin does.
    pub fn release_by_id(&self, id: &str, ifname: &str) {
        let (new, old) = Self::keys(id, ifname);
        if !self.remove_matching(&new) {
            self.remove_matching(&old);
        }
    }

    /// Does `id`/`ifname` (or `id` in the old format) hold any address?
    pub fn find_by_id(&self, id: &str, ifname: &str) -> bool {
        let (new, old) = Self::keys(id, ifname);
        let mut found = false;
        self.walk(&mut |_, s| found |= s == new);
        if !found {
            self.walk(&mut |_, s| found |= s == old);
        }
        found
    }
}
