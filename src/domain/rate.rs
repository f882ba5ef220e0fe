//! `--rate RATE[/BURST]`: an egress rate limit in tc's own units, parsed once.
//! Pure: the token bucket (TBF) parameters are computed here, the qdisc is
//! created by `netlink::set_tbf`.

use std::fmt;
use std::str::FromStr;

/// A rate in bytes per second, and an optional bucket size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_sec: u64,
    pub burst: Option<u32>,
}

/// Rate suffixes as tc accepts them (case-insensitive): `bit` (or none) is
/// bits per second, `bps` is *bytes* per second, k/m/g/t are powers of 1000,
/// ki/mi/gi/ti powers of 1024. The value is bits per second per unit.
const RATE_UNITS: &[(&str, f64)] = &[
    ("", 1.0),
    ("bit", 1.0),
    ("kbit", 1e3),
    ("mbit", 1e6),
    ("gbit", 1e9),
    ("tbit", 1e12),
    ("kibit", 1024.0),
    ("mibit", 1048576.0),
    ("gibit", 1073741824.0),
    ("tibit", 1099511627776.0),
    ("bps", 8.0),
    ("kbps", 8e3),
    ("mbps", 8e6),
    ("gbps", 8e9),
    ("tbps", 8e12),
    ("kibps", 8.0 * 1024.0),
    ("mibps", 8.0 * 1048576.0),
    ("gibps", 8.0 * 1073741824.0),
    ("tibps", 8.0 * 1099511627776.0),
];

/// Size suffixes as tc accepts them: none or `b` is bytes, k/kb (1024 bytes),
/// m/mb, g/gb, and kbit/mbit/gbit (1024^n / 8 bytes).
const SIZE_UNITS: &[(&str, f64)] = &[
    ("", 1.0),
    ("b", 1.0),
    ("k", 1024.0),
    ("kb", 1024.0),
    ("kbit", 1024.0 / 8.0),
    ("m", 1048576.0),
    ("mb", 1048576.0),
    ("mbit", 1048576.0 / 8.0),
    ("g", 1073741824.0),
    ("gb", 1073741824.0),
    ("gbit", 1073741824.0 / 8.0),
];

fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, u) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some((n, u.to_ascii_lowercase()))
}

fn scaled(s: &str, units: &[(&str, f64)]) -> Option<f64> {
    let (n, u) = number_and_unit(s)?;
    let scale = units.iter().find(|(name, _)| *name == u)?.1;
    let v = n * scale;
    (v.is_finite() && v > 0.0).then_some(v)
}

/// The largest rate, in bits per second: a 64-bit count of bits (the kernel's
/// 64-bit rate is in bytes, tc's display in bits).
/// 2^63 is exact as an f64, so the check below has no rounding edge.
pub const MAX_RATE_BITS: u64 = 1 << 63;

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let (r, b) = match s.split_once('/') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let bits = scaled(r, RATE_UNITS).ok_or_else(|| {
            format!("rate {r:?} is not a rate such as 10mbit, 512kbit or 1gbit (tc's units; bps is bytes/s)")
        })?;
        // The kernel keeps a TBF rate as 64-bit bytes/s (TCA_TBF_RATE64) and
        // tc shows it in bits/s: the rate in bits must fit in 64 bits too.
        if bits > MAX_RATE_BITS as f64 {
            return Err(format!(
                "rate {r:?} is more than TBF can express; give at most {MAX_RATE_BITS}bit (about 9.2 Ebit/s)"
            ));
        }
        let bytes_per_sec = (bits / 8.0).round() as u64;
        if bytes_per_sec < 1 {
            return Err(format!("rate {r:?} is below one byte per second"));
        }
        debug_assert!(bytes_per_sec.checked_mul(8).is_some());
        let burst = match b {
            None => None,
            Some(b) => {
                let v = scaled(b, SIZE_UNITS).ok_or_else(|| {
                    format!("burst {b:?} is not a size such as 32kb, 64k or 15000 (bytes)")
                })?;
                if v > f64::from(u32::MAX) {
                    return Err(format!("burst {b:?} is larger than 4 GiB"));
                }
                Some(v.round() as u32)
            }
        };
        Ok(Rate {
            bytes_per_sec,
            burst,
        })
    }
}

