//! The content-addressed artifact store: `--artifact PATH` (a file or a directory) is copied
//! once into `artifacts/sha256/<hex>/` of the data directory and never rewritten.
//!
//! The digest covers the tree, not just bytes: every entry's relative path, kind, executable
//! bit and content (or link target), in sorted order, so the same tree always gets the same
//! digest and any change gets a new one. A copy is made in a temporary directory and renamed
//! into place, so a crash never leaves a half-written artifact under a real digest; the files
//! are made read-only so that running instances cannot change a released version.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Errors of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("artifact {0}: not a regular file, directory or symbolic link")]
    Unsupported(String),
    #[error("artifact store {path}: {source}")]
    Store { path: String, source: io::Error },
}

/// An imported artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// `sha256:<hex>`.
    pub digest: String,
    /// The immutable copy.
    pub path: PathBuf,
}

/// The store under `<data dir>/artifacts`.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

enum Entry {
    Dir,
    File { exec: bool, sha: [u8; 32] },
    Link(PathBuf),
}

impl ArtifactStore {
    pub fn new(root: PathBuf) -> ArtifactStore {
        ArtifactStore { root }
    }

    /// Where the artifact with this digest lives (whether or not it exists).
    pub fn path_of(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("sha256").join(hex)
    }

    /// Copies `source` into the store unless an artifact with the same digest is there.
    /// Blocking: call from a blocking thread.
    pub fn import(&self, source: &Path) -> Result<Artifact, ArtifactError> {
        let read_err = |p: &Path, source: io::Error| ArtifactError::Read {
            path: p.display().to_string(),
            source,
        };
        let meta = fs::metadata(source).map_err(|e| read_err(source, e))?;
        // A single file becomes a directory holding that file under its own name, so the run
        // command can call it as `./name`.
        let (base, entries) = if meta.is_file() {
            let name = source
                .file_name()
                .map(PathBuf::from)
                .ok_or_else(|| ArtifactError::Unsupported(source.display().to_string()))?;
            let parent = source
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let entry = file_entry(source, &meta).map_err(|e| read_err(source, e))?;
            (parent, vec![(name, entry)])
        } else if meta.is_dir() {
            let mut entries = Vec::new();
            walk(source, Path::new(""), &mut entries)?;
            (source.to_path_buf(), entries)
        } else {
            return Err(ArtifactError::Unsupported(source.display().to_string()));
        };

        let mut h = Sha256::new();
        for (rel, entry) in &entries {
            h.update(rel.as_os_str().as_encoded_bytes());
            h.update([0]);
            match entry {
                Entry::Dir => h.update(b"d"),
                Entry::File { exec, sha } => {
                    h.update(if *exec { b"x" } else { b"f" });
                    h.update(sha);
                }
                Entry::Link(target) => {
                    h.update(b"l");
                    h.update(target.as_os_str().as_encoded_bytes());
                }
            }
            h.update([0]);
        }
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        let dest = self.path_of(&digest);
        if dest.is_dir() {
            return Ok(Artifact { digest, path: dest });
        }

        let store_err = |p: &Path, source: io::Error| ArtifactError::Store {
            path: p.display().to_string(),
            source,
        };
        let tmp_root = self.root.join("tmp");
        fs::create_dir_all(&tmp_root).map_err(|e| store_err(&tmp_root, e))?;
        let tmp = tempdir_in(&tmp_root).map_err(|e| store_err(&tmp_root, e))?;
        let result = (|| -> Result<(), ArtifactError> {
            for (rel, entry) in &entries {
                let from = base.join(rel);
                let to = tmp.join(rel);
                match entry {
                    Entry::Dir => fs::create_dir_all(&to).map_err(|e| store_err(&to, e))?,
                    Entry::File { exec, .. } => {
                        if let Some(p) = to.parent() {
                            fs::create_dir_all(p).map_err(|e| store_err(p, e))?;
                        }
                        fs::copy(&from, &to).map_err(|e| read_err(&from, e))?;
                        let mode = if *exec { 0o555 } else { 0o444 };
                        fs::set_permissions(&to, fs::Permissions::from_mode(mode))
                            .map_err(|e| store_err(&to, e))?;
                    }
                    Entry::Link(target) => {
                        if let Some(p) = to.parent() {
                            fs::create_dir_all(p).map_err(|e| store_err(p, e))?;
                        }
                        std::os::unix::fs::symlink(target, &to).map_err(|e| store_err(&to, e))?;
                    }
                }
            }
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(|e| store_err(p, e))?;
            }
            fs::rename(&tmp, &dest).map_err(|e| store_err(&dest, e))
        })();
        if result.is_err() || tmp.exists() {
            let _ = fs::remove_dir_all(&tmp);
        }
        match result {
            Ok(()) => Ok(Artifact { digest, path: dest }),
            // Another import of the same tree won the rename: same digest, same content.
            Err(_) if dest.is_dir() => Ok(Artifact { digest, path: dest }),
            Err(e) => Err(e),
        }
    }
}

