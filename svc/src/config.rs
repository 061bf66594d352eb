//! What every control server does with its settings: read them from a TOML file, let flags
//! override them, check the limits the frame loop shares. Each server keeps its own settings
//! struct, defaults and checks; it implements [`Settings`] so the steps around them are one.

use std::path::Path;

use protocol::frame::{EXT_LEN_MAX_DEFAULT, FRAME_LEN_MAX_DEFAULT, FrameLimits, HEADER_LEN};
use serde::de::DeserializeOwned;
/// What the TOML parser reports (line, column, key).
pub use toml::de::Error as TomlError;

/// The smallest frame limit a server accepts: a header and a small request.
pub const FRAME_LEN_MIN: usize = 4 << 10;

const _: () = assert!(FRAME_LEN_MIN > HEADER_LEN);

/// The errors a server reports for its settings, so the messages keep naming the server.
pub trait ConfigError {
    /// The file at `path` could not be read.
    fn read(path: &Path, source: std::io::Error) -> Self;
    /// The file at `path` is not valid TOML for the settings.
    fn parse(path: &Path, source: TomlError) -> Self;
    /// The setting `key` is out of range or contradicts another.
    fn invalid(key: &'static str, reason: String) -> Self;
}

/// A server's settings: every field has a default, so an empty TOML file is valid.
pub trait Settings: Default + DeserializeOwned {
    /// The server's error type.
    type Error: ConfigError;

    /// Checks that every setting is usable and that the settings agree with each other.
    fn validate(&self) -> Result<(), Self::Error>;
}

/// Parses a TOML document; `path` only names the source in errors.
pub fn parse<S: Settings>(toml_text: &str, path: &Path) -> Result<S, S::Error> {
    toml::from_str(toml_text).map_err(|source| S::Error::parse(path, source))
}

/// Reads and parses a TOML file. The result is not yet validated.
pub fn read<S: Settings>(path: &Path) -> Result<S, S::Error> {
    let text = std::fs::read_to_string(path).map_err(|source| S::Error::read(path, source))?;
    parse(&text, path)
}

/// The settings of a command line: the file's (or the defaults), then `overrides` (each
/// flag given), validated last so a flag cannot slip past the checks.
pub fn load<S: Settings>(
    file: Option<&Path>,
    overrides: impl FnOnce(&mut S),
) -> Result<S, S::Error> {
    let mut settings = match file {
        Some(path) => read(path)?,
        None => S::default(),
    };
    overrides(&mut settings);
    settings.validate()?;
    Ok(settings)
}

/// Sets `setting` to the flag's value when the flag was given.
pub fn set<T>(setting: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *setting = value;
    }
}

/// Refuses a `frame_len_max` outside [`FRAME_LEN_MIN`]`..=`[`FRAME_LEN_MAX_DEFAULT`]: the
/// framer cannot go beyond the protocol's limit, and below the minimum no request fits.
pub fn check_frame_len_max<E: ConfigError>(frame_len_max: usize) -> Result<(), E> {
    if (FRAME_LEN_MIN..=FRAME_LEN_MAX_DEFAULT).contains(&frame_len_max) {
        return Ok(());
    }
    Err(E::invalid(
        "frame_len_max",
        format!("{frame_len_max} is outside {FRAME_LEN_MIN}..={FRAME_LEN_MAX_DEFAULT}"),
    ))
}

/// Refuses the first setting of `settings` (key, value) that is 0.
pub fn check_at_least_one<E: ConfigError>(settings: &[(&'static str, u64)]) -> Result<(), E> {
    match settings.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(E::invalid(key, "must be at least 1".into())),
        None => Ok(()),
    }
}

/// The framer limits for `frame_len_max`, with an extension limit no larger (the control
/// commands use no extension fields, but tolerate a small one from newer peers).
pub fn frame_limits(frame_len_max: usize) -> FrameLimits {
    FrameLimits {
        frame_len_max,
        ext_len_max: EXT_LEN_MAX_DEFAULT.min(frame_len_max),
    }
}

/// The settings an example file lists commented out (`# key = default`), uncommented, one a
/// line: what a server's test parses to check the example against its defaults.
pub fn example_settings(example: &str) -> String {
    example
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter(|line| line.contains(" = "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `ConfigError` that is only the key it names: what the checks' tests compare.
    #[derive(Debug, PartialEq)]
    pub(crate) struct Invalid(pub &'static str);

    impl ConfigError for Invalid {
        fn read(_: &Path, _: std::io::Error) -> Self {
            Self("read")
        }
        fn parse(_: &Path, _: TomlError) -> Self {
            Self("parse")
        }
        fn invalid(key: &'static str, _: String) -> Self {
            Self(key)
        }
    }

    #[test]
    fn limits_and_zeros_are_refused_by_key() {
        assert_eq!(check_frame_len_max::<Invalid>(FRAME_LEN_MIN), Ok(()));
        assert_eq!(
            check_frame_len_max::<Invalid>(FRAME_LEN_MAX_DEFAULT),
            Ok(())
        );
        assert_eq!(
            check_frame_len_max::<Invalid>(FRAME_LEN_MIN - 1),
            Err(Invalid("frame_len_max"))
        );
        assert_eq!(check_at_least_one::<Invalid>(&[("a", 1), ("b", 2)]), Ok(()));
        assert_eq!(
            check_at_least_one::<Invalid>(&[("a", 1), ("b", 0), ("c", 0)]),
            Err(Invalid("b"))
        );
    }

    #[test]
    fn example_settings_keep_only_the_settings() {
        let example = "# A comment.\n# a = 1\n\nb = \"x\"\n[areas.A10]\n";
        assert_eq!(example_settings(example), "a = 1\nb = \"x\"");
    }
}
