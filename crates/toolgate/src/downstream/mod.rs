//! Transports that agents reach the gateway by.
//!
//! - `http`: the Streamable HTTP endpoint `/mcp/{server}` (POST, GET stream, DELETE).
//! - `rebinding`: the Host/Origin check that keeps browser pages off a loopback gateway.
//! - `trail`: the audit record and metrics of one request.
//! - `stdio`: local mode (`toolgate run`), a stdio MCP server for a local client.

pub mod http;
pub mod rebinding;
pub mod stdio;
pub mod trail;
