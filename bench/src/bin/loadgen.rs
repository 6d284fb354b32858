//! The load generator: N concurrent MCP sessions driving `tools/call` for a fixed time (after
//! a warm-up), over Streamable HTTP or stdio (a child process per session), reporting
//! throughput, latency percentiles from an HDR histogram, errors by kind, and — given the
//! gateway's pid — its CPU seconds and peak RSS read from `/proc`, so CPU per call can be
//! quoted. Over the measured window it also reports where the machine's CPU went per call:
//! the load generator's own, the upstream's (`--upstream-pid`), the gateway's, and the whole
//! machine's busy, idle and stolen time (`/proc/stat`), with context switches per call of the gateway
//! and the upstream and the gateway's page faults (`bench/scripts/cpu-split.sh`). `--hold`
//! opens sessions and keeps them idle (for memory per session).
//!
//!   loadgen --url http://127.0.0.1:8080/mcp/fast --sessions 16 --duration 10 --pid 1234
//!   loadgen --stdio "target/release/fast-upstream --stdio" --sessions 16 --duration 10
//!   loadgen --url ... --hold 10000 --pid 1234

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

#[derive(Parser, Clone)]
struct Args {
    /// Streamable HTTP endpoint.
    #[arg(long, conflicts_with = "stdio")]
    url: Option<String>,
    /// Command (split on spaces) speaking MCP over stdio; one process per session.
    #[arg(long)]
    stdio: Option<String>,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "echo")]
    tool: String,
    #[arg(
        long,
        default_value = r#"{"message":"select name from users","env":"dev","limit":10}"#
    )]
    arguments: String,
    /// The process whose CPU time and peak RSS to report (the gateway).
    #[arg(long)]
    pid: Option<u32>,
    /// The upstream's process, whose CPU time and context switches to report beside.
    #[arg(long)]
    upstream_pid: Option<u32>,
    /// Open this many sessions, keep them idle, report the pid's RSS, and exit.
    #[arg(long)]
    hold: Option<usize>,
    /// A label for the JSON output.
    #[arg(long, default_value = "run")]
    name: String,
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/PID/status` line's number (KiB for the memory lines).
fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What `/proc/PID/stat` (PID or `self`) says of a process: minor page faults, and user and
/// system CPU seconds.
struct StatTimes {
    minor_faults: u64,
    user: f64,
    system: f64,
}

fn stat_times(pid: &str) -> Option<StatTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let seconds = |ticks: u64| ticks as f64 / 100.0; // USER_HZ on Linux
    Some(StatTimes {
        minor_faults: field(7)?,
        user: seconds(field(11)?),
        system: seconds(field(12)?),
    })
}

/// Counters read at both ends of the measured window, for where each call's CPU went.
struct Window {
    /// This process's CPU seconds (every thread).
    own_cpu: f64,
    upstream: Option<Activity>,
    gateway: Option<Activity>,
    /// The machine's seconds, all CPUs (`/proc/stat`).
    machine: MachineTime,
}

/// CPU seconds of the whole machine: busy (user, nice, system, irq, softirq), idle (with
/// iowait), and stolen: time a vCPU wanted to run and its host ran something else, which
/// on a shared host is how a neighbour slows a run down.
#[derive(Clone, Copy)]
struct MachineTime {
    busy: f64,
    idle: f64,
    steal: f64,
}

/// A process's CPU seconds (user and system, and system alone: the kernel's share, which
/// every proxy pays for its sockets), context switches (every thread, voluntary or not) and
/// minor page faults.
#[derive(Clone, Copy)]
struct Activity {
    cpu: f64,
    system: f64,
    context_switches: u64,
    minor_faults: u64,
}

fn activity(pid: u32) -> Option<Activity> {
    let times = stat_times(&pid.to_string())?;
    let mut context_switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        context_switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(Activity {
        cpu: times.user + times.system,
        system: times.system,
        context_switches,
        minor_faults: times.minor_faults,
    })
}

fn machine() -> Option<MachineTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let t: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    let seconds = |ticks: u64| ticks as f64 / 100.0;
    Some(MachineTime {
        busy: seconds(t.first()? + t.get(1)? + t.get(2)? + t.get(5)? + t.get(6)?),
        idle: seconds(t.get(3)? + t.get(4)?),
        steal: seconds(*t.get(7)?),
    })
}

impl Window {
    fn read(args: &Args) -> Option<Window> {
        Some(Window {
            own_cpu: stat_times("self").map(|t| t.user + t.system)?,
            upstream: args.upstream_pid.and_then(activity),
            gateway: args.pid.and_then(activity),
            machine: machine()?,
        })
    }

    /// Per call, from `before` to `self`.
    fn split(&self, before: &Window, calls: u64) -> Value {
        if calls == 0 {
            return Value::Null;
        }
        let n = calls as f64;
        let us = |seconds: f64| seconds * 1e6 / n;
        let gateway = self.gateway.zip(before.gateway);
        let upstream = self.upstream.zip(before.upstream);
        // A thread that ended in the window takes its switches with it: never below zero.
        let switches = |(a, b): (Activity, Activity)| {
            a.context_switches.saturating_sub(b.context_switches) as f64 / n
        };
        json!({
            "loadgen_us": us(self.own_cpu - before.own_cpu),
            "upstream_us": upstream.map(|(a, b)| us(a.cpu - b.cpu)),
            "gateway_us": gateway.map(|(a, b)| us(a.cpu - b.cpu)),
            "machine_busy_us": us(self.machine.busy - before.machine.busy),
            "machine_idle_us": us(self.machine.idle - before.machine.idle),
            "machine_steal_us": us(self.machine.steal - before.machine.steal),
            "gateway_context_switches": gateway.map(switches),
            "upstream_context_switches": upstream.map(switches),
            "gateway_minor_faults": gateway
                .map(|(a, b)| a.minor_faults.saturating_sub(b.minor_faults) as f64 / n),
        })
    }
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"toolgate-loadgen","version":"0.1.0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// One session's transport.
#[allow(clippy::large_enum_variant)] // one per session, never moved in a hot loop
enum Session {
    Http {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
        session: Option<String>,
    },
    Stdio {
        _child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        stdout: BufReader<tokio::process::ChildStdout>,
    },
}

impl Session {
    async fn open(args: &Args, client: &reqwest::Client) -> Result<Session, String> {
        if let Some(cmd) = &args.stdio {
            let mut parts = cmd.split_whitespace();
            let mut child = tokio::process::Command::new(parts.next().ok_or("empty --stdio")?)
                .args(parts)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawn: {e}"))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = BufReader::new(child.stdout.take().expect("piped"));
            let mut s = Session::Stdio {
                _child: child,
                stdin,
                stdout,
            };
            s.call_raw(INIT).await?;
            s.notify(INITIALIZED).await?;
            return Ok(s);
        }
        let url = args.url.clone().ok_or("give --url or --stdio")?;
        let mut s = Session::Http {
            client: client.clone(),
            url,
            token: args.token.clone(),
            session: None,
        };
        s.call_raw(INIT).await?;
        s.notify(INITIALIZED).await?;
        Ok(s)
    }

    async fn notify(&mut self, body: &str) -> Result<(), String> {
        match self {
            Session::Stdio { stdin, .. } => {
                stdin
                    .write_all(body.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                stdin.write_all(b"\n").await.map_err(|e| e.to_string())
            }
            Session::Http { .. } => self.post(body).await.map(|_| ()),
        }
    }

    async fn post(&mut self, body: &str) -> Result<(u16, String), String> {
        let Session::Http {
            client,
            url,
            token,
            session,
        } = self
        else {
            unreachable!()
        };
        let mut req = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = session {
            req = req.header("mcp-session-id", s.as_str());
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "transport: {}",
                if e.is_connect() { "connect" } else { "io" }
            )
        })?;
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            *session = Some(s.to_string());
        }
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|_| "transport: body".to_string())?;
        Ok((status, text))
    }

    /// Ends the session as a client should: a DELETE over HTTP (so the gateway and the
    /// upstream free it now rather than when it idles out); a stdio server is killed on drop.
    async fn close(self) -> Result<(), String> {
        let Session::Http {
            client,
            url,
            token,
            session: Some(session),
        } = self
        else {
            return Ok(());
        };
        let mut req = client
            .delete(url.as_str())
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", session);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("http {}", r.status().as_u16())),
            Err(_) => Err("transport".into()),
        }
    }

    /// Sends a request and returns its response message (SSE answers are read to the end).
    async fn call_raw(&mut self, body: &str) -> Result<Value, String> {
        match self {
            Session::Stdio { stdin, stdout, .. } => {
                stdin
                    .write_all(body.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                stdin.write_all(b"\n").await.map_err(|e| e.to_string())?;
                stdin.flush().await.map_err(|e| e.to_string())?;
                let mut line = String::new();
                loop {
                    line.clear();
                    if stdout
                        .read_line(&mut line)
                        .await
                        .map_err(|e| e.to_string())?
                        == 0
                    {
                        return Err("transport: upstream closed".into());
                    }
                    let v: Value =
                        serde_json::from_str(&line).map_err(|_| "bad json".to_string())?;
                    if v.get("id").is_some() && v.get("method").is_none() {
                        return Ok(v);
                    }
                }
            }
            Session::Http { .. } => {
                let (status, text) = self.post(body).await?;
                if status != 200 {
                    return Err(format!("http {status}"));
                }
                let data = if text.starts_with('{') {
                    text
                } else {
                    // SSE: the last data line holding a response.
                    text.lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim)
                        .rfind(|d| d.contains("\"id\"") && !d.contains("\"method\""))
                        .unwrap_or("")
                        .to_string()
                };
                serde_json::from_str(&data).map_err(|_| "bad json".to_string())
            }
        }
    }
}

fn classify(v: &Value) -> Option<String> {
    if let Some(e) = v.get("error") {
        return Some(format!("jsonrpc {}", e["code"]));
    }
    if v["result"]["isError"] == json!(true) {
        let text = v["result"]["content"][0]["text"].as_str().unwrap_or("");
        return Some(if text.starts_with("[POLICY DENIED]") {
            "denied".into()
        } else {
            "isError".into()
        });
    }
    None
}

async fn drive(
    args: Args,
    client: reqwest::Client,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut session = match Session::open(&args, &client).await {
        Ok(s) => s,
        Err(e) => {
            *tally
                .lock()
                .await
                .errors
                .entry(format!("open: {e}"))
                .or_default() += 1;
            return;
        }
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut id = 1u64;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{}}}}}"#,
            args.tool, args.arguments
        );
        let started = Instant::now();
        let result = session.call_raw(&body).await;
        let us = started.elapsed().as_micros() as u64;
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        match result {
            Ok(v) => match classify(&v) {
                None => {
                    ok += 1;
                    let _ = hist.record(us.max(1));
                }
                Some(kind) => *errors.entry(kind).or_default() += 1,
            },
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
    }
    if let Err(e) = session.close().await {
        *errors.entry(format!("close: {e}")).or_default() += 1;
    }
    let mut t = tally.lock().await;
    t.ok += ok;
    match &mut t.hist {
        Some(h) => {
            let _ = h.add(&hist);
        }
        None => t.hist = Some(hist),
    }
    for (k, v) in errors {
        *t.errors.entry(k).or_default() += v;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .expect("client");
    if let Some(n) = args.hold {
        let before = args.pid.and_then(rss_kib);
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            match Session::open(&args, &client).await {
                Ok(s) => held.push(s),
                Err(e) => {
                    eprintln!("session {i}: {e}");
                    std::process::exit(1);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = args.pid.and_then(rss_kib);
        let out = json!({"name": args.name, "sessions": n, "rss_before_kib": before, "rss_after_kib": after,
            "per_session_bytes": match (before, after) { (Some(b), Some(a)) if n > 0 => Some(((a as f64 - b as f64) * 1024.0 / n as f64).round()), _ => None }});
        println!("{out}");
        return;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let tasks: Vec<_> = (0..args.sessions)
        .map(|_| {
            tokio::spawn(drive(
                args.clone(),
                client.clone(),
                measuring.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let window_before = Window::read(&args);
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let window_after = Window::read(&args);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().await;
    let q = |p: f64| t.hist.as_ref().map(|h| h.value_at_quantile(p)).unwrap_or(0);
    // The gateway's CPU seconds over the window, and its peak RSS.
    let cpu = match (&window_before, &window_after) {
        (Some(b), Some(a)) => a.gateway.zip(b.gateway),
        _ => None,
    }
    .map(|(a, b)| (a.cpu - b.cpu, a.system - b.system));
    let peak_rss_kib = args.pid.and_then(|p| status_kib(p, "VmHWM:"));
    let per_call = |seconds: f64| (t.ok > 0).then(|| seconds * 1e6 / t.ok as f64);
    let out = json!({
        "name": args.name,
        "sessions": args.sessions,
        "seconds": elapsed,
        "calls": t.ok,
        "throughput": t.ok as f64 / elapsed,
        "latency_us": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999)},
        "errors": t.errors,
        "cpu_seconds": cpu.map(|(all, _)| all),
        "cpu_us_per_call": cpu.and_then(|(all, _)| per_call(all)),
        "cpu_system_us_per_call": cpu.and_then(|(_, system)| per_call(system)),
        "peak_rss_kib": peak_rss_kib,
        "cpu_split_per_call": match (&window_before, &window_after) {
            (Some(b), Some(a)) => a.split(b, t.ok),
            _ => Value::Null,
        },
    });
    println!("{out}");
}
