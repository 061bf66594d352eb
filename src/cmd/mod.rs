pub mod admin;
pub mod consume;
pub mod log;
pub mod produce;
pub mod request;
pub mod respond;
pub mod shared;
pub mod standalone;
