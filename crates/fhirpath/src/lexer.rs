//! Tokens of FHIRPath text.

use crate::error::ParseError;

/// One token and the byte offset where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub offset: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    /// A plain identifier or keyword (`name`, `and`, `true`).
    Identifier(String),
    /// A backtick-delimited identifier: never a keyword.
    Delimited(String),
    /// `'…'` with escapes resolved.
    String(String),
    /// A number as written: digits, optionally `.` and digits.
    Number(String),
    /// `@2014-01-05T10:30`: the text after `@`.
    DateTime(String),
    /// `@T10:30`: the text after `@T`.
    Time(String),
    /// `$this`, `$index`, `$total`: the name after `$`.
    Special(String),
    /// `%name`, `%'name'`, `` %`name` ``: the name.
    Variable(String),
    /// Punctuation and operators.
    Symbol(&'static str),
    End,
}

const SYMBOLS: &[&str] = &[
    "<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", "{", "}", ",", "+", "-", "*", "/", "&", "|",
    "=", "~", "<", ">",
];

pub fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        if b.is_ascii_whitespace() {
            at += 1;
            continue;
        }
        if b == b'/' && bytes.get(at + 1) == Some(&b'/') {
            while at < bytes.len() && bytes[at] != b'\n' {
                at += 1;
            }
            continue;
        }
        if b == b'/' && bytes.get(at + 1) == Some(&b'*') {
            match text[at + 2..].find("*/") {
                Some(end) => at += 2 + end + 2,
                None => {
                    return Err(ParseError::Syntax {
                        offset: at,
                        message: "unterminated comment".into(),
                    });
                }
            }
            continue;
        }
        let offset = at;
        let kind = if b.is_ascii_alphabetic() || b == b'_' {
            let start = at;
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                at += 1;
            }
            TokenKind::Identifier(text[start..at].to_string())
        } else if b == b'`' {
            let (value, end) = read_quoted(text, at, b'`')?;
            at = end;
            TokenKind::Delimited(value)
        } else if b == b'\'' {
            let (value, end) = read_quoted(text, at, b'\'')?;
            at = end;
            TokenKind::String(value)
        } else if b.is_ascii_digit() {
            let start = at;
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                at += 1;
            }
            if bytes.get(at) == Some(&b'.') && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
                at += 1;
                while at < bytes.len() && bytes[at].is_ascii_digit() {
                    at += 1;
                }
            }
            TokenKind::Number(text[start..at].to_string())
        } else if b == b'@' {
            at += 1;
            if bytes.get(at) == Some(&b'T') {
                at += 1;
                let start = at;
                at = scan_time(bytes, at);
                TokenKind::Time(text[start..at].to_string())
            } else {
                let start = at;
                at = scan_date(bytes, at);
                if bytes.get(at) == Some(&b'T') {
                    at += 1;
                    at = scan_time(bytes, at);
                    at = scan_offset(bytes, at);
                }
                if at == start {
                    return Err(ParseError::Syntax {
                        offset,
                        message: "invalid date/time literal".into(),
                    });
                }
                TokenKind::DateTime(text[start..at].to_string())
            }
        } else if b == b'$' {
            at += 1;
            let start = at;
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                at += 1;
            }
            TokenKind::Special(text[start..at].to_string())
        } else if b == b'%' {
            at += 1;
            match bytes.get(at) {
                Some(b'`') => {
                    let (value, end) = read_quoted(text, at, b'`')?;
                    at = end;
                    TokenKind::Variable(value)
                }
                Some(b'\'') => {
                    let (value, end) = read_quoted(text, at, b'\'')?;
                    at = end;
                    TokenKind::Variable(value)
                }
                _ => {
                    let start = at;
                    while at < bytes.len()
                        && (bytes[at].is_ascii_alphanumeric()
                            || bytes[at] == b'_'
                            || bytes[at] == b'-')
                    {
                        at += 1;
                    }
                    if at == start {
                        return Err(ParseError::Syntax {
                            offset,
                            message: "empty variable name".into(),
                        });
                    }
                    TokenKind::Variable(text[start..at].to_string())
                }
            }
        } else {
            let Some(symbol) = SYMBOLS
                .iter()
                .find(|s| text[at..].starts_with(**s))
                .copied()
            else {
                let shown: String = text[at..].chars().take(1).collect();
                return Err(ParseError::Syntax {
                    offset,
                    message: format!("unexpected character {shown:?}"),
                });
            };
            at += symbol.len();
            TokenKind::Symbol(symbol)
        };
        tokens.push(Token { kind, offset });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        offset: text.len(),
    });
    Ok(tokens)
}

