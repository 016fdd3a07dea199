//! The cost model: a batch's measured device time at the device's hourly price, split across
//! its requests by their share of the batch's rows (the busy device is charged to the work on
//! it). Cache hits and coalesced followers cost nothing and record what they saved.

/// Cost of `rows` of a batch of `batch_rows` rows that kept the device busy for `compute_us`.
pub fn share_of_batch(compute_us: u64, rows: usize, batch_rows: usize, price_per_hour: f64) -> f64 {
    if batch_rows == 0 {
        return 0.0;
    }
    let batch_cost = compute_us as f64 / 3_600_000_000.0 * price_per_hour;
    batch_cost * rows as f64 / batch_rows as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_a_batch_add_up_to_the_batch() {
        let price = 3.5;
        let compute_us = 1_234_567;
        let shares = [1usize, 3, 60];
        let total: f64 = shares
            .iter()
            .map(|&rows| share_of_batch(compute_us, rows, 64, price))
            .sum();
        let whole = compute_us as f64 / 3.6e9 * price;
        assert!(
            ((total - whole) / whole).abs() < 1e-12,
            "{total} vs {whole}"
        );
    }

    #[test]
    fn an_empty_batch_costs_nothing() {
        assert_eq!(share_of_batch(1000, 0, 0, 1.0), 0.0);
    }
}
