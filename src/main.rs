//! The `keygate` command: run, check, sign, keygen (SPEC §7), reload and
//! completions.

use anyhow::{bail, Context};
use clap::{ArgGroup, CommandFactory, Parser, Subcommand};
use keygate::config::{compile, locate, preflight, source};
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

/// `keygate --version`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KEYGATE_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "keygate",
    version = VERSION,
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
    #[command(group(ArgGroup::new("key_secret").required(true).args(["secret", "secret_file", "secret_env"])))]
    Sign {
        #[arg(long)]
        id: String,
        /// The secret itself (visible to `ps` and kept in shell history:
        /// prefer --secret-file or --secret-env).
        #[arg(long)]
        secret: Option<String>,
        /// Read the secret from this file (one trailing newline is ignored).
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Read the secret from this environment variable.
        #[arg(long, value_name = "NAME")]
        secret_env: Option<String>,
        #[arg(long, default_value = "hmac-sha1")]
        algorithm: String,
        /// Extra header to sign, `Name: value` (repeatable). The pseudo-header
        /// `request-line: GET /path?query HTTP/1.1` is signed but not printed.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Also print the string that was signed (to stderr).
        #[arg(long)]
        print_string_to_sign: bool,
    },
    /// Print a new random key id and secret.
    Keygen,
    /// Ask a running keygate to reload its configuration (POST /-/reload on
    /// the admin listener). An explicit reload: an unchanged file is reported
    /// as such, a broken one is tried again.
    Reload {
        /// Config file whose `[server] admin` address to call.
        #[arg(
            short,
            long,
            default_value = "config/keygate.toml",
            conflicts_with = "admin"
        )]
        config: PathBuf,
        /// Admin listener address (`host:port`), instead of reading the config.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
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
            secret_file,
            secret_env,
            algorithm,
            headers,
            print_string_to_sign,
        } => read_secret(secret, secret_file.as_deref(), secret_env.as_deref())
            .and_then(|secret| sign(&id, &secret, &algorithm, &headers, print_string_to_sign)),
        Cmd::Keygen => {
            let (id, secret) = keygate::auth::sign::keygen();
            println!("id = \"{id}\"\nsecret = \"{secret}\"");
            Ok(())
        }
        Cmd::Reload { config, admin } => keygate_cli_reload(&config, admin.as_deref()),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "keygate",
                &mut std::io::stdout(),
            );
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
    let read = source::read_text(path)
        .and_then(|(text, hash)| Ok((source::parse_file(path, &text)?, hash, text)));
    let errors = match read {
        Err(errors) => errors,
        Ok((raw, hash, text)) => {
            let limits = keygate::policy::limits::LimitState::in_memory();
            let state = State::new(&source::base_dir(path), 16, limits);
            let pre = preflight::check(&raw, &source::base_dir(path));
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

/// The secret of `keygate sign`, from exactly one of its three sources.
fn read_secret(
    secret: Option<String>,
    file: Option<&Path>,
    env: Option<&str>,
) -> anyhow::Result<String> {
    let s = match (secret, file, env) {
        (Some(s), _, _) => s,
        (None, Some(f), _) => {
            let mut s = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the secret file {}", f.display()))?;
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            s
        }
        (None, None, Some(name)) => std::env::var(name)
            .with_context(|| format!("environment variable {name} is not set (or not UTF-8)"))?,
        (None, None, None) => bail!("give --secret, --secret-file or --secret-env"),
    };
    if s.is_empty() {
        bail!("the secret is empty");
    }
    Ok(s)
}

fn sign(
    id: &str,
    secret: &str,
    algorithm: &str,
    headers: &[String],
    print_string_to_sign: bool,
) -> anyhow::Result<()> {
    let mut extra = vec![];
    for h in headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("header {h:?} is not `Name: value`");
        };
        extra.push((k.trim().to_string(), v.trim().to_string()));
    }
    let out =
        keygate::auth::sign::sign_hmac_request(id, secret, algorithm, &extra, SystemTime::now())
            .map_err(anyhow::Error::msg)?;
    if print_string_to_sign {
        eprintln!("string to sign:\n{}\n", out.string_to_sign);
    }
    for (k, v) in out.headers {
        println!("{k}: {v}");
    }
    Ok(())
}

/// `keygate reload`: POST `/-/reload` on the admin listener and print its answer.
fn keygate_cli_reload(config: &Path, admin: Option<&str>) -> anyhow::Result<()> {
    let addr = match admin {
        Some(a) => a.to_string(),
        None => {
            let (raw, _) = source::read_file(config).map_err(|errors| {
                anyhow::anyhow!(
                    "cannot read {}:\n{}",
                    config.display(),
                    errors
                        .iter()
                        .map(|e| format!("  {e}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            raw.server.admin.with_context(|| {
                format!(
                    "{} has no [server] admin listener to call",
                    config.display()
                )
            })?
        }
    };
    let (status, body) = keygate::admin::client::post_reload(&addr)
        .with_context(|| format!("cannot reach the admin listener on {addr}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    match (status, v["ok"].as_bool()) {
        (200, Some(true)) => {
            let hash = v["hash"].as_str().unwrap_or("?");
            if v["changed"].as_bool() == Some(false) {
                println!("configuration unchanged ({hash})");
            } else {
                println!("configuration reloaded ({hash})");
                for c in v["changes"].as_array().into_iter().flatten() {
                    println!("  {}", c.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
        (_, Some(false)) => {
            let errors: Vec<String> = v["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("  {}", e.as_str().unwrap_or_default()))
                .collect();
            bail!(
                "reload refused; the previous configuration stays in force:\n{}",
                errors.join("\n")
            )
        }
        _ => bail!(
            "unexpected answer from {addr}: HTTP {status}: {}",
            body.trim()
        ),
    }
}

fn run(path: &Path, demo_backend: Option<SocketAddr>) -> anyhow::Result<()> {
    // The runtime's size and the log format come from the file, so read it first.
    let (raw, _) = source::read_file(path).map_err(|errors| {
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
        keygate::logging::init(&raw.log, &source::base_dir(path)).map_err(anyhow::Error::msg)?;
    for w in preflight::check(&raw, &source::base_dir(path)).warnings {
        tracing::warn!("{w}");
    }
    let json = raw.log.json();
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
