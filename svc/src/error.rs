//! A server's one error type meets [`crate::handle::ServerError`] through
//! [`crate::server_error!`]: the servers name the variants alike, so the mapping is the same
//! for each and only the messages differ.

/// Implements [`crate::handle::ServerError`] for a server's error enum, which must have the
/// variants `Bind { addr, source }`, `Listener { addr, source }`, `Runtime { source }`,
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
    };
}
