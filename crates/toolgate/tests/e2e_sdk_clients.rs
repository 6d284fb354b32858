//! The official MCP SDK clients (Python 2.x in legacy and auto mode, TypeScript 1.x) run their
//! `full` scenario through the real gateway against server-everything, over stdio and over
//! Streamable HTTP: tools, echo, progress, sampling, elicitation and roots all round-trip.

mod common;

use common::*;
use serde_json::Value;

const TOKEN: &str = "tg-e2e-sdk-token-0f3c9a1b";

/// A gateway in front of server-everything: `ev` over stdio or `ev` over HTTP.
fn gateway(upstream: &Upstream) -> Gateway {
    let server = match upstream {
        Upstream::Stdio => everything_stdio_toml("ev", &[]),
        Upstream::Http(peer) => http_server_toml("ev", &peer.url(), ALLOW_ALL, ""),
    };
    Gateway::start(
        &format!("{server}{}", grant_toml("sdk", "ev", "SDK_TOKEN")),
        &[("SDK_TOKEN", TOKEN)],
    )
}

enum Upstream {
    Stdio,
    Http(EverythingHttp),
}

fn assert_full_scenario(who: &str, run: &DriverRun) {
    let out = &run.out;
    let context = || format!("{who}: {out:#}\n---- driver stderr ----\n{}", run.stderr);
    assert_eq!(out["ok"], Value::Bool(true), "{}", context());
    assert!(run.status.success(), "{}", context());
    assert_eq!(out["tools"]["count"], 17, "tool count; {}", context());
    let echo = out["echo"].as_str().unwrap_or_default();
    assert!(
        echo.starts_with("Echo: hi from"),
        "echo text; {}",
        context()
    );
    assert!(
        out["progress"]["count"].as_u64().unwrap_or(0) >= 1,
        "progress notifications; {}",
        context()
    );
    assert_eq!(
        out["sampling"]["handler_called"],
        Value::Bool(true),
        "sampling; {}",
        context()
    );
    assert_eq!(
        out["elicitation"]["handler_called"],
        Value::Bool(true),
        "elicitation; {}",
        context()
    );
    assert!(
        out["roots"]["handler_calls"].as_u64().unwrap_or(0) >= 1,
        "roots/list on the GET stream; {}",
        context()
    );
}

fn python(mode: &str, upstream: Upstream) {
    let gw = gateway(&upstream);
    let run = py_client(&gw.mcp_url("ev"), TOKEN, mode, "full", &[]);
    assert_full_scenario(&format!("python SDK ({mode})"), &run);
}

fn typescript(upstream: Upstream) {
    let gw = gateway(&upstream);
    let run = ts_client(&gw.mcp_url("ev"), TOKEN, "full", &[]);
    assert_full_scenario("typescript SDK", &run);
}

#[test]
fn python_legacy_through_gateway_to_stdio_server() {
    python("legacy", Upstream::Stdio);
}

#[test]
fn python_auto_through_gateway_to_stdio_server() {
    python("auto", Upstream::Stdio);
}

#[test]
fn typescript_through_gateway_to_stdio_server() {
    typescript(Upstream::Stdio);
}

#[test]
fn python_legacy_through_gateway_to_http_server() {
    python("legacy", Upstream::Http(EverythingHttp::start()));
}

#[test]
fn python_auto_through_gateway_to_http_server() {
    python("auto", Upstream::Http(EverythingHttp::start()));
}

#[test]
fn typescript_through_gateway_to_http_server() {
    typescript(Upstream::Http(EverythingHttp::start()));
}

/// The drivers themselves must be able to fail: a wrong token is reported as HTTP 401.
#[test]
fn sdk_clients_report_a_refused_token() {
    let gw = gateway(&Upstream::Stdio);
    let py = py_client(&gw.mcp_url("ev"), "not-the-token", "legacy", "list", &[]);
    assert_eq!(py.out["ok"], Value::Bool(false), "{}", py.out);
    assert_eq!(py.out["kind"], 401, "{}", py.out);
    let ts = ts_client(&gw.mcp_url("ev"), "not-the-token", "list", &[]);
    assert_eq!(ts.out["ok"], Value::Bool(false), "{}", ts.out);
    assert_eq!(ts.out["kind"], 401, "{}", ts.out);
}
