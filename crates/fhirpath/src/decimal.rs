//! Exact decimal numbers: an `i128` mantissa and a decimal scale, so that `1.10` keeps its
//! two digits (FHIRPath precision and equivalence depend on them) and `0.1 + 0.2 = 0.3`.

use std::cmp::Ordering;
use std::fmt;

/// The most digits after the decimal point a value keeps; results of multiplication are
/// rounded to it.
pub const MAX_DECIMAL_SCALE: u32 = 28;

/// Digits after the decimal point that division computes before trailing zeros are removed.
pub const DIVISION_SCALE: u32 = 16;

/// A FHIRPath decimal: `mantissa × 10^-scale`, exact.
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Decimal {
    /// Zero with no digits after the point.
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };

    /// A decimal from its parts; `None` when the scale is beyond [`MAX_DECIMAL_SCALE`] + 10.
    pub fn new(mantissa: i128, scale: u32) -> Option<Decimal> {
        (scale <= MAX_DECIMAL_SCALE + 10).then_some(Decimal { mantissa, scale })
    }

    /// The integer `value` with scale 0.
    pub fn from_i64(value: i64) -> Decimal {
        Decimal {
            mantissa: i128::from(value),
            scale: 0,
        }
    }

    /// Parses `[+-]digits[.digits][e[+-]digits]` (JSON and FHIRPath number syntax).
    pub fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (number, exponent) = match rest.find(['e', 'E']) {
            Some(at) => {
                let exp_text = &rest[at + 1..];
                let exp_text = exp_text.strip_prefix('+').unwrap_or(exp_text);
                if exp_text.is_empty() || exp_text.len() > 6 {
                    return None;
                }
                (&rest[..at], exp_text.parse::<i32>().ok()?)
            }
            None => (rest, 0),
        };
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
            || (number.contains('.') && frac_part.is_empty())
        {
            return None;
        }
        let mut mantissa: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(b - b'0'))?;
        }
        let mut scale = i64::try_from(frac_part.len()).ok()? - i64::from(exponent);
        if scale < 0 {
            mantissa = mantissa.checked_mul(pow10(u32::try_from(-scale).ok()?)?)?;
            scale = 0;
        }
        let scale = u32::try_from(scale).ok()?;
        if negative {
            mantissa = -mantissa;
        }
        let mut value = Decimal::new(mantissa, scale)?;
        if value.scale > MAX_DECIMAL_SCALE {
            value = value.round(MAX_DECIMAL_SCALE);
        }
        Some(value)
    }

    /// Digits after the decimal point as written.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// True for any zero (`0`, `0.00`).
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// The value as an integer when it has no fractional part and fits.
    pub fn to_i64(&self) -> Option<i64> {
        let divisor = pow10(self.scale)?;
        if self.mantissa % divisor != 0 {
            return None;
        }
        i64::try_from(self.mantissa / divisor).ok()
    }

    /// The nearest `f64`.
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// A decimal from a finite `f64`, rounded to 15 significant digits (what an `f64` holds
    /// reliably) and without trailing zeros.
    pub fn from_f64(value: f64) -> Option<Decimal> {
        if !value.is_finite() {
            return None;
        }
        let text = format!("{value:.14e}");
        Decimal::parse(&text).map(|d| d.normalized())
    }

    fn mantissa_at(&self, scale: u32) -> Option<i128> {
        if scale >= self.scale {
            self.mantissa.checked_mul(pow10(scale - self.scale)?)
        } else {
            None
        }
    }

    /// Removes trailing zeros after the decimal point.
    pub fn normalized(self) -> Decimal {
        let mut value = self;
        while value.scale > 0 && value.mantissa % 10 == 0 {
            value.mantissa /= 10;
            value.scale -= 1;
        }
        value
    }

    /// Sum; `None` on overflow.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa_at(scale)?;
        let b = other.mantissa_at(scale)?;
        Decimal::new(a.checked_add(b)?, scale)
    }

    /// Difference; `None` on overflow.
    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.checked_add(-other)
    }

    /// Product, rounded to [`MAX_DECIMAL_SCALE`] digits; `None` on overflow.
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        let mantissa = self.mantissa.checked_mul(other.mantissa)?;
        let value = Decimal::new(mantissa, self.scale + other.scale)?;
        Some(if value.scale > MAX_DECIMAL_SCALE {
            value.round(MAX_DECIMAL_SCALE)
        } else {
            value
        })
    }

    /// Quotient to [`DIVISION_SCALE`] digits (rounded half away from zero), trailing zeros
    /// removed; `None` for division by zero or overflow.
    pub fn checked_div(self, other: Decimal) -> Option<Decimal> {
        if other.mantissa == 0 {
            return None;
        }
        // self.m / 10^sa ÷ other.m / 10^sb = (self.m × 10^k / other.m) / 10^(sa - sb + k)
        let mut k = i64::from(DIVISION_SCALE) + 1 - i64::from(self.scale) + i64::from(other.scale);
        if k < 0 {
            k = 0;
        }
        let mut k = u32::try_from(k).ok()?;
        let numerator = loop {
            if let Some(n) = pow10(k).and_then(|p| self.mantissa.checked_mul(p)) {
                break n;
            }
            if k == 0 {
                return None;
            }
            k -= 1;
        };
        let quotient = numerator / other.mantissa;
        let result_scale = i64::from(self.scale) - i64::from(other.scale) + i64::from(k);
        let value = if result_scale < 0 {
            Decimal::new(
                quotient.checked_mul(pow10(u32::try_from(-result_scale).ok()?)?)?,
                0,
            )?
        } else {
            Decimal::new(quotient, u32::try_from(result_scale).ok()?)?
        };
        // One guard digit was computed (truncated): rounding it away is exact
        // half-away-from-zero on the last kept digit.
        let target = value.scale.min(DIVISION_SCALE);
        Some(value.round(target).normalized())
    }

    /// Integer division truncated toward zero (`div`); `None` for division by zero.
    pub fn checked_div_trunc(self, other: Decimal) -> Option<Decimal> {
        if other.mantissa == 0 {
            return None;
        }
        let scale = self.scale.max(other.scale);
        let a = self.mantissa_at(scale)?;
        let b = other.mantissa_at(scale)?;
        Some(Decimal::from_i64(i64::try_from(a / b).ok()?))
    }

    /// Remainder with the sign of the dividend (`mod`); `None` for division by zero.
    pub fn checked_rem(self, other: Decimal) -> Option<Decimal> {
        if other.mantissa == 0 {
            return None;
        }
        let scale = self.scale.max(other.scale);
        let a = self.mantissa_at(scale)?;
        let b = other.mantissa_at(scale)?;
        Decimal::new(a % b, scale)
    }

    /// The absolute value.
    pub fn abs(self) -> Decimal {
        Decimal {
            mantissa: self.mantissa.checked_abs().unwrap_or(i128::MAX),
            scale: self.scale,
        }
    }

    fn rescale_with(self, digits: u32, mode: RoundMode) -> Decimal {
        if digits >= self.scale {
            return match self.mantissa_at(digits) {
                Some(mantissa) => Decimal {
                    mantissa,
                    scale: digits,
                },
                None => self,
            };
        }
        let Some(divisor) = pow10(self.scale - digits) else {
            return Decimal {
                mantissa: 0,
                scale: digits,
            };
        };
        let quotient = self.mantissa / divisor;
        let remainder = self.mantissa % divisor;
        let adjust = match mode {
            RoundMode::HalfAwayFromZero => {
                // |remainder| >= divisor / 2, without overflowing.
                if remainder.abs() >= divisor - remainder.abs() {
                    remainder.signum()
                } else {
                    0
                }
            }
            RoundMode::TowardZero => 0,
            RoundMode::Floor => {
                if remainder < 0 {
                    -1
                } else {
                    0
                }
            }
            RoundMode::Ceiling => i128::from(remainder > 0),
        };
        Decimal {
            mantissa: quotient + adjust,
            scale: digits,
        }
    }

    /// Rounded half away from zero to `digits` after the point.
    pub fn round(self, digits: u32) -> Decimal {
        self.rescale_with(digits, RoundMode::HalfAwayFromZero)
    }

    /// Truncated toward zero to `digits` after the point.
    pub fn truncate(self, digits: u32) -> Decimal {
        self.rescale_with(digits, RoundMode::TowardZero)
    }

    /// Rounded toward negative infinity to `digits` after the point.
    pub fn floor(self, digits: u32) -> Decimal {
        self.rescale_with(digits, RoundMode::Floor)
    }

    /// Rounded toward positive infinity to `digits` after the point.
    pub fn ceiling(self, digits: u32) -> Decimal {
        self.rescale_with(digits, RoundMode::Ceiling)
    }

    /// Numeric comparison, whatever the scales.
    pub fn compare(&self, other: &Decimal) -> Ordering {
        let scale = self.scale.max(other.scale);
        match (self.mantissa_at(scale), other.mantissa_at(scale)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self
                .to_f64()
                .partial_cmp(&other.to_f64())
                .unwrap_or(Ordering::Equal),
        }
    }

    /// Equal values (`1.10` equals `1.1`).
    pub fn value_eq(&self, other: &Decimal) -> bool {
        self.compare(other) == Ordering::Equal
    }

    /// FHIRPath equivalence: equal after rounding both to the scale of the less precise.
    pub fn equivalent(&self, other: &Decimal) -> bool {
        let digits = self.scale.min(other.scale);
        self.round(digits).value_eq(&other.round(digits))
    }
}

