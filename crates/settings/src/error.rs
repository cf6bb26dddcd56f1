//! Why a setting was refused or not saved.

/// Which kind of setting an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Site,
    Block,
    Triggers,
    Tuning,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The setting was refused; the message names the field.
    #[error("{message}")]
    Invalid { setting: Setting, message: String },
    /// A settings file could not be read or written; the message names the file.
    #[error("{message}")]
    Storage { setting: Setting, message: String },
}

impl SettingsError {
    pub fn invalid(setting: Setting, message: impl Into<String>) -> SettingsError {
        SettingsError::Invalid {
            setting,
            message: message.into(),
        }
    }

    pub fn storage(setting: Setting, message: impl Into<String>) -> SettingsError {
        SettingsError::Storage {
            setting,
            message: message.into(),
        }
    }
}
