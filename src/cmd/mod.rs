pub mod log;
pub mod standalone;
