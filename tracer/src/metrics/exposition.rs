//! The Prometheus text exposition format: families, samples, histograms,
//! with label values escaped as the format requires.

use std::fmt::Write as _;

/// Builds one exposition page.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a metric family: HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.out, "{name}{} {}", labels(l), number(v));
    }

    /// A histogram's samples: cumulative `buckets` as (upper bound, count),
    /// then +Inf, sum and count.
    pub fn histogram(
        &mut self,
        name: &str,
        l: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        for (le, n) in buckets {
            let mut with = l.to_vec();
            let le = number(*le);
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, *n as f64);
        }
        let mut with = l.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, count as f64);
        self.sample(&format!("{name}_sum"), l, sum);
        self.sample(&format!("{name}_count"), l, count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_labels_and_histograms() {
        let mut e = Exposition::new();
        e.family("memtrace_x_total", "counter", "An example.");
        e.sample("memtrace_x_total", &[("cgroup", "/a\"b\\c\nd")], 3.0);
        e.sample("memtrace_y", &[], 0.25);
        e.histogram(
            "memtrace_h_seconds",
            &[("cgroup", "/a")],
            &[(0.001, 1), (0.01, 3)],
            4,
            0.5,
        );
        let text = e.finish();
        assert!(text.contains("# TYPE memtrace_x_total counter\n"));
        assert!(
            text.contains(r#"memtrace_x_total{cgroup="/a\"b\\c\nd"} 3"#),
            "{text}"
        );
        assert!(text.contains("memtrace_y 0.25\n"));
        assert!(
            text.contains(r#"memtrace_h_seconds_bucket{cgroup="/a",le="0.001"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_h_seconds_bucket{cgroup="/a",le="+Inf"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"memtrace_h_seconds_count{cgroup="/a"} 4"#),
            "{text}"
        );
    }
}
