//! A server's one error type meets [`crate::handle::ServerError`] and
//! [`crate::config::ConfigError`] through [`crate::server_error!`]: the servers name the
//! variants alike, so the mapping is the same for each and only the messages differ.

/// Implements [`crate::handle::ServerError`] and [`crate::config::ConfigError`] for a
/// server's error enum, which must have the variants `ConfigRead { path, source }`,
/// `ConfigParse { path, source: Box<toml::de::Error> }`, `ConfigInvalid { key, reason }`,
/// `Bind { addr, source }`, `Listener { addr, source }`, `Runtime { source }`,
/// `Signal { signal, source }` and `Panicked`.
#[macro_export]
macro_rules! server_error {
    ($error:ty) => {
        impl $crate::handle::ServerError for $error {
            fn bind(addr: ::std::net::SocketAddr, source: ::std::io::Error) -> Self {
                Self::Bind { addr, source }
            }

            fn listener(addr: ::std::net::SocketAddr, source: ::std::io::Error) -> Self {
                Self::Listener { addr, source }
            }

            fn runtime(source: ::std::io::Error) -> Self {
                Self::Runtime { source }
            }

            fn panicked() -> Self {
                Self::Panicked
            }

            fn signal(signal: &'static str, source: ::std::io::Error) -> Self {
                Self::Signal { signal, source }
            }
        }

        impl $crate::config::ConfigError for $error {
            fn read(path: &::std::path::Path, source: ::std::io::Error) -> Self {
                Self::ConfigRead {
                    path: path.to_path_buf(),
                    source,
                }
            }

            fn parse(path: &::std::path::Path, source: $crate::config::TomlError) -> Self {
                Self::ConfigParse {
                    path: path.to_path_buf(),
                    source: ::std::boxed::Box::new(source),
                }
            }

            fn invalid(key: &'static str, reason: ::std::string::String) -> Self {
                Self::ConfigInvalid { key, reason }
            }
        }
    };
}
