//! How a front-end reaches its OpenID provider and the nodes: one `reqwest` client that
//! follows no redirect (a token goes only where it was meant to), and answers read to a
//! bound, so that no provider or node can make a front-end hold more than it chose.
//! What it is not: a retry loop or a cache (a front-end asks again at the next page).

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The connection failed while the body was read.
    #[error(transparent)]
    Transport(reqwest::Error),
    /// The body is larger than the caller's bound.
    #[error("the answer is larger than {limit_bytes} bytes")]
    TooLarge {
        /// The bound, in bytes.
        limit_bytes: usize,
    },
}

impl BodyError {
    /// The same error without the URL a transport error names (for texts that are logged
    /// or shown where the URL does not belong).
    pub fn without_url(self) -> BodyError {
        match self {
            BodyError::Transport(e) => BodyError::Transport(e.without_url()),
            other => other,
        }
    }
}

/// The client toward the provider and the nodes: over TLS with `tls` (trusting the network
/// CA) when given, else the platform's roots or plain HTTP for `http` URLs (tests only);
/// redirects are never followed.
pub fn http_client(tls: Option<rustls::ClientConfig>) -> Result<reqwest::Client, reqwest::Error> {
    let mut client = reqwest::Client::builder();
    if let Some(tls) = tls {
        client = client.tls_backend_preconfigured(tls);
    }
    client.redirect(reqwest::redirect::Policy::none()).build()
}

/// Whether `url` is an `http` or `https` URL without a trailing slash, as a configured base
/// URL must be (paths are appended to it with a `/`).
pub fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && !url.ends_with('/')
}

/// Reads an answer's body, at most `limit_bytes` of it: a larger body is an error as soon as
/// the chunk that passes the bound arrives, not after it was all read.
pub async fn read_body(
    mut response: reqwest::Response,
    limit_bytes: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit_bytes {
            return Err(BodyError::TooLarge { limit_bytes });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> reqwest::Response {
        reqwest::Response::from(axum::http::Response::new(body))
    }

    #[tokio::test]
    async fn bodies_are_read_to_their_bound() {
        assert_eq!(read_body(answer("abcd"), 4).await.unwrap(), b"abcd");
        let too_large = read_body(answer("abcde"), 4).await.unwrap_err();
        assert!(matches!(too_large, BodyError::TooLarge { limit_bytes: 4 }));
        assert_eq!(too_large.to_string(), "the answer is larger than 4 bytes");
    }

    #[test]
    fn base_urls_are_http_without_a_trailing_slash() {
        assert!(is_http_url("https://node.example/fhir"));
        assert!(is_http_url("http://127.0.0.1:8080"));
        assert!(!is_http_url("https://node.example/fhir/"));
        assert!(!is_http_url("ftp://node.example"));
    }
}
