//! Numbers with units for the monitor's tables: counts with SI suffixes (`12.3k`), durations
//! (`850 ns`, `12.3 us`, `1.23 s`) and shares (`98%`), each at most 7 characters so columns
//! stay aligned at 80 columns. Pure, host-tested.

use alloc::format;
use alloc::string::String;

/// A count: exact below 10,000, then three significant digits (truncated) with k, M, G or T.
pub fn count(n: u64) -> String {
    if n < 10_000 {
        return format!("{n}");
    }
    let (scale, suffix) = [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ]
    .into_iter()
    .find(|&(scale, _)| n >= scale)
    .unwrap_or((1_000, "k"));
    significant(n, scale, suffix)
}

/// A duration in nanoseconds, as ns, us, ms or s with three significant digits (truncated).
pub fn duration_ns(ns: u64) -> String {
    let (scale, suffix) = match ns {
        0..1_000 => return format!("{ns} ns"),
        1_000..1_000_000 => (1_000, " us"),
        1_000_000..1_000_000_000 => (1_000_000, " ms"),
        _ => (1_000_000_000, " s"),
    };
    significant(ns, scale, suffix)
}

/// `part` of `whole` as a whole percentage, rounded (`-` when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let (part, whole) = (u128::from(part.min(whole)), u128::from(whole));
    format!("{}%", (part * 100 + whole / 2) / whole)
}

/// `n / scale` with three significant digits (`1.23`, `12.3`, `123`) and the suffix, in
/// integer arithmetic (the kernel is soft-float).
fn significant(n: u64, scale: u64, suffix: &str) -> String {
    let (n, scale) = (u128::from(n), u128::from(scale));
    let hundredths = n * 100 / scale;
    if hundredths < 1_000 {
        format!("{}.{:02}{suffix}", hundredths / 100, hundredths % 100)
    } else if hundredths < 10_000 {
        let tenths = hundredths / 10;
        format!("{}.{}{suffix}", tenths / 10, tenths % 10)
    } else {
        format!("{}{suffix}", n / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(0), "0");
        assert_eq!(count(9_999), "9999");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(999_499), "999k");
        assert_eq!(count(1_234_567), "1.23M");
        assert_eq!(count(u64::MAX), "18446744T");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns(850), "850 ns");
        assert_eq!(duration_ns(12_340), "12.3 us");
        assert_eq!(duration_ns(1_230_000), "1.23 ms");
        assert_eq!(duration_ns(5_000_000_000), "5.00 s");
    }

    #[test]
    fn percents() {
        assert_eq!(percent(0, 0), "-");
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(2, 3), "67%");
        assert_eq!(percent(5, 3), "100%");
    }
}
