//! A small UCUM subset: enough to compare and convert the quantities clinical data uses
//! (metric prefixes on the SI base units, litres, time, pressure, US/imperial mass and
//! length, percent and annotations). Not the full UCUM table; unknown units convert to
//! nothing, and comparisons with them are then unknown (empty).

use crate::decimal::Decimal;

/// Dimension exponents: metre, gram, second, radian, kelvin, coulomb, candela, mole,
/// international unit.
pub type Dimensions = [i8; 9];

/// A unit reduced to a factor on base units and their dimensions.
#[derive(Clone, Copy, Debug)]
pub struct Canonical {
    /// Multiply a value in the unit by this to get it in base units.
    pub factor: Decimal,
    /// Exponents of the base units.
    pub dims: Dimensions,
}

/// The longest unit expression looked at.
const MAX_UNIT_LEN: usize = 256;

struct Atom {
    code: &'static str,
    factor: &'static str,
    dims: Dimensions,
    metric: bool,
}

const fn dims(m: i8, g: i8, s: i8) -> Dimensions {
    [m, g, s, 0, 0, 0, 0, 0, 0]
}

const ATOMS: &[Atom] = &[
    Atom {
        code: "m",
        factor: "1",
        dims: dims(1, 0, 0),
        metric: true,
    },
    Atom {
        code: "g",
        factor: "1",
        dims: dims(0, 1, 0),
        metric: true,
    },
    Atom {
        code: "s",
        factor: "1",
        dims: dims(0, 0, 1),
        metric: true,
    },
    Atom {
        code: "rad",
        factor: "1",
        dims: [0, 0, 0, 1, 0, 0, 0, 0, 0],
        metric: true,
    },
    Atom {
        code: "K",
        factor: "1",
        dims: [0, 0, 0, 0, 1, 0, 0, 0, 0],
        metric: true,
    },
    Atom {
        code: "C",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 1, 0, 0, 0],
        metric: true,
    },
    Atom {
        code: "cd",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 0, 1, 0, 0],
        metric: true,
    },
    Atom {
        code: "mol",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 0, 0, 1, 0],
        metric: true,
    },
    Atom {
        code: "eq",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 0, 0, 1, 0],
        metric: true,
    },
    Atom {
        code: "osm",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 0, 0, 1, 0],
        metric: true,
    },
    Atom {
        code: "kat",
        factor: "1",
        dims: [0, 0, -1, 0, 0, 0, 0, 1, 0],
        metric: true,
    },
    Atom {
        code: "U",
        factor: "1",
        dims: [0, 0, -1, 0, 0, 0, 0, 1, 0],
        metric: true,
    },
    Atom {
        code: "[iU]",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 0, 0, 0, 1],
        metric: true,
    },
    Atom {
        code: "[IU]",
        factor: "1",
        dims: [0, 0, 0, 0, 0, 0, 0, 0, 1],
        metric: true,
    },
    Atom {
        code: "L",
        factor: "0.001",
        dims: dims(3, 0, 0),
        metric: true,
    },
    Atom {
        code: "l",
        factor: "0.001",
        dims: dims(3, 0, 0),
        metric: true,
    },
    Atom {
        code: "t",
        factor: "1000000",
        dims: dims(0, 1, 0),
        metric: true,
    },
    Atom {
        code: "Hz",
        factor: "1",
        dims: dims(0, 0, -1),
        metric: true,
    },
    Atom {
        code: "N",
        factor: "1000",
        dims: dims(1, 1, -2),
        metric: true,
    },
    Atom {
        code: "Pa",
        factor: "1000",
        dims: dims(-1, 1, -2),
        metric: true,
    },
    Atom {
        code: "bar",
        factor: "100000000",
        dims: dims(-1, 1, -2),
        metric: true,
    },
    Atom {
        code: "J",
        factor: "1000",
        dims: dims(2, 1, -2),
        metric: true,
    },
    Atom {
        code: "W",
        factor: "1000",
        dims: dims(2, 1, -3),
        metric: true,
    },
    Atom {
        code: "cal",
        factor: "4184",
        dims: dims(2, 1, -2),
        metric: true,
    },
    Atom {
        code: "m[Hg]",
        factor: "133322000",
        dims: dims(-1, 1, -2),
        metric: true,
    },
    Atom {
        code: "m[H2O]",
        factor: "9806650",
        dims: dims(-1, 1, -2),
        metric: true,
    },
    Atom {
        code: "min",
        factor: "60",
        dims: dims(0, 0, 1),
        metric: false,
    },
    Atom {
        code: "h",
        factor: "3600",
        dims: dims(0, 0, 1),
        metric: false,
    },
    Atom {
        code: "d",
        factor: "86400",
        dims: dims(0, 0, 1),
        metric: false,
    },
    Atom {
        code: "wk",
        factor: "604800",
        dims: dims(0, 0, 1),
        metric: false,
    },
    Atom {
        code: "mo",
        factor: "2629800",
        dims: dims(0, 0, 1),
        metric: false,
    },
    Atom {
        code: "a",
        factor: "31557600",
        dims: dims(0, 0, 1),
        metric: false,
    },
    Atom {
        code: "[lb_av]",
        factor: "453.59237",
        dims: dims(0, 1, 0),
        metric: false,
    },
    Atom {
        code: "[oz_av]",
        factor: "28.349523125",
        dims: dims(0, 1, 0),
        metric: false,
    },
    Atom {
        code: "[in_i]",
        factor: "0.0254",
        dims: dims(1, 0, 0),
        metric: false,
    },
    Atom {
        code: "[ft_i]",
        factor: "0.3048",
        dims: dims(1, 0, 0),
        metric: false,
    },
    Atom {
        code: "[yd_i]",
        factor: "0.9144",
        dims: dims(1, 0, 0),
        metric: false,
    },
    Atom {
        code: "[mi_i]",
        factor: "1609.344",
        dims: dims(1, 0, 0),
        metric: false,
    },
    Atom {
        code: "[gal_us]",
        factor: "0.003785411784",
        dims: dims(3, 0, 0),
        metric: false,
    },
    Atom {
        code: "[foz_us]",
        factor: "0.0000295735295625",
        dims: dims(3, 0, 0),
        metric: false,
    },
    Atom {
        code: "%",
        factor: "0.01",
        dims: dims(0, 0, 0),
        metric: false,
    },
    Atom {
        code: "[ppth]",
        factor: "0.001",
        dims: dims(0, 0, 0),
        metric: false,
    },
    Atom {
        code: "[ppm]",
        factor: "0.000001",
        dims: dims(0, 0, 0),
        metric: false,
    },
    Atom {
        code: "[ppb]",
        factor: "0.000000001",
        dims: dims(0, 0, 0),
        metric: false,
    },
    Atom {
        code: "deg",
        factor: "0.0174532925199433",
        dims: [0, 0, 0, 1, 0, 0, 0, 0, 0],
        metric: false,
    },
];

