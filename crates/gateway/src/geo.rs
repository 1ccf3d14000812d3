//! Country allow and deny lists: the MaxMind-format database (read into memory once, when the
//! gateway is built) and the question the geo phase asks of it, "may this client in?".

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use maxminddb::{PathElement, Reader};
use rollgate_core::config::edge::{EdgeMode, GeoConfig};

use crate::edge::EdgeError;

/// What the geo lists say about a refused client: its country, `None` when unknown.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GeoVerdict {
    pub(crate) country: Option<String>,
}

/// The database and the lists of one gateway.
pub(crate) struct GeoFilter {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
    countries: Vec<String>,
    allow: bool,
    unknown_allowed: bool,
    pub(crate) mode: EdgeMode,
}

impl fmt::Debug for GeoFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoFilter")
            .field("database", &self.path)
            .field("countries", &self.countries)
            .field("allow", &self.allow)
            .field("unknown_allowed", &self.unknown_allowed)
            .field("mode", &self.mode)
            .finish()
    }
}

impl GeoFilter {
    /// Reads the database whole; a missing or corrupt file is an error at start, never a
    /// silent "every country unknown".
    pub(crate) fn open(config: &GeoConfig) -> Result<GeoFilter, EdgeError> {
        let reader = Reader::open_readfile(&config.database).map_err(|e| EdgeError::Geo {
            path: config.database.clone(),
            message: e.to_string(),
        })?;
        Ok(GeoFilter {
            reader,
            path: config.database.clone(),
            countries: config.countries.clone(),
            allow: config.allow,
            unknown_allowed: config.unknown_allowed,
            mode: config.mode,
        })
    }

    /// The ISO code of `ip`'s country (`country.iso_code`, else `registered_country.iso_code`,
    /// as GeoLite2-Country has both); `None` when the database does not know it.
    pub(crate) fn country(&self, ip: IpAddr) -> Option<&str> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        ["country", "registered_country"]
            .into_iter()
            .find_map(|top| {
                found
                    .decode_path::<&str>(&[PathElement::Key(top), PathElement::Key("iso_code")])
                    .ok()
                    .flatten()
            })
    }

    /// `None` when `ip` may in; otherwise the verdict for the log.
    pub(crate) fn check(&self, ip: IpAddr) -> Option<GeoVerdict> {
        let country = self.country(ip);
        let allowed = match country {
            None => self.unknown_allowed,
            Some(c) => self.countries.iter().any(|l| l == c) == self.allow,
        };
        (!allowed).then(|| GeoVerdict {
            country: country.map(str::to_owned),
        })
    }
}
