//! The `keygate` command: run, check, sign, keygen (SPEC §7).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use keygate::config::{compile, locate, preflight};
use keygate::server;
use keygate::state::State;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

/// mimalloc: a request allocates a few dozen small, short-lived blocks
/// (headers, URIs, futures); glibc's malloc costs several times more per pair.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Authenticating reverse proxy enforcing API-gateway policies"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve with a config file.
    Run {
        #[arg(short, long, default_value = "config/keygate.toml")]
        config: PathBuf,
        /// Also start the demo echo back end on this address (for trying keygate out).
        #[arg(long, value_name = "ADDR")]
        demo_backend: Option<SocketAddr>,
    },
    /// Validate a config file: exit 0 when valid, else print every problem.
    Check {
        #[arg(short, long, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Print the Date and Authorization headers of the `hmac` scheme.
    Sign {
        #[arg(long)]
        id: String,
        #[arg(long)]
        secret: String,
        #[arg(long, default_value = "hmac-sha1")]
        algorithm: String,
        /// Extra header to sign, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Print a new random key id and secret.
    Keygen,
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            config,
            demo_backend,
        } => run(&config, demo_backend),
        Cmd::Check { config } => return check(&config),
        Cmd::Sign {
            id,
            secret,
            algorithm,
            headers,
        } => sign(&id, &secret, &algorithm, &headers),
        Cmd::Keygen => {
            let (id, secret) = keygate::auth::sign::keygen();
            println!("id = \"{id}\"\nsecret = \"{secret}\"");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let read = compile::read_text(path)
        .and_then(|(text, hash)| Ok((compile::parse_file(path, &text)?, hash, text)));
    let errors = match read {
        Err(errors) => errors,
        Ok((raw, hash, text)) => {
            let limits = keygate::policy::limits::LimitState::in_memory();
            let state = State::new(&server::base_dir(path), 16, limits);
            let pre = preflight::check(&raw, &server::base_dir(path));
            for w in &pre.warnings {
                eprintln!("{}: warning: {w}", path.display());
            }
            match compile::compile(&raw, hash, &state) {
                Err(mut errors) => {
                    errors.extend(pre.errors);
                    locate::with_lines(&text, errors)
                }
                Ok(_) if !pre.errors.is_empty() => pre.errors,
                Ok(gw) => {
                    println!(
                        "{}: ok ({} routes, {} keys, {} plugins, {} usage plans)",
                        path.display(),
                        gw.inventory.routes.len(),
                        gw.inventory.keys.len(),
                        gw.inventory.plugins.len(),
                        gw.inventory.plans.len()
                    );
                    return ExitCode::SUCCESS;
                }
            }
        }
    };
    eprintln!("{}: {} problem(s)", path.display(), errors.len());
    for e in &errors {
        eprintln!("  {e}");
    }
    ExitCode::FAILURE
}

fn sign(id: &str, secret: &str, algorithm: &str, headers: &[String]) -> anyhow::Result<()> {
    let mut extra = vec![];
    for h in headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("header {h:?} is not `Name: value`");
        };
        extra.push((k.trim().to_string(), v.trim().to_string()));
    }
    let out = keygate::auth::sign::sign_hmac(id, secret, algorithm, &extra, SystemTime::now())
        .map_err(anyhow::Error::msg)?;
    for (k, v) in out {
        println!("{k}: {v}");
    }
    Ok(())
}

fn run(path: &Path, demo_backend: Option<SocketAddr>) -> anyhow::Result<()> {
    // The runtime's size and the log format come from the file, so read it first.
    let (raw, _) = compile::read_file(path).map_err(|errors| {
        anyhow::anyhow!(
            "invalid configuration:\n{}",
            errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    // Bounds first: `workers` sizes the runtime built below.
    let bounds = keygate::config::bounds::check(&raw);
    if !bounds.is_empty() {
        bail!(
            "invalid configuration:\n{}",
            bounds
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let _log =
        keygate::logging::init(&raw.log, &server::base_dir(path)).map_err(anyhow::Error::msg)?;
    for w in preflight::check(&raw, &server::base_dir(path)).warnings {
        tracing::warn!("{w}");
    }
    let json = raw.log.format == "json";
    let runtime = match raw.server.runtime {
        keygate::config::raw::RuntimeKind::PerCore => "per-core",
        keygate::config::raw::RuntimeKind::Multi => "multi",
    };
    let workers = match raw.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // Per-core: the proxy's own worker threads are started by `server::start`;
    // this runtime only hosts the admin listener, reloads and signals.
    let mut rt = match raw.server.runtime {
        keygate::config::raw::RuntimeKind::PerCore => tokio::runtime::Builder::new_current_thread(),
        keygate::config::raw::RuntimeKind::Multi => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if raw.server.workers > 0 {
                b.worker_threads(raw.server.workers);
            }
            b
        }
    };
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        if let Some(addr) = demo_backend {
            let (local, l) = keygate::demo::bind(addr).await.context("demo back end")?;
            announce(json, "demo back end on", &format!("http://{local}"));
            tokio::spawn(keygate::demo::serve(l));
        }
        let running = server::start(path).await?;
        let mut listeners: Vec<(&str, String)> = vec![];
        for a in &running.http {
            listeners.push(("listening on", format!("http://{a}")));
        }
        for a in &running.https {
            listeners.push(("listening on", format!("https://{a}")));
        }
        if let Some(a) = running.admin {
            listeners.push(("admin on", format!("http://{a}")));
        }
        // Logged before the listeners are announced: whoever waits for the
        // announcement finds the startup line in the log already.
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %path.display(),
            hash = %running.live.load().version.hash,
            listeners = %listeners
                .iter()
                .map(|(what, url)| if *what == "admin on" { format!("admin {url}") } else { url.clone() })
                .collect::<Vec<_>>()
                .join(", "),
            runtime,
            workers,
            "keygate started"
        );
        for (what, url) in &listeners {
            announce(json, what, url);
        }
        wait_for_stop().await;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Transparent huge pages off for this process: the allocator asks for them on
/// its arenas, and a 2 MiB page for a few live blocks inflates the resident
/// size of a mostly idle proxy several times (measured: 23 → 9 MiB at start).
fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments and
    // touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// One machine-readable line on stdout per bound address: `keygate: listening
/// on URL`, or with `[log] format = "json"` a JSON object shaped like the log
/// lines (`fields.message`, `fields.url`). A closed stdout (a supervisor that
/// stopped reading) must not take the server down.
fn announce(json: bool, what: &str, url: &str) {
    use std::io::Write;
    let line = if json {
        serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "level": "INFO",
            "fields": {"message": format!("{what} {url}"), "url": url},
            "target": "keygate",
        })
        .to_string()
    } else {
        format!("keygate: {what} {url}")
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
