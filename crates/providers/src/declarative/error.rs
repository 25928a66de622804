//! Why a definition was refused.

use std::fmt;
use std::path::PathBuf;

/// A refused definition: the file, the provider (its id when it could be read), the field
/// (a dotted path such as `poll.states.DONE`; empty for the file as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file (or the origin given to [`super::Definition::parse`]).
    pub file: PathBuf,
    /// The provider's id, when known.
    pub provider: Option<String>,
    /// The dotted path of the field.
    pub field: String,
    /// Why.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provider definition {}", self.file.display())?;
        match &self.provider {
            Some(id) => write!(f, ", provider `{id}`")?,
            None => write!(f, ", provider unknown")?,
        }
        if self.field.is_empty() {
            write!(f, ", the file: {}", self.message)
        } else {
            write!(f, ", field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for DefinitionError {}
