//! Money: integer micro-dollars everywhere, parsed from decimal text without floating point.
//!
//! A price of the managed-usage table is USD per million tokens, which is exactly
//! micro-dollars per token; prices with decimals (`0.15`) are kept as micro-dollars per
//! *million* tokens so that nothing is rounded until a call's total, which is rounded up
//! to the next micro-dollar (the operator is never under-charged by rounding).

use std::collections::BTreeMap;

/// Micro-dollars in one dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// Why a money amount or price could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an amount: use a decimal number such as 12 or 0.15")]
    NotDecimal(String),
    #[error("`{0}` has more than 6 decimal places")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("`{0}`: expected MODEL=IN,OUT (USD per million input and output tokens)")]
    BadPrice(String),
}

/// Reads a non-negative decimal amount (`"12"`, `"0.15"`, `"3.000001"`) scaled by 10⁶:
/// dollars → micro-dollars, or USD per million tokens → micro-dollars per million tokens.
pub fn parse_micros(text: &str) -> Result<i64, MoneyError> {
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(MoneyError::NotDecimal(text.to_string()));
    }
    if frac.len() > 6 {
        return Err(MoneyError::TooPrecise(text.to_string()));
    }
    let whole: i64 =
        if whole.is_empty() { 0 } else { whole.parse().map_err(|_| MoneyError::TooLarge(text.to_string()))? };
    let frac_micros: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
    whole
        .checked_mul(MICROS_PER_USD)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(|| MoneyError::TooLarge(text.to_string()))
}

/// Micro-dollars of a dollar amount given as a JSON number (an API field such as
/// `managed_cap_usd`), rounded to the nearest micro-dollar; `None` when negative,
/// not finite or too large.
pub fn usd_to_micros(usd: f64) -> Option<i64> {
    let m = (usd * MICROS_PER_USD as f64).round();
    (usd.is_finite() && (0.0..9.0e18).contains(&m)).then_some(m as i64)
}

/// Dollars of micro-dollars, for display fields (`managed_used_usd`).
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
}

/// Micro-dollars as dollar text, exact: `$12.345678`, `-$0.000001`.
pub fn format_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}${}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// The price of one model: micro-dollars per million input and output tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_per_m: i64,
    pub output_per_m: i64,
}

impl Price {
    /// Micro-dollars of a call, rounded up to the whole micro-dollar.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> i64 {
        let total = i128::from(input_tokens) * i128::from(self.input_per_m)
            + i128::from(output_tokens) * i128::from(self.output_per_m);
        let micros = (total + 999_999) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }
}

/// Parses `MODEL=IN,OUT` (USD per million tokens).
pub fn parse_price(text: &str) -> Result<(String, Price), MoneyError> {
    let bad = || MoneyError::BadPrice(text.to_string());
    let (model, prices) = text.split_once('=').ok_or_else(bad)?;
    let (input, output) = prices.split_once(',').ok_or_else(bad)?;
    let model = model.trim();
    if model.is_empty() {
        return Err(bad());
    }
    Ok((model.to_string(), Price { input_per_m: parse_micros(input)?, output_per_m: parse_micros(output)? }))
}

/// The operator's managed-usage price table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    pub models: BTreeMap<String, Price>,
    /// Price of models the table does not name; `None`: they are refused.
    pub default: Option<Price>,
}

impl PriceTable {
    /// The price of `model`: its own entry, else the default.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.models.get(model).copied().or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_becomes_exact_micros() {
        assert_eq!(parse_micros("12"), Ok(12_000_000));
        assert_eq!(parse_micros("0.15"), Ok(150_000));
        assert_eq!(parse_micros(".5"), Ok(500_000));
        assert_eq!(parse_micros("3.000001"), Ok(3_000_001));
        assert_eq!(parse_micros(" 7. "), Ok(7_000_000));
        assert!(matches!(parse_micros("0.0000001"), Err(MoneyError::TooPrecise(_))));
        for bad in ["", ".", "-1", "1e3", "abc", "1.2.3", "nan"] {
            assert!(matches!(parse_micros(bad), Err(MoneyError::NotDecimal(_))), "{bad}");
        }
        assert!(matches!(parse_micros("99999999999999999"), Err(MoneyError::TooLarge(_))));
    }

    #[test]
    fn a_call_costs_its_tokens_rounded_up_to_the_micro() {
        // $3 / $15 per million: 1,000 in + 500 out = 3,000 + 7,500 micros.
        let p = Price { input_per_m: 3_000_000, output_per_m: 15_000_000 };
        assert_eq!(p.cost(1_000, 500), 10_500);
        // $0.15 per million: 7 tokens = 1.05 micros → 2.
        let cheap = Price { input_per_m: 150_000, output_per_m: 0 };
        assert_eq!(cheap.cost(7, 0), 2);
        assert_eq!(cheap.cost(0, 0), 0);
        assert_eq!(p.cost(u64::MAX, u64::MAX), i64::MAX);
    }

    #[test]
    fn prices_are_found_by_model_then_default() {
        let (m, p) = parse_price("gpt-4o=2.5,10").unwrap();
        assert_eq!((m.as_str(), p), ("gpt-4o", Price { input_per_m: 2_500_000, output_per_m: 10_000_000 }));
        assert!(parse_price("gpt-4o=2.5").is_err());
        assert!(parse_price("=1,2").is_err());
        let mut t = PriceTable::default();
        t.models.insert(m, p);
        assert_eq!(t.price("gpt-4o"), Some(p));
        assert_eq!(t.price("openai/gpt-4o"), None, "a prefix is the proxy's to strip");
        assert_eq!(t.price("other"), None);
        t.default = Some(Price { input_per_m: 1, output_per_m: 1 });
        assert_eq!(t.price("other"), t.default);
    }

    #[test]
    fn api_dollars_round_to_micros() {
        assert_eq!(usd_to_micros(0.5), Some(500_000));
        assert_eq!(usd_to_micros(0.1 + 0.2), Some(300_000));
        assert_eq!(usd_to_micros(-0.01), None);
        assert_eq!(usd_to_micros(f64::NAN), None);
        assert_eq!(micros_to_usd(1_500_000), 1.5);
        assert_eq!(format_usd(12_345_678), "$12.345678");
        assert_eq!(format_usd(-1), "-$0.000001");
    }
}
