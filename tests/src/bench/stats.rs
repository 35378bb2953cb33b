//! Samples of durations and their quantiles.

use std::time::Duration;

/// Durations, kept in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    values: Vec<f64>,
    sorted: bool,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Adds one.
    pub fn push(&mut self, d: Duration) {
        self.values.push(d.as_secs_f64() * 1e6);
        self.sorted = false;
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `q` quantile (0.0 = min, 1.0 = max), nearest rank, in µs; NaN when empty.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        if !self.sorted {
            self.values.sort_by(f64::total_cmp);
            self.sorted = true;
        }
        self.values[((self.values.len() - 1) as f64 * q).round() as usize]
    }

    /// Median, in µs.
    pub fn p50(&mut self) -> f64 {
        self.quantile(0.5)
    }

    /// 99th percentile, in µs.
    pub fn p99(&mut self) -> f64 {
        self.quantile(0.99)
    }

    /// Largest, in µs.
    pub fn max(&mut self) -> f64 {
        self.quantile(1.0)
    }
}

/// A duration in µs, printed with a unit that keeps it short (µs below 10 ms, else ms).
pub fn human(us: f64) -> String {
    if us.is_nan() {
        "–".to_owned()
    } else if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut s = Samples::new();
        for us in [5, 1, 4, 2, 3] {
            s.push(Duration::from_micros(us));
        }
        assert_eq!((s.quantile(0.0), s.p50(), s.max()), (1.0, 3.0, 5.0));
        assert!(Samples::new().p50().is_nan());
        assert_eq!(human(950.4), "950 µs");
        assert_eq!(human(12_345.0), "12.3 ms");
    }
}
