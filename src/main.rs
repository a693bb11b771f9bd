//! The `hookgate` command line: parse arguments, call the library, turn errors into exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use hookgate::config;
use hookgate::observe::event;
use hookgate::server::Gateway;

/// `hookgate demo`'s self-signed certificate and echo backend: the binary's, not the library's.
mod demo;

/// mimalloc instead of glibc's malloc: a request makes about 26 allocations, most freed on the
/// same worker thread soon after, which is what mimalloc's per-thread free lists are for
/// (bench/README: 3-7% less CPU per request on small bodies, for more resident memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "An inbound webhook gateway",
    long_about = "An inbound webhook gateway: terminates TLS, routes each request by path to an \
                  upstream named in the config (gateway.yaml), checks the sender's IP, rate and \
                  signature, forwards the exact body, and writes a JSON access-log line and \
                  Prometheus metrics for every request. Unknown config keys are errors; \
                  `hookgate check` validates a config, `hookgate schema` prints its JSON Schema."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve. SIGHUP reloads the config and certificates; SIGTERM or SIGINT drains and exits.
    Run {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Validate a config like `nginx -t`: exit 0, or 1 with file:line:col, field and reason.
    Check {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Try it out: make a self-signed dev certificate in certs/ if there is none, start a demo
    /// echo backend, and serve the config.
    Demo {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Where the demo echo backend listens (the default gateway.yaml forwards there).
        #[arg(long, default_value = "127.0.0.1:3000")]
        echo: SocketAddr,
    },
    /// Print the headers of a correctly signed test request for a route, and a curl command
    /// that sends it (secret-based providers; uses the route's first secret).
    Sign {
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// The route's name.
        #[arg(long)]
        route: String,
        /// The body to sign (default: a small JSON object).
        #[arg(long)]
        body: Option<PathBuf>,
    },
    /// Inspect and act on the durable-delivery spool: ls, show, replay, purge. With the gateway
    /// stopped this opens the spool itself; while it runs (it holds the spool's lock) the
    /// command goes through the admin listener, with `admin.token` when set.
    Queue {
        /// ls | show | replay | purge
        #[arg(value_parser = ["ls", "show", "replay", "purge"])]
        action: String,
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        #[arg(long)]
        route: Option<String>,
        /// pending | dead | delivered
        #[arg(long)]
        state: Option<String>,
        /// Received since: an RFC 3339 time or a duration back from now (`1h`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        id: Option<String>,
        /// Most events to list.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print the version.
    Version,
    /// Print the JSON Schema of gateway.yaml (committed as gateway.schema.json), for editors:
    /// `# yaml-language-server: $schema=./gateway.schema.json` on the config's first line.
    Schema,
    /// Print a shell completion script: `hookgate completions bash > /etc/bash_completion.d/hookgate`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `hookgate man > hookgate.1`; with --dir, write it and one
    /// page per subcommand (hookgate-run.1, ...) into that folder.
    Man {
        /// Write hookgate.1 and hookgate-SUBCOMMAND.1 here instead of printing hookgate.1.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("hookgate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check { config } => check(&config),
        Command::Schema => schema(),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
        Command::Run { config } => serve(&config, None),
        Command::Demo { config, echo } => demo(&config, echo),
        Command::Sign {
            config,
            route,
            body,
        } => sign(&config, &route, body.as_deref()),
        Command::Queue {
            action,
            config,
            route,
            state,
            since,
            id,
            limit,
        } => {
            let mut pairs = Vec::new();
            for (key, value) in [
                ("route", route),
                ("state", state),
                ("since", since),
                ("id", id),
            ] {
                if let Some(value) = value {
                    pairs.push((key, value));
                }
            }
            if let Some(limit) = limit {
                pairs.push(("limit", limit.to_string()));
            }
            queue(&config, &action, &pairs)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn schema() -> anyhow::Result<()> {
    use std::io::Write;
    let mut text = serde_json::to_string_pretty(&config::json_schema())?;
    text.push('\n');
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write the schema")
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write;
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hookgate", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the completion script")
}

fn man(dir: Option<&Path>) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = dir {
        return clap_mangen::generate_to(Cli::command(), dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()));
    }
    let mut out = Vec::new();
    // As generate_to does: no page for `help`, so the SUBCOMMANDS section names only pages
    // that --dir writes.
    clap_mangen::Man::new(Cli::command().disable_help_subcommand(true))
        .render(&mut out)
        .context("cannot render the man page")?;
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the man page")
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path)?;
    // Partly shadowed routes still serve; the operator should know which requests get 405.
    for warning in config::shadow_warnings(&config) {
        println!("{}: warning: {warning}", path.display());
    }
    println!(
        "{}: ok ({} listeners, {} upstreams, {} routes)",
        path.display(),
        config.listeners.len(),
        config.upstreams.len(),
        config.routes.len()
    );
    Ok(())
}

fn sign(path: &Path, route_name: &str, body_file: Option<&Path>) -> anyhow::Result<()> {
    let config = config::load(path)?;
    let route = config
        .routes
        .iter()
        .find(|r| r.name == route_name)
        .with_context(|| format!("no route named {route_name:?} in {}", path.display()))?;
    let verifier = route
        .verify
        .as_ref()
        .with_context(|| format!("route {route_name:?} has no verify block: any request passes"))?;
    let body = match body_file {
        Some(file) => {
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
        }
        None => br#"{"event":"hookgate.test"}"#.to_vec(),
    };
    let headers = verifier.sign(&body, std::time::SystemTime::now(), verifier.public_url())?;
    let listener = config.listeners.first().context("no listener")?;
    let scheme = if listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = match listener.bind.ip() {
        ip if ip.is_unspecified() => format!("localhost:{}", listener.bind.port()),
        _ => listener.bind.to_string(),
    };
    let path = match &route.path {
        config::PathPattern::Exact(p) => p.clone(),
        config::PathPattern::Prefix(p) => format!("{p}/test"),
    };
    let method = route.methods.first().map(|m| m.as_str()).unwrap_or("POST");
    for (name, value) in &headers {
        println!("{name}: {value}");
    }
    println!();
    let mut curl = format!("curl -k -X {method} '{scheme}://{host}{path}'");
    for (name, value) in &headers {
        curl.push_str(&format!(" -H '{name}: {value}'"));
    }
    match body_file {
        Some(file) => curl.push_str(&format!(" --data-binary @'{}'", file.display())),
        None => curl.push_str(&format!(
            " --data-binary '{}'",
            String::from_utf8_lossy(&body)
        )),
    }
    println!("{curl}");
    Ok(())
}

fn queue(path: &Path, action: &str, pairs: &[(&str, String)]) -> anyhow::Result<()> {
    use hookgate::delivery::{ops, spool::SpoolError};
    let config = config::load(path)?;
    let spool = config
        .delivery
        .spool
        .as_ref()
        .with_context(|| format!("{}: no spool: block", path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (filter, limit) = ops::parse_filter(pairs.iter().map(|(k, v)| (*k, v.as_str())), now)
        .map_err(anyhow::Error::msg)?;
    if (action == "show") && filter.id.is_none() {
        anyhow::bail!("show needs --id");
    }
    if action == "purge" && pairs.is_empty() {
        anyhow::bail!("purge needs a filter (--state, --route, --id or --since)");
    }
    match ops::offline(&spool.path, action, &filter, limit) {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Err(SpoolError::Locked) => queue_via_admin(&config, action, pairs, filter.id.as_deref()),
        Err(e) => Err(e.into()),
    }
}

/// The running gateway's admin listener does what `hookgate queue` asks.
fn queue_via_admin(
    config: &config::Config,
    action: &str,
    pairs: &[(&str, String)],
    id: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let admin = config
        .admin
        .context("the gateway holds the spool and has no admin listener to ask")?;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let (method, target) = match action {
        "ls" => ("GET", format!("/queue/events?{query}")),
        "show" => ("GET", format!("/queue/events/{}", id.unwrap_or(""))),
        "replay" => ("POST", format!("/queue/replay?{query}")),
        _ => ("POST", format!("/queue/purge?{query}")),
    };
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(token) = &config.delivery.admin_token {
        request.push_str(&format!("Authorization: Bearer {}\r\n", token.0));
    }
    request.push_str("\r\n");
    let mut stream =
        std::net::TcpStream::connect(admin).with_context(|| format!("admin listener {admin}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let ok = head.starts_with("HTTP/1.1 2");
    let body: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or(serde_json::json!(body));
    println!("{}", serde_json::to_string_pretty(&body)?);
    if ok {
        Ok(())
    } else {
        anyhow::bail!("{}", head.lines().next().unwrap_or("no answer"))
    }
}

fn demo(path: &Path, echo: SocketAddr) -> anyhow::Result<()> {
    let certs = path.parent().unwrap_or(Path::new("")).join("certs");
    let (cert, key) = (certs.join("localhost.crt"), certs.join("localhost.key"));
    if demo::ensure_dev_certificate(&cert, &key).map_err(anyhow::Error::msg)? {
        event(
            "info",
            "wrote a self-signed development certificate",
            serde_json::json!({"cert": cert.display().to_string()}),
        );
    }
    serve(path, Some(echo))
}

fn serve(path: &Path, echo: Option<SocketAddr>) -> anyhow::Result<()> {
    let config = config::load(path)?;
    for warning in config::shadow_warnings(&config) {
        event(
            "warn",
            "route partly shadowed",
            serde_json::json!({"detail": warning}),
        );
    }
    // This thread accepts connections and runs the admin endpoint, reloads and IP feeds; the
    // requests themselves run on the gateway's worker threads (`server::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if let Some(bind) = echo {
            let backend = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("echo backend: cannot bind {bind}"))?;
            drop(backend);
            tokio::spawn(async move {
                if let Err(e) = demo::run_echo(bind).await {
                    event(
                        "error",
                        "echo backend stopped",
                        serde_json::json!({"error": e.to_string()}),
                    );
                }
            });
        }
        let files = config.files.clone();
        let gateway = Gateway::start(config).await?;
        wait_for_stop(&gateway, path, files).await?;
        event("info", "draining", serde_json::json!({}));
        gateway.shutdown().await;
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT; meanwhile reloads on SIGHUP or when a watched file changes.
async fn wait_for_stop(gateway: &Gateway, path: &Path, files: Vec<PathBuf>) -> anyhow::Result<()> {
    use hookgate::server::config_watch::{ConfigWatch, POLL_EVERY};
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut watch = ConfigWatch::new(files);
    let mut tick = tokio::time::interval(POLL_EVERY);
    loop {
        let reload = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => true,
            _ = tick.tick() => watch.poll(),
        };
        if reload {
            if let Ok(files) = gateway.reload(path) {
                watch.watch(files);
            }
        }
    }
}