impl std::ops::Neg for Decimal {
    type Output = Decimal;

    fn neg(self) -> Decimal {
        Decimal {
            mantissa: self.mantissa.checked_neg().unwrap_or(i128::MAX),
            scale: self.scale,
        }
    }
}

#[derive(Clone, Copy)]
enum RoundMode {
    HalfAwayFromZero,
    TowardZero,
    Floor,
    Ceiling,
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{int}.{frac}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).expect("valid decimal")
    }

    #[test]
    fn parses_and_prints_keeping_scale() {
        for text in [
            "0",
            "1.0",
            "-1.587",
            "0.0034",
            "1234567890987654321.0",
            "120",
        ] {
            assert_eq!(d(text).to_string(), text);
        }
        assert_eq!(d("1e3").to_string(), "1000");
        assert_eq!(d("1.5E-2").to_string(), "0.015");
        for bad in ["", "-", "1.", ".5", "1.2.3", "abc", "1e"] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(d("0.1").checked_add(d("0.2")).unwrap().to_string(), "0.3");
        assert_eq!(d("1.2").checked_mul(d("1.8")).unwrap().to_string(), "2.16");
        assert_eq!(d("1").checked_div(d("2")).unwrap().to_string(), "0.5");
        assert_eq!(d("4.0").checked_div(d("2.0")).unwrap().to_string(), "2");
        assert_eq!(
            d("1.2").checked_div(d("1.8")).unwrap().round(2).to_string(),
            "0.67"
        );
        assert!(d("1").checked_div(d("0")).is_none());
        assert_eq!(d("2.2").checked_rem(d("1.8")).unwrap().to_string(), "0.4");
        assert_eq!(
            d("-5.5").checked_div_trunc(d("2")).unwrap().to_string(),
            "-2"
        );
    }

    #[test]
    fn rounding_modes() {
        assert_eq!(d("3.14159").round(3).to_string(), "3.142");
        assert_eq!(d("-1.5").round(0).to_string(), "-2");
        assert_eq!(d("-1.5875").floor(2).to_string(), "-1.59");
        assert_eq!(d("1.5865").floor(2).to_string(), "1.58");
        assert_eq!(d("-1.5865").ceiling(2).to_string(), "-1.58");
        assert_eq!(d("1.5").ceiling(0).to_string(), "2");
        assert_eq!(d("1").round(3).to_string(), "1.000");
    }

    #[test]
    fn equivalence_uses_the_lesser_precision() {
        assert!(d("1.10").value_eq(&d("1.1")));
        let third = d("1.2").checked_div(d("1.8")).unwrap();
        assert!(third.equivalent(&d("0.67")));
        assert!(!third.equivalent(&d("0.6")));
    }
}
