//! The interface's two languages: Dutch (the default) and English, chosen with `?lang=` and
//! kept in a cookie (each front-end names its own), and [`texts!`](crate::texts), which
//! defines a front-end's table of texts, every text in both languages side by side.
//! What it is not: a general translation system (two fixed tables, checked at compile time),
//! or where the texts live (each front-end keeps its own).

use axum::http::HeaderMap;

/// How long the language cookie lasts, in seconds (a year).
pub const LANG_COOKIE_MAX_AGE_S: u64 = 365 * 24 * 60 * 60;

/// A language of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Dutch, the default.
    Nl,
    /// English.
    En,
}

impl Lang {
    /// The language a `lang` parameter or cookie value names.
    pub fn parse(value: &str) -> Option<Lang> {
        match value {
            "nl" => Some(Lang::Nl),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language's code, as `lang` attributes and parameters name it.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Nl => "nl",
            Lang::En => "en",
        }
    }

    /// The language the switch on every page offers.
    pub fn other(self) -> Lang {
        match self {
            Lang::Nl => Lang::En,
            Lang::En => Lang::Nl,
        }
    }

    /// The language of a request: the one its query's `lang` asks for, else the one cookie
    /// `cookie_name` keeps, else Dutch; and whether the query asked (then the cookie is to
    /// be set).
    pub fn of_request(
        query: &[(String, String)],
        headers: &HeaderMap,
        cookie_name: &str,
    ) -> (Lang, Option<Lang>) {
        let asked = query
            .iter()
            .find(|(name, _)| name == "lang")
            .and_then(|(_, value)| Lang::parse(value));
        let lang = asked
            .or_else(|| crate::page::cookie(headers, cookie_name).and_then(Lang::parse))
            .unwrap_or(Lang::Nl);
        (lang, asked)
    }
}

/// Defines a front-end's `Texts` (`pub(crate)`, a `&'static str` field per text) with its
/// Dutch and English tables from `name: "Dutch", "English";`, and `Texts::of(lang)`.
#[macro_export]
macro_rules! texts {
    ($($name:ident: $nl:literal, $en:literal;)*) => {
        /// Every text of the interface in one language.
        pub(crate) struct Texts {
            $(pub(crate) $name: &'static str,)*
        }
        const NL: Texts = Texts { $($name: $nl,)* };
        const EN: Texts = Texts { $($name: $en,)* };
        impl Texts {
            /// The texts in `lang`.
            pub(crate) fn of(lang: $crate::lang::Lang) -> &'static Texts {
                match lang {
                    $crate::lang::Lang::Nl => &NL,
                    $crate::lang::Lang::En => &EN,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

    crate::texts! {
        greeting: "Hallo", "Hello";
    }

    #[test]
    fn the_query_goes_before_the_cookie_and_dutch_is_the_default() {
        let mut headers = HeaderMap::new();
        let asked = [("lang".to_string(), "en".to_string())];
        assert_eq!(
            Lang::of_request(&asked, &headers, "taal"),
            (Lang::En, Some(Lang::En))
        );
        assert_eq!(Lang::of_request(&[], &headers, "taal"), (Lang::Nl, None));
        headers.insert(header::COOKIE, HeaderValue::from_static("taal=en"));
        assert_eq!(Lang::of_request(&[], &headers, "taal"), (Lang::En, None));
        assert_eq!(Lang::of_request(&[], &headers, "other"), (Lang::Nl, None));
        let unknown = [("lang".to_string(), "fr".to_string())];
        assert_eq!(
            Lang::of_request(&unknown, &headers, "taal"),
            (Lang::En, None)
        );
    }

    #[test]
    fn texts_come_in_both_languages() {
        assert_eq!(Texts::of(Lang::Nl).greeting, "Hallo");
        assert_eq!(Texts::of(Lang::Nl.other()).greeting, "Hello");
        assert_eq!(Lang::parse(Lang::En.code()), Some(Lang::En));
    }
}
