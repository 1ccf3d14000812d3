//! Gateway errors: [`GatewayError`] for starting and running a listener, and [`ProxyError`]
//! for the answers the gateway itself gives to a request, with the one table that maps each
//! to an HTTP status and a stable code.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::StatusCode;

use crate::auth::AuthFailure;

/// Failure to start or run a gateway listener.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("gateway cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A serving thread or its runtime could not be set up.
    #[error("gateway for environment {env} cannot start its workers: {source}")]
    Worker {
        /// The environment the gateway serves.
        env: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The access log file could not be opened for appending.
    #[error("gateway cannot open access log {}: {source}", path.display())]
    AccessLog {
        /// The configured access log path.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

/// Where the fault behind a gateway-produced answer lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The request cannot be served as sent.
    Client,
    /// The routing table has nothing for it.
    Routing,
    /// The chosen upstream failed.
    Upstream,
}

/// An answer the gateway produces itself instead of forwarding the upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No app matches the request's host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The app matched but has no version with weight and instances.
    #[error("app {app} has no upstream taking traffic")]
    NoUpstream {
        /// The matched app.
        app: String,
    },
    /// The request body is larger than `max_body_bytes`.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Reading the request body from the client failed.
    #[error("reading the request body failed: {0}")]
    ClientBody(String),
    /// Every instance tried failed before answering.
    #[error("upstream unavailable after {attempts} attempt(s): {reason}")]
    UpstreamUnavailable {
        /// Instances tried.
        attempts: usize,
        /// The last failure, for logs only.
        reason: String,
    },
    /// The upstream did not send response headers within `upstream_timeout`.
    #[error("upstream sent no response headers within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    /// The client address is in `deny_ips`, or not in a non-empty `allow_ips`.
    #[error("client address refused by the IP lists")]
    IpDenied,
    /// The client is over its rate limit.
    #[error("client over its rate limit; retry after {retry_after_secs} s")]
    RateLimited {
        /// Whole seconds until a request would be allowed, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// The WAF found an attack in block mode. Never carries the payload.
    #[error("request blocked by the WAF")]
    RequestBlocked,
    /// The request line and headers exceed `max_header_bytes` or `max_headers`.
    #[error("request headers exceed the limits ({bytes} bytes, {count} fields)")]
    HeadersTooLarge {
        /// Size of the request line and headers as received.
        bytes: usize,
        /// Header fields received.
        count: usize,
    },
    /// The request body did not arrive within `body_read_timeout`.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The client's country is refused by the geo lists.
    #[error("client country refused by the geo lists")]
    GeoDenied,
    /// The route needs an API key or a signature and the request has no valid one.
    #[error("request not authenticated: {0}")]
    Unauthorized(AuthFailure),
    /// The authenticated key is over its rate limit.
    #[error("key over its rate limit; retry after {retry_after_secs} s")]
    KeyRateLimited {
        /// Whole seconds until a request would be allowed, sent as `Retry-After`.
        retry_after_secs: u64,
    },
}

impl ProxyError {
    /// The one table from error to HTTP status, stable code and fault source.
    fn classify(&self) -> (StatusCode, &'static str, ErrorSource) {
        use ErrorSource::{Client, Routing, Upstream};
        match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, "no_route", Routing),
            Self::NoUpstream { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_upstream", Routing),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", Client),
            Self::ClientBody(_) => (StatusCode::BAD_REQUEST, "bad_request_body", Client),
            Self::UpstreamUnavailable { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable", Upstream)
            }
            Self::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", Upstream),
            Self::IpDenied => (StatusCode::FORBIDDEN, "ip_denied", Client),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Client),
            Self::RequestBlocked => (StatusCode::FORBIDDEN, "request_blocked", Client),
            Self::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                Client,
            ),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout", Client),
            Self::GeoDenied => (StatusCode::FORBIDDEN, "geo_denied", Client),
            // A full replay cache is the gateway's limit, not the client's fault.
            Self::Unauthorized(AuthFailure::ReplayCacheFull) => (
                StatusCode::SERVICE_UNAVAILABLE,
                AuthFailure::ReplayCacheFull.code(),
                Client,
            ),
            Self::Unauthorized(failure) => (StatusCode::UNAUTHORIZED, failure.code(), Client),
            Self::KeyRateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "key_rate_limited", Client)
            }
        }
    }

    /// The HTTP status sent to the client.
    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    /// Stable machine-readable code, the `code` of the JSON body and the access log `error`.
    pub fn code(&self) -> &'static str {
        self.classify().1
    }

    /// Whose fault it is.
    pub fn source_kind(&self) -> ErrorSource {
        self.classify().2
    }

    /// True when the upstream failed and the answer counts as an upstream failure in metrics.
    pub fn is_upstream_failure(&self) -> bool {
        self.source_kind() == ErrorSource::Upstream
    }

    /// Seconds for the `Retry-After` header, for answers that have one (429).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } | Self::KeyRateLimited { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            Self::Unauthorized(AuthFailure::ReplayCacheFull) => Some(1),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401: which credential the route takes.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Self::Unauthorized(AuthFailure::ApiKeyMissing | AuthFailure::ApiKeyInvalid) => {
                Some("ApiKey realm=\"rollgate\"")
            }
            Self::Unauthorized(AuthFailure::ReplayCacheFull) => None,
            Self::Unauthorized(_) => Some("Signature realm=\"rollgate\""),
            _ => None,
        }
    }

    /// True when the connection must close after this answer, because unread request bytes
    /// may still be on the way (a body cut off by its read timeout).
    pub fn closes_connection(&self) -> bool {
        matches!(self, Self::BodyTimeout(_))
    }

    /// The message sent to the client. Server-side answers use fixed text so that addresses,
    /// instance ids and OS errors never leave the gateway; the details go to the logs. Edge
    /// answers never repeat what the client sent (a WAF block in particular must not reflect
    /// the payload back).
    pub fn public_message(&self) -> String {
        match self {
            Self::NoRoute => "no app is routed for this host and path".to_owned(),
            Self::NoUpstream { .. } => "no instance is available for this app".to_owned(),
            Self::BodyTooLarge { limit } => format!("request body exceeds {limit} bytes"),
            Self::ClientBody(_) => "the request body could not be read".to_owned(),
            Self::UpstreamUnavailable { .. } => "the upstream service is unavailable".to_owned(),
            Self::UpstreamTimeout(_) => "the upstream service did not answer in time".to_owned(),
            Self::IpDenied => "requests from this address are not allowed".to_owned(),
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests from this address; retry in {retry_after_secs} s")
            }
            Self::RequestBlocked => {
                "the request was blocked by the gateway's security rules".to_owned()
            }
            Self::HeadersTooLarge { .. } => {
                "the request headers exceed the gateway's limits".to_owned()
            }
            Self::BodyTimeout(_) => "the request body did not arrive in time".to_owned(),
            Self::GeoDenied => "requests from this country are not allowed".to_owned(),
            // One text per code: the code alone says what failed, nothing more is revealed.
            Self::Unauthorized(failure) => match failure {
                AuthFailure::ApiKeyMissing => "this route needs an API key (X-API-Key)",
                AuthFailure::ApiKeyInvalid => "the API key is not valid",
                AuthFailure::SignatureMissing => {
                    "this route needs a signed request (X-Signature, X-Timestamp)"
                }
                AuthFailure::SignatureInvalid => "the request signature is not valid",
                AuthFailure::SignatureExpired => {
                    "the request timestamp is outside the allowed window"
                }
                AuthFailure::SignatureReplayed => "this signed request was already used",
                AuthFailure::ReplayCacheFull => {
                    "signed requests cannot be checked right now; retry shortly"
                }
            }
            .to_owned(),
            Self::KeyRateLimited { retry_after_secs } => {
                format!("too many requests for this API key; retry in {retry_after_secs} s")
            }
        }
    }

    /// The JSON body `{"code": ..., "message": ...}` sent to the client.
    pub fn body(&self) -> String {
        serde_json::json!({ "code": self.code(), "message": self.public_message() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_bodies_do_not_leak_details() {
        let err = ProxyError::UpstreamUnavailable {
            attempts: 2,
            reason: "tcp connect error 10.0.0.7:8080: Connection refused".to_owned(),
        };
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let body: serde_json::Value = serde_json::from_str(&err.body()).expect("json");
        assert_eq!(body["code"], "upstream_unavailable");
        assert!(!err.body().contains("10.0.0.7"));
        assert!(!err.body().contains("refused"));
        let err = ProxyError::NoUpstream {
            app: "secret-app".to_owned(),
        };
        assert!(!err.body().contains("secret-app"));
    }

    #[test]
    fn status_table() {
        let cases = [
            (ProxyError::NoRoute, 404, "no_route"),
            (
                ProxyError::NoUpstream { app: "a".into() },
                503,
                "no_upstream",
            ),
            (ProxyError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (
                ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
                504,
                "upstream_timeout",
            ),
            (ProxyError::IpDenied, 403, "ip_denied"),
            (
                ProxyError::RateLimited {
                    retry_after_secs: 3,
                },
                429,
                "rate_limited",
            ),
            (ProxyError::RequestBlocked, 403, "request_blocked"),
            (
                ProxyError::HeadersTooLarge { bytes: 1, count: 1 },
                431,
                "headers_too_large",
            ),
            (
                ProxyError::BodyTimeout(std::time::Duration::from_secs(1)),
                408,
                "body_timeout",
            ),
            (ProxyError::GeoDenied, 403, "geo_denied"),
            (
                ProxyError::Unauthorized(AuthFailure::ApiKeyMissing),
                401,
                "api_key_missing",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::ApiKeyInvalid),
                401,
                "api_key_invalid",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::SignatureMissing),
                401,
                "signature_missing",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::SignatureInvalid),
                401,
                "signature_invalid",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::SignatureExpired),
                401,
                "signature_expired",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::SignatureReplayed),
                401,
                "signature_replayed",
            ),
            (
                ProxyError::Unauthorized(AuthFailure::ReplayCacheFull),
                503,
                "auth_unavailable",
            ),
            (
                ProxyError::KeyRateLimited {
                    retry_after_secs: 2,
                },
                429,
                "key_rate_limited",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(err.code(), code);
        }
    }
}
