//! rung