const PREFIXES: &[(&str, &str)] = &[
    ("da", "10"),
    ("Y", "1000000000000000000000000"),
    ("Z", "1000000000000000000000"),
    ("E", "1000000000000000000"),
    ("P", "1000000000000000"),
    ("T", "1000000000000"),
    ("G", "1000000000"),
    ("M", "1000000"),
    ("k", "1000"),
    ("h", "100"),
    ("d", "0.1"),
    ("c", "0.01"),
    ("m", "0.001"),
    ("u", "0.000001"),
    ("n", "0.000000001"),
    ("p", "0.000000000001"),
    ("f", "0.000000000000001"),
];

fn dec(text: &str) -> Decimal {
    Decimal::parse(text).unwrap_or(Decimal::ZERO)
}

fn lookup_atom(symbol: &str) -> Option<Canonical> {
    if let Some(atom) = ATOMS.iter().find(|a| a.code == symbol) {
        return Some(Canonical {
            factor: dec(atom.factor),
            dims: atom.dims,
        });
    }
    for (prefix, factor) in PREFIXES {
        if let Some(rest) = symbol.strip_prefix(prefix)
            && let Some(atom) = ATOMS.iter().find(|a| a.code == rest && a.metric)
        {
            return Some(Canonical {
                factor: dec(factor).checked_mul(dec(atom.factor))?,
                dims: atom.dims,
            });
        }
    }
    None
}

fn power(unit: Canonical, exponent: i32) -> Option<Canonical> {
    let mut factor = Decimal::from_i64(1);
    for _ in 0..exponent.unsigned_abs() {
        factor = factor.checked_mul(unit.factor)?;
    }
    if exponent < 0 {
        factor = Decimal::from_i64(1).checked_div(factor)?;
    }
    let mut dims = unit.dims;
    for d in &mut dims {
        *d = i8::try_from(i32::from(*d) * exponent).ok()?;
    }
    Some(Canonical { factor, dims })
}

fn multiply(a: Canonical, b: Canonical, divide: bool) -> Option<Canonical> {
    let factor = if divide {
        a.factor.checked_div(b.factor)?
    } else {
        a.factor.checked_mul(b.factor)?
    };
    let mut dims = a.dims;
    for (d, e) in dims.iter_mut().zip(b.dims) {
        *d = if divide {
            d.checked_sub(e)?
        } else {
            d.checked_add(e)?
        };
    }
    Some(Canonical { factor, dims })
}

