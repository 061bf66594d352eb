//! The DeFiBus broker engine.
