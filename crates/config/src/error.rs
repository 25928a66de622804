//! The one error of configuration: which setting, and what is wrong with it.

/// A setting that is missing, malformed or inconsistent. The message never
/// repeats a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error in `{setting}`: {message}")]
pub struct ConfigError {
    /// The dotted setting name (`api.listen`), or the file for file errors.
    pub setting: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}