struct Parser<'u> {
    text: &'u str,
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn term(&mut self) -> Option<Canonical> {
        self.depth += 1;
        if self.depth > 16 {
            return None;
        }
        let mut result = if self.peek() == Some(b'/') {
            Canonical {
                factor: Decimal::from_i64(1),
                dims: [0; 9],
            }
        } else {
            self.component()?
        };
        while let Some(op) = self.peek() {
            match op {
                b'.' => {
                    self.at += 1;
                    result = multiply(result, self.component()?, false)?;
                }
                b'/' => {
                    self.at += 1;
                    result = multiply(result, self.component()?, true)?;
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Some(result)
    }

    fn component(&mut self) -> Option<Canonical> {
        let base = match self.peek()? {
            b'(' => {
                self.at += 1;
                let inner = self.term()?;
                if self.peek() != Some(b')') {
                    return None;
                }
                self.at += 1;
                inner
            }
            b'{' => {
                let end = self.text[self.at..].find('}')?;
                self.at += end + 1;
                return Some(Canonical {
                    factor: Decimal::from_i64(1),
                    dims: [0; 9],
                });
            }
            b'0'..=b'9' => {
                let start = self.at;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.at += 1;
                }
                let number = dec(&self.text[start..self.at]);
                let mut unit = Canonical {
                    factor: number,
                    dims: [0; 9],
                };
                if matches!(self.peek(), Some(b'*') | Some(b'^')) {
                    self.at += 1;
                    let exponent = self.exponent()?;
                    let base = Decimal::from_i64(1);
                    let ten = Decimal::from_i64(10);
                    let mut factor = base;
                    for _ in 0..exponent.unsigned_abs() {
                        factor = factor.checked_mul(ten)?;
                    }
                    if exponent < 0 {
                        factor = base.checked_div(factor)?;
                    }
                    unit.factor = factor;
                    if number.to_i64() != Some(10) {
                        return None;
                    }
                }
                // An annotation may follow a number: `10*3{cells}`.
                if self.peek() == Some(b'{') {
                    let end = self.text[self.at..].find('}')?;
                    self.at += end + 1;
                }
                return Some(unit);
            }
            _ => {
                let start = self.at;
                let mut bracket = 0i32;
                while let Some(b) = self.peek() {
                    match b {
                        b'[' => bracket += 1,
                        b']' => bracket -= 1,
                        b'.' | b'/' | b'(' | b')' | b'{' if bracket == 0 => break,
                        b'0'..=b'9' | b'-' | b'+' if bracket == 0 => break,
                        _ => {}
                    }
                    self.at += 1;
                }
                let symbol = &self.text[start..self.at];
                if symbol.is_empty() {
                    return None;
                }
                let unit = lookup_atom(symbol)?;
                if self.peek() == Some(b'{') {
                    let end = self.text[self.at..].find('}')?;
                    self.at += end + 1;
                }
                unit
            }
        };
        if matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+')) {
            let exponent = self.exponent()?;
            return power(base, exponent);
        }
        Some(base)
    }

    fn exponent(&mut self) -> Option<i32> {
        let start = self.at;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.at += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let value: i32 = self.text[start..self.at].parse().ok()?;
        (value.abs() <= 24).then_some(value)
    }
}

/// The calendar keywords of FHIRPath quantity literals and the UCUM unit each stands for
/// when converted (`week` is exactly `wk`; `year`/`month` only approximately `a`/`mo`).
pub fn calendar_to_ucum(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "year" | "years" => "a",
        "month" | "months" => "mo",
        "week" | "weeks" => "wk",
        "day" | "days" => "d",
        "hour" | "hours" => "h",
        "minute" | "minutes" => "min",
        "second" | "seconds" => "s",
        "millisecond" | "milliseconds" => "ms",
        _ => return None,
    })
}

/// The canonical form of a unit (a FHIRPath calendar keyword or a UCUM expression).
pub fn canonical(unit: &str) -> Option<Canonical> {
    let unit = calendar_to_ucum(unit).unwrap_or(unit);
    if unit.is_empty() || unit == "1" {
        return Some(Canonical {
            factor: Decimal::from_i64(1),
            dims: [0; 9],
        });
    }
    if unit.len() > MAX_UNIT_LEN {
        return None;
    }
    let mut parser = Parser {
        text: unit,
        at: 0,
        depth: 0,
    };
    let result = parser.term()?;
    (parser.at == unit.len()).then_some(result)
}

/// `value unit` expressed in base units, with its dimensions.
pub fn to_base(value: Decimal, unit: &str) -> Option<(Decimal, Dimensions)> {
    let canonical = canonical(unit)?;
    Some((value.checked_mul(canonical.factor)?, canonical.dims))
}

/// `value` in `from` converted to `to`, when both have the same dimensions.
pub fn convert(value: Decimal, from: &str, to: &str) -> Option<Decimal> {
    let a = canonical(from)?;
    let b = canonical(to)?;
    if a.dims != b.dims {
        return None;
    }
    let base = value.checked_mul(a.factor)?;
    let factor = b.factor;
    if factor.value_eq(&Decimal::from_i64(1)) {
        return Some(base);
    }
    base.checked_div(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_common_units() {
        let grams = to_base(Decimal::from_i64(4000), "mg").unwrap();
        assert_eq!(grams.0.to_string(), "4.000");
        assert!(canonical("[lb_av]").is_some());
        assert!(canonical("mm[Hg]").is_some());
        assert!(canonical("mL/min/{1.73_m2}").is_some());
        assert!(canonical("10*3/uL").is_some());
        assert!(canonical("kg/m2").is_some());
        assert!(canonical("[s]").is_none());
        assert_eq!(
            canonical("cm.m").unwrap().dims,
            canonical("m2").unwrap().dims
        );
        assert_eq!(
            convert(Decimal::from_i64(1), "wk", "d")
                .unwrap()
                .to_string(),
            "7"
        );
    }
}
