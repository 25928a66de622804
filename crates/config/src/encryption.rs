//! Building the key ring from the settings, including the embedded shape's
//! generated key file.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use byok_crypto::{KeyId, KeyRing, KeyRingError, generate_key_hex};
use secrecy::{ExposeSecret, SecretString};

use crate::{ConfigError, Settings, Shape};

/// The key id given to the seed's `ENCRYPTION_KEY` when it is the whole ring.
const SEED_KEY_ID: &str = "seed";

/// Where the key ring came from; callers log it (never the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRingSource {
    /// `encryption.keys`.
    Configured,
    /// Only `ENCRYPTION_KEY` (`encryption.legacy_key`): a one-key ring with id `seed`.
    LegacyKeyOnly,
    /// The embedded shape's key file, read as it was.
    KeyFile(PathBuf),
    /// The embedded shape had no key: a fresh one was written to this file.
    GeneratedKeyFile(PathBuf),
}

/// Builds the key ring the settings describe.
///
/// With neither `encryption.keys` nor `ENCRYPTION_KEY`, the embedded shape
/// keeps a generated ring in `encryption.key` beside its SQLite file (mode
/// 0600) so that a first run just works; the distributed shape refuses to
/// start, because workers on other machines could never share such a file.
pub fn load_key_ring(settings: &Settings) -> Result<(KeyRing, KeyRingSource), ConfigError> {
    let legacy = settings.encryption.legacy_key.as_ref();
    let (ring, source) = if let Some(keys) = &settings.encryption.keys {
        (
            parse_ring("encryption.keys", keys)?,
            KeyRingSource::Configured,
        )
    } else if let Some(legacy) = legacy {
        let id = KeyId::new(SEED_KEY_ID).expect("constant id is valid");
        let ring =
            KeyRing::single(id, legacy).map_err(|e| ring_error("encryption.legacy_key", &e))?;
        (ring, KeyRingSource::LegacyKeyOnly)
    } else if settings.shape() == Shape::Embedded {
        let path = settings.data_dir().join("encryption.key");
        key_file_ring(&path)?
    } else {
        return Err(ConfigError::new(
            "encryption.keys",
            "is required with PostgreSQL: generate a key with `byok keys generate` and set BYOK__ENCRYPTION__KEYS=\"1:<64 hex>\" (or ENCRYPTION_KEY)",
        ));
    };
    let ring = match legacy {
        Some(legacy) => ring
            .with_legacy_key(legacy)
            .map_err(|e| ring_error("encryption.legacy_key", &e))?,
        None => ring,
    };
    let ring = if settings.encryption.accept_legacy {
        ring.accept_legacy_everywhere()
    } else {
        ring
    };
    Ok((ring, source))
}

fn parse_ring(setting: &str, spec: &SecretString) -> Result<KeyRing, ConfigError> {
    KeyRing::parse(spec).map_err(|e| ring_error(setting, &e))
}

fn ring_error(setting: &str, error: &KeyRingError) -> ConfigError {
    // KeyRingError never contains key material, so its text is safe to show.
    ConfigError::new(setting, error.to_string())
}

fn key_file_ring(path: &Path) -> Result<(KeyRing, KeyRingSource), ConfigError> {
    let setting = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(ConfigError::new(
                    setting,
                    format!("is readable by other users (mode {mode:o}); run chmod 600 on it"),
                ));
            }
            let spec = SecretString::from(text.trim());
            Ok((
                parse_ring(&setting, &spec)?,
                KeyRingSource::KeyFile(path.to_path_buf()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key =
                generate_key_hex().map_err(|e| ConfigError::new(setting.clone(), e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|e| {
                    ConfigError::new(setting.clone(), format!("cannot create its directory: {e}"))
                })?;
            }
            let spec = SecretString::from(format!("1:{}", key.expose_secret()));
            // create_new: if another process wrote the file first, use theirs
            // rather than overwriting a key that may already seal rows.
            let written = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| {
                    f.write_all(spec.expose_secret().as_bytes())
                        .and_then(|()| f.sync_all())
                });
            match written {
                Ok(()) => Ok((
                    parse_ring(&setting, &spec)?,
                    KeyRingSource::GeneratedKeyFile(path.to_path_buf()),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => key_file_ring(path),
                Err(e) => Err(ConfigError::new(
                    setting,
                    format!("cannot write the generated key: {e}"),
                )),
            }
        }
        Err(e) => Err(ConfigError::new(setting, format!("cannot read: {e}"))),
    }
}

impl Settings {
    /// The SQLite database file, when the database is SQLite and on disk.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.database.url.expose_secret();
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// The embedded shape's data directory: the SQLite file's directory
    /// (`byok-data` by default).
    pub fn data_dir(&self) -> PathBuf {
        self.sqlite_path()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}
