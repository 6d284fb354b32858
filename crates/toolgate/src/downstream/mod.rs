//! Transports that agents reach the gateway by.
//!
//! - `http`: the Streamable HTTP endpoint `/mcp/{server}` (POST, GET stream, DELETE).
//! - `rebinding`: the Host/Origin check that keeps browser pages off a loopback gateway.

pub mod http;
pub mod rebinding;
