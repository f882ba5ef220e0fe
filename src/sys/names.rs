//! Read-only listings of names for shell completion: no netlink, no privileges, no error
//! (what cannot be read lists nothing).

use std::path::Path;

/// Interfaces of the namespace `/sys` was mounted for (the shell's, or `ip netns exec`'s),
/// bridges included, without `lo`; sorted.
pub fn host_interfaces() -> Vec<String> {
    let mut v = dir_names(Path::new("/sys/class/net"));
    v.retain(|n| n != "lo");
    v
}

/// Names under `/var/run/netns` (`ip netns add`, and the links pipe makes); sorted.
pub fn netns_names() -> Vec<String> {
    dir_names(Path::new(crate::sys::netns::NETNS_RUN_DIR))
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