impl fmt::Display for Rate {
    /// As tc prints it: bits per second with the largest exact 1000-unit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.bytes_per_sec.saturating_mul(8);
        let (v, u) = if bits.is_multiple_of(1_000_000_000) {
            (bits / 1_000_000_000, "gbit")
        } else if bits.is_multiple_of(1_000_000) {
            (bits / 1_000_000, "mbit")
        } else if bits.is_multiple_of(1000) {
            (bits / 1000, "kbit")
        } else {
            (bits, "bit")
        };
        write!(f, "{v}{u}")?;
        if let Some(b) = self.burst {
            write!(f, "/{b}")?;
        }
        Ok(())
    }
}

/// How long a packet may wait in the bucket's queue: sets its byte limit.
pub const LATENCY_MS: u64 = 50;

/// The token bucket for `rate` on an interface of `mtu`: (burst, limit) in bytes.
/// The default burst is 10 ms at the rate, and at least 16 KiB and two full
/// frames (a bucket smaller than one frame would drop every full-size packet).
pub fn tbf(rate: Rate, mtu: u32) -> Result<(u32, u32), String> {
    let frame = u64::from(mtu) + 14;
    let burst = match rate.burst {
        Some(b) => {
            if u64::from(b) < frame {
                return Err(format!(
                    "burst {b} bytes is smaller than one frame at MTU {mtu} ({frame} bytes): full-size packets \
                     would all be dropped; give a burst of at least {frame}"
                ));
            }
            u64::from(b)
        }
        None => (rate.bytes_per_sec / 100).max(16 * 1024).max(2 * frame),
    };
    let limit = rate.bytes_per_sec.saturating_mul(LATENCY_MS) / 1000 + burst;
    Ok((
        burst.min(u64::from(u32::MAX)) as u32,
        limit.min(u64::from(u32::MAX)) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_units() {
        let r: Rate = "10mbit".parse().unwrap();
        assert_eq!(r.bytes_per_sec, 1_250_000);
        assert_eq!(r.burst, None);
        assert_eq!(r.to_string(), "10mbit");
        assert_eq!("1Gbit".parse::<Rate>().unwrap().bytes_per_sec, 125_000_000);
        assert_eq!("512kbit".parse::<Rate>().unwrap().bytes_per_sec, 64_000);
        assert_eq!(
            "8000".parse::<Rate>().unwrap().bytes_per_sec,
            1000,
            "bare: bits"
        );
        assert_eq!(
            "1kbps".parse::<Rate>().unwrap().bytes_per_sec,
            1000,
            "bps: bytes"
        );
        assert_eq!("1mibit".parse::<Rate>().unwrap().bytes_per_sec, 131_072);
        assert_eq!("2.5mbit".parse::<Rate>().unwrap().to_string(), "2500kbit");
        let r: Rate = "100mbit/64kb".parse().unwrap();
        assert_eq!(r.burst, Some(65536));
        assert_eq!("1mbit/15000".parse::<Rate>().unwrap().burst, Some(15000));
        assert_eq!(
            "1mbit/15000".parse::<Rate>().unwrap().to_string(),
            "1mbit/15000"
        );
        assert_eq!("1mbit/32kbit".parse::<Rate>().unwrap().burst, Some(4096));
    }

    #[test]
    fn bad_rates_name_the_value() {
        for (s, want) in [
            ("fast", "\"fast\""),
            ("10mb", "\"10mb\""),
            ("0mbit", "\"0mbit\""),
            ("10mbit/lots", "\"lots\""),
            ("", "\"\""),
            ("99999999999999999999tbit", "more than TBF"),
            ("18446744073709551616", "more than TBF"),
        ] {
            let e = s.parse::<Rate>().unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn bucket_sizes() {
        let r: Rate = "10mbit".parse().unwrap();
        assert_eq!(tbf(r, 1500).unwrap(), (16384, 62_500 + 16384));
        let r: Rate = "10gbit".parse().unwrap();
        assert_eq!(tbf(r, 1500).unwrap().0, 12_500_000, "10 ms at the rate");
        let r: Rate = "10mbit".parse().unwrap();
        assert_eq!(tbf(r, 9000).unwrap().0, 18028, "two jumbo frames");
        let r: Rate = "10mbit/1k".parse().unwrap();
        assert!(tbf(r, 1500).unwrap_err().contains("at least 1514"));
    }
}
