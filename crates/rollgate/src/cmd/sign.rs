//! `rollgate sign`: signs a request for a route that needs an HMAC signature, printing the
//! `X-Timestamp` and `X-Signature` headers (or a ready curl command). It runs offline: the
//! canonical request is `rollgate_core::signing`'s, the same function the gateway verifies.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use rollgate_core::signing::{signature_for, valid_key_id};

/// Arguments of `rollgate sign`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The key id.
    #[arg(long)]
    pub key_id: String,
    /// File holding the key's secret (one trailing newline is ignored).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// HTTP method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// File whose exact bytes are the request body; default no body.
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Print a curl command instead of the headers.
    #[arg(long)]
    pub curl: bool,
    /// The full URL, e.g. `http://127.0.0.1:8443/api/users?limit=10`.
    pub url: String,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !valid_key_id(&a.key_id) {
        anyhow::bail!("--key-id: expected 1 to 64 of A-Z a-z 0-9 '-'");
    }
    let secret = std::fs::read_to_string(&a.secret_file)
        .with_context(|| format!("cannot read {}", a.secret_file.display()))?;
    let secret = secret
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&secret);
    let body = match &a.data_file {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        None => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let method = a.method.to_ascii_uppercase();
    let (timestamp, signature) = signed_headers(&a.key_id, secret, &method, &a.url, &body, now)?;
    if a.curl {
        let mut cmd = format!(
            "curl -X {method} -H {} -H {}",
            quote(&format!("X-Timestamp: {timestamp}")),
            quote(&format!("X-Signature: {signature}"))
        );
        if let Some(f) = &a.data_file {
            cmd.push_str(&format!(
                " --data-binary {}",
                quote(&format!("@{}", f.display()))
            ));
        }
        cmd.push_str(&format!(" {}", quote(&a.url)));
        println!("{cmd}");
    } else {
        println!("X-Timestamp: {timestamp}");
        println!("X-Signature: {signature}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The `X-Timestamp` and `X-Signature` values for a request to `url` at unix time `now`.
pub fn signed_headers(
    key_id: &str,
    secret: &str,
    method: &str,
    url: &str,
    body: &[u8],
    now: u64,
) -> anyhow::Result<(String, String)> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        anyhow::bail!("expected a full URL like http://127.0.0.1:8443/api/users, got {url}");
    }
    let timestamp = now.to_string();
    let signature = signature_for(
        key_id,
        secret.as_bytes(),
        method,
        uri.path(),
        uri.query(),
        &timestamp,
        body,
    );
    Ok((timestamp, signature))
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rollgate_core::config::edge::{AuthConfig, AuthRequirement, AuthRoute, KeyUse};
    use rollgate_gateway::{AuthFailure, Authenticator, Credentials, KeyMaterial, StaticKeys};

    use super::*;

    #[test]
    fn what_rollgate_sign_prints_verifies_in_the_gateway() {
        let secret = "deploy-0123456789abcdef";
        let now = 1_700_000_000;
        let body = br#"{"name":"Ada Lovelace"}"#;
        let url = "http://127.0.0.1:8443/api/users?sort=name&q=ada%20l&limit=10";
        let (ts, sig) = signed_headers("deploy", secret, "POST", url, body, now).expect("signed");
        assert_eq!(ts, "1700000000");
        assert!(sig.starts_with("keyId=deploy,signature="), "{sig}");

        let mut keys = StaticKeys::new();
        keys.insert(
            "deploy",
            KeyMaterial::from_secret("deploy", secret, KeyUse::Signature),
        );
        let config = AuthConfig {
            routes: vec![AuthRoute {
                prefix: "/".into(),
                auth: AuthRequirement::Signature,
            }],
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(&config, vec![Arc::new(keys)]).expect("authenticator");
        let headers = Credentials::from_fields([
            ("X-Timestamp", ts.as_bytes()),
            ("X-Signature", sig.as_bytes()),
        ]);
        // The gateway sees the query in another order and spelling: it still verifies.
        let verdict = auth.authenticate(
            "POST",
            "/api/users",
            Some("limit=10&q=ada%20l&sort=%6eame"),
            &headers,
            body,
            || now + 5,
        );
        assert_eq!(verdict, Ok(Some("deploy".to_owned())));
        let again = auth.authenticate(
            "POST",
            "/api/users",
            Some("limit=10&q=ada%20l&sort=name"),
            &headers,
            body,
            || now + 6,
        );
        assert_eq!(again, Err(AuthFailure::SignatureReplayed));
    }

    #[test]
    fn urls_must_be_absolute_and_quotes_survive_the_shell() {
        assert!(signed_headers("k", "s", "GET", "/relative", b"", 1).is_err());
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
