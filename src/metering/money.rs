//! Amounts of money as people read them. Requests cost fractions of a micro-dollar, so a fixed
//! number of decimals prints most of them as zero, and two different amounts alike.

/// `$` and the amount with six significant digits, without an exponent.
pub fn usd(amount: f64) -> String {
    format!("${}", significant(amount))
}

/// Six significant digits, at least two decimals, no trailing zeros past those two.
pub fn significant(amount: f64) -> String {
    if !amount.is_finite() {
        return amount.to_string();
    }
    if amount == 0.0 {
        return "0.00".into();
    }
    let magnitude = amount.abs().log10().floor() as i32;
    let decimals = (5 - magnitude).clamp(2, 20) as usize;
    let mut text = format!("{amount:.decimals$}");
    if let Some(dot) = text.find('.') {
        while text.len() > dot + 3 && text.ends_with('0') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_keep_the_digits_that_tell_them_apart() {
        let cases: &[(f64, &str)] = &[
            (0.0, "$0.00"),
            (100.0, "$100.00"),
            (12.5, "$12.50"),
            (1234567.891, "$1234567.89"),
            (0.000001, "$0.000001"),
            (0.0000012, "$0.0000012"),
            (1.23456789e-6, "$0.00000123457"),
            (1e-9, "$0.000000001"),
            (-0.25, "$-0.25"),
        ];
        for (amount, want) in cases {
            assert_eq!(usd(*amount), *want, "{amount}");
        }
    }
}
