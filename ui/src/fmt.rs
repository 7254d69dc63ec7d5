//! Short human formats for numbers on screens and in logs.

/// `1.234s`, `12.3ms`, `456µs`, `999ns`.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.0}µs", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}

/// `b` in the largest power of 1024 that keeps it at least 1, and that
/// power's index, below `units`.
fn binary_scale(b: u64, units: usize) -> (f64, usize) {
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units {
        v /= 1024.0;
        u += 1;
    }
    (v, u)
}

/// `512B`, `64.0MiB`, `1.5GiB`.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (v, u) = binary_scale(b, UNITS.len());
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// Compact bytes for narrow columns: `12G`, `640M`, `3.5G`, `12K`.
pub fn fmt_bytes_short(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let (v, u) = binary_scale(b, UNITS.len());
    if v < 10.0 && u > 0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// A share in 0..=1 as `42%`.
pub fn pct(share: f64) -> String {
    format!("{:.0}%", (share * 100.0).clamp(0.0, 999.0))
}

/// Short durations for columns: `850µs`, `12ms`, `3.1s`.
pub fn fmt_us_short(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.0}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(1_500_000_000), "1.500s");
        assert_eq!(fmt_ns(2_500_000), "2.5ms");
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_bytes(512), "512B");
        assert_eq!(fmt_bytes(64 << 20), "64.0MiB");
        assert_eq!(fmt_bytes_short(12 << 30), "12G");
        assert_eq!(fmt_bytes_short(3 << 29), "1.5G");
        assert_eq!(pct(0.424), "42%");
        assert_eq!(fmt_us_short(850), "850µs");
        assert_eq!(fmt_us_short(12_400), "12ms");
    }
}