fn tempdir_in(root: &Path) -> io::Result<PathBuf> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    let p = root.join(format!("import-{}", hex::encode(bytes)));
    fs::create_dir(&p)?;
    Ok(p)
}

fn file_entry(path: &Path, meta: &fs::Metadata) -> io::Result<Entry> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Entry::File {
        exec: meta.permissions().mode() & 0o111 != 0,
        sha: h.finalize().into(),
    })
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Entry)>) -> Result<(), ArtifactError> {
    let dir = root.join(rel);
    let read_err = |p: &Path, source: io::Error| ArtifactError::Read {
        path: p.display().to_string(),
        source,
    };
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| read_err(&dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(&dir, e))?;
    names.sort();
    for name in names {
        let rel_child = rel.join(&name);
        let path = root.join(&rel_child);
        let meta = fs::symlink_metadata(&path).map_err(|e| read_err(&path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| read_err(&path, e))?;
            out.push((rel_child, Entry::Link(target)));
        } else if ft.is_dir() {
            out.push((rel_child.clone(), Entry::Dir));
            walk(root, &rel_child, out)?;
        } else if ft.is_file() {
            let entry = file_entry(&path, &meta).map_err(|e| read_err(&path, e))?;
            out.push((rel_child, entry));
        } else {
            return Err(ArtifactError::Unsupported(path.display().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_digest_and_copies_are_read_only() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("bin")).unwrap();
        fs::write(src.path().join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(
            src.path().join("bin/app"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(src.path().join("config.txt"), b"x=1").unwrap();
        let store = ArtifactStore::new(data.path().join("artifacts"));
        let a = store.import(src.path()).unwrap();
        assert!(a.digest.starts_with("sha256:") && a.digest.len() == 7 + 64);
        let b = store.import(src.path()).unwrap();
        assert_eq!(a, b);
        let mode = fs::metadata(a.path.join("bin/app"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555);
        assert_eq!(fs::read(a.path.join("config.txt")).unwrap(), b"x=1");
        assert!(
            fs::read_dir(data.path().join("artifacts/tmp"))
                .unwrap()
                .next()
                .is_none()
        );

        fs::write(src.path().join("config.txt"), b"x=2").unwrap();
        let c = store.import(src.path()).unwrap();
        assert_ne!(a.digest, c.digest);
        assert_eq!(
            fs::read(a.path.join("config.txt")).unwrap(),
            b"x=1",
            "never rewritten"
        );
    }

    #[test]
    fn a_single_file_lands_under_its_name() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let file = src.path().join("api");
        fs::write(&file, b"binary").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        let a = ArtifactStore::new(data.path().to_path_buf())
            .import(&file)
            .unwrap();
        assert_eq!(fs::read(a.path.join("api")).unwrap(), b"binary");
    }

    #[test]
    fn a_missing_artifact_names_the_path() {
        let data = tempfile::tempdir().unwrap();
        let err = ArtifactStore::new(data.path().to_path_buf())
            .import(Path::new("/nonexistent/x"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x"), "{err}");
    }
}
