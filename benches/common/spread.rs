//! The spread of one figure across a bench's rounds: these machines are
//! noisy, so a bench reports min / median / max, never the best round.

/// Minimum, median and maximum of `values` (not empty).
#[derive(Clone, Copy)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        assert!(!values.is_empty(), "a spread of nothing");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Spread {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        }
    }

    /// `min–median–max` with `decimals` digits after the point.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$}–{:.d$}–{:.d$}",
            self.min,
            self.median,
            self.max,
            d = decimals
        )
    }
}

/// Per-round ratios `row[i] / floor[i]` of two series measured side by side.
pub fn ratios(row: &[f64], floor: &[f64]) -> Vec<f64> {
    row.iter().zip(floor).map(|(r, f)| r / f).collect()
}