fn scan_digits(bytes: &[u8], mut at: usize, count: usize) -> Option<usize> {
    for _ in 0..count {
        if !bytes.get(at).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        at += 1;
    }
    Some(at)
}

fn scan_date(bytes: &[u8], at: usize) -> usize {
    let Some(mut end) = scan_digits(bytes, at, 4) else {
        return at;
    };
    for _ in 0..2 {
        if bytes.get(end) == Some(&b'-')
            && let Some(next) = scan_digits(bytes, end + 1, 2)
        {
            end = next;
        } else {
            break;
        }
    }
    end
}

fn scan_time(bytes: &[u8], at: usize) -> usize {
    let Some(mut end) = scan_digits(bytes, at, 2) else {
        return at;
    };
    for _ in 0..2 {
        if bytes.get(end) == Some(&b':')
            && let Some(next) = scan_digits(bytes, end + 1, 2)
        {
            end = next;
        } else {
            return end;
        }
    }
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 1;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    end
}

fn scan_offset(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(b'Z') => at + 1,
        Some(b'+') | Some(b'-') => {
            if let Some(end) = scan_digits(bytes, at + 1, 2)
                && bytes.get(end) == Some(&b':')
                && let Some(end) = scan_digits(bytes, end + 1, 2)
            {
                end
            } else {
                at
            }
        }
        _ => at,
    }
}

/// Reads a `'`- or `` ` ``-quoted text starting at `start`; returns it unescaped and the
/// offset after the closing quote.
fn read_quoted(text: &str, start: usize, quote: u8) -> Result<(String, usize), ParseError> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut at = start + 1;
    loop {
        let Some(&b) = bytes.get(at) else {
            return Err(ParseError::Syntax {
                offset: start,
                message: "unterminated quoted text".into(),
            });
        };
        if b == quote {
            return Ok((out, at + 1));
        }
        if b == b'\\' {
            let Some(&escaped) = bytes.get(at + 1) else {
                return Err(ParseError::Syntax {
                    offset: at,
                    message: "unterminated escape".into(),
                });
            };
            at += 2;
            match escaped {
                b'\'' => out.push('\''),
                b'"' => out.push('"'),
                b'`' => out.push('`'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'f' => out.push('\u{000C}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hex = text.get(at..at + 4).ok_or_else(|| ParseError::Syntax {
                        offset: at,
                        message: "short \\u escape".into(),
                    })?;
                    let code = u32::from_str_radix(hex, 16).map_err(|_| ParseError::Syntax {
                        offset: at,
                        message: "invalid \\u escape".into(),
                    })?;
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                    at += 4;
                }
                _ => {
                    return Err(ParseError::Syntax {
                        offset: at - 2,
                        message: "invalid escape".into(),
                    });
                }
            }
            continue;
        }
        // Copy one whole UTF-8 character.
        let ch_len = text[at..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[at..at + ch_len]);
        at += ch_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text)
            .expect("tokenizes")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn numbers_stop_before_invocations() {
        assert_eq!(
            kinds("1.convertsToInteger()")[..3],
            [
                TokenKind::Number("1".into()),
                TokenKind::Symbol("."),
                TokenKind::Identifier("convertsToInteger".into())
            ]
        );
        assert_eq!(kinds("1.587")[0], TokenKind::Number("1.587".into()));
    }

    #[test]
    fn dates_times_and_comments() {
        assert_eq!(
            kinds("@2014-01-01T08.lowBoundary()")[0],
            TokenKind::DateTime("2014-01-01T08".into())
        );
        assert_eq!(
            kinds("@2015-02-04T14:34:28.123+10:00")[0],
            TokenKind::DateTime("2015-02-04T14:34:28.123+10:00".into())
        );
        assert_eq!(kinds("@T14:34")[0], TokenKind::Time("14:34".into()));
        assert_eq!(kinds("2 // c\n/* x */ + 2").len(), 4);
        assert!(tokenize("2 /* open").is_err());
    }

    #[test]
    fn strings_and_variables() {
        assert_eq!(
            kinds(r"'P\u0065ter\''")[0],
            TokenKind::String("Peter'".into())
        );
        assert_eq!(
            kinds("%`vs-administrative-gender`")[0],
            TokenKind::Variable("vs-administrative-gender".into())
        );
        assert_eq!(kinds("%ucum")[0], TokenKind::Variable("ucum".into()));
        assert!(tokenize("'open").is_err());
        assert!(tokenize("#").is_err());
    }
}
