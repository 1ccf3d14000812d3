//! Finding things from the command line: the configuration, the data directory beside it,
//! and a running server's address and token.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rollgate_control::{SERVE_FILE, ServeInfo, TOKEN_FILE};
use rollgate_core::Config;

use crate::Global;
use crate::client::Api;

/// Loads and validates the configuration file; the error lists every problem.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Config::parse(&text, &path.display().to_string())
        .map_err(|errs| anyhow::anyhow!("invalid configuration:\n{errs}"))
}

/// The data directory: `--data-dir`, else `server.data_dir` of the config (relative to the
/// config's folder), else `.rollgate` beside the config.
pub fn data_dir(g: &Global, config: Option<&Config>) -> PathBuf {
    if let Some(d) = &g.data_dir {
        return d.clone();
    }
    let base = g
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    match config.and_then(|c| c.server.data_dir.clone()) {
        Some(d) if d.is_absolute() => d,
        Some(d) => base.join(d),
        None => base.join(".rollgate"),
    }
}

/// `path` relative to the configuration file's folder (absolute paths unchanged).
pub fn config_relative(g: &Global, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    g.config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join(path)
}

/// A client for the running server: `--server` and `ROLLGATE_TOKEN` when given, else what the
/// server wrote into its data directory.
pub fn api(g: &Global) -> anyhow::Result<Api> {
    let config = if g.data_dir.is_none() && g.server.is_none() && g.config.exists() {
        Config::parse(&std::fs::read_to_string(&g.config).unwrap_or_default(), "").ok()
    } else {
        None
    };
    let dir = data_dir(g, config.as_ref());
    let base = match &g.server {
        Some(s) => s.trim_end_matches('/').to_string(),
        None => {
            let path = dir.join(SERVE_FILE);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "no running rollgate server found: {} does not exist (start one with `rollgate serve --config {}`, or pass --server/--data-dir)",
                    path.display(),
                    g.config.display()
                ),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let info: ServeInfo = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid", path.display()))?;
            info.control
        }
    };
    let token = match std::env::var("ROLLGATE_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let path = dir.join(TOKEN_FILE);
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "no API token: set ROLLGATE_TOKEN or make {} readable",
                        path.display()
                    )
                })?
        }
    };
    Api::new(&base, token)
}
