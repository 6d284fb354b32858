//! The `toolgate` command line: parses, calls into the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use toolgate::config::{Config, ProcessEnv};
use toolgate::gateway::Gateway;

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "An MCP policy gateway: every tools/call decided before it reaches the server."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TOOLGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file; without one, the embedded defaults (127.0.0.1:8080, ./.toolgate).
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding the config file's.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a config file and exit (0 when it loads).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config, &ProcessEnv) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} servers, {} grants)",
                    config.display(),
                    cfg.servers.len(),
                    cfg.grants.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("toolgate: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config, listen } => {
            let mut cfg = match &config {
                Some(path) => match Config::load(path, &ProcessEnv) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("toolgate: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => Config::embedded_defaults(),
            };
            if let Some(addr) = listen {
                cfg.listen = addr;
                if !addr.ip().is_loopback()
                    && cfg
                        .grants
                        .iter()
                        .any(|g| matches!(g.credential, toolgate::config::Credential::Anonymous))
                {
                    eprintln!(
                        "toolgate: --listen {addr}: anonymous grants are refused unless the gateway listens on loopback only"
                    );
                    return ExitCode::from(2);
                }
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime starts");
            match runtime.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("toolgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    for g in &cfg.grants {
        if matches!(g.credential, toolgate::config::Credential::Anonymous) {
            tracing::warn!(grant = %g.name, server = %g.server, "ANONYMOUS GRANT: requests without a token to /mcp/{} are accepted as {:?} (loopback only)", g.server, g.name);
        }
    }
    if cfg.servers.is_empty() {
        tracing::warn!("no servers configured: add [servers.NAME] to a config file (see README)");
    }
    for s in &cfg.servers {
        tracing::info!(server = %s.name, "agents reach it at http://{addr}/mcp/{}", s.name);
    }
    let gw = Arc::new(Gateway::new(cfg).map_err(|e| e.to_string())?);
    // Kept alive for as long as the gateway serves: dropping it stops the watch.
    let _watcher = gw
        .policies
        .watch()
        .map_err(|e| format!("cannot watch policy files: {e}"))?;
    // Tests and scripts wait for this line (and read the port from it when listening on :0).
    tracing::info!("listening on http://{addr}");
    toolgate::server::serve(gw, listener)
        .await
        .map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOOLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
