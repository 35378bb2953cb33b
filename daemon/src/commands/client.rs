//! The commands any allowed user runs against a running daemon: stream a generation,
//! list models and providers, show the daemon's state, measure a round trip.

use std::io::Write;
use std::path::Path;

use provd_client::{Client, GenerateEvent, GenerateRequest};
use serde_json::json;

use super::{connect, CommandError};

/// Options of `provd generate`.
#[derive(Debug, Default)]
pub struct GenerateOptions {
    /// The request.
    pub request: GenerateRequest,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// `provd generate`: streams text to stdout as it arrives, usage to stderr at the end.
pub async fn generate(socket: &Path, options: GenerateOptions) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    stream_to_stdout(&client, options).await
}

/// Streams one generation to stdout (text as it arrives, or one JSON object per event),
/// usage to stderr; shared by `generate` and `provd demo`.
pub(super) async fn stream_to_stdout(
    client: &Client,
    options: GenerateOptions,
) -> Result<(), CommandError> {
    let mut generation = client.generate(options.request).await?;
    let stdout = std::io::stdout();
    // Whether text was written without its line end: a failure then ends the line, and
    // a failure before any text prints nothing on stdout.
    let mut open_line = false;
    while let Some(event) = generation.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if options.json {
                    let mut out = stdout.lock();
                    writeln!(out, "{}", json!({"event": "error", "error": e.to_wire()}))?;
                    out.flush()?;
                } else if open_line {
                    println!();
                }
                return Err(e.into());
            }
        };
        let mut out = stdout.lock();
        match event {
            GenerateEvent::Chunk(chunk) if options.json => {
                writeln!(
                    out,
                    "{}",
                    json!({"event": "chunk", "index": chunk.index, "text": chunk.text, "model": chunk.model, "created_at": chunk.created_at})
                )?;
            }
            GenerateEvent::Chunk(chunk) => {
                write!(out, "{}", chunk.text)?;
                open_line |= !chunk.text.is_empty();
            }
            GenerateEvent::Done(done) if options.json => {
                writeln!(out, "{}", json!({"event": "done", "result": done}))?;
            }
            GenerateEvent::Done(done) => {
                if let Some(text) = &done.text {
                    write!(out, "{text}")?;
                }
                writeln!(out)?;
                out.flush()?;
                let u = done.usage;
                eprintln!(
                    "[{}/{}] {} prompt + {} completion = {} tokens, {} chunks, finish: {}",
                    done.provider,
                    done.model,
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.total_tokens,
                    done.chunks,
                    serde_json::to_value(done.finish_reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                );
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// `provd models`.
pub async fn models(
    socket: &Path,
    provider: Option<&str>,
    as_json: bool,
) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let list = client.list_models(provider).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    } else {
        for m in &list.models {
            println!(
                "{:<16} {:<40} {}",
                m.provider,
                m.id,
                m.display_name.as_deref().unwrap_or("")
            );
        }
        for f in &list.errors {
            eprintln!("{}: {}", f.provider, f.error);
        }
    }
    // What could be listed is printed; the exit status still says that some of it failed.
    if list.errors.is_empty() {
        return Ok(());
    }
    let failed: Vec<&str> = list.errors.iter().map(|f| f.provider.as_str()).collect();
    Err(CommandError::Partial(format!(
        "the models of {} could not be listed",
        failed.join(", ")
    )))
}

/// `provd providers`.
pub async fn providers(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let list = client.list_providers().await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    for p in &list.providers {
        println!(
            "{:<16} {:<18} {:<32}{}",
            p.id,
            p.kind,
            p.default_model.as_deref().unwrap_or("-"),
            if p.is_default { " (default)" } else { "" }
        );
        // What requests to it may use beyond text, so a user can tell before asking.
        println!("{:<16} capabilities: {}", "", p.capabilities.join(", "));
    }
    Ok(())
}

/// `provd status`.
pub async fn status(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let s = client.status().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    println!(
        "provd {} (protocol {}), pid {}, up {:.1}s, {} connections, {} active streams",
        s.daemon_version,
        s.protocol_version,
        s.pid,
        s.uptime_ms as f64 / 1000.0,
        s.connections,
        s.active_streams
    );
    let counters = |m: &provd_client::message::ProviderMetrics| {
        format!(
            "{} requests, {} errors, {} cancelled, {} active, {} chunks, {}+{} tokens",
            m.requests,
            m.errors,
            m.cancelled,
            m.active,
            m.chunks,
            m.prompt_tokens,
            m.completion_tokens
        )
    };
    for p in &s.provider_counters {
        println!(
            "  provider {} [{}]: {}, {} instance{}, {}",
            p.provider,
            p.kind,
            health(&p.metrics),
            p.instances,
            if p.instances == 1 { "" } else { "s" },
            counters(&p.metrics)
        );
    }
    if !s.instances.is_empty() {
        let cached = s.instances.len() as u64 + s.instances_omitted;
        if s.max_provider_instances > 0 {
            println!(
                "  instances: {cached} cached of at most {}; the busiest:",
                s.max_provider_instances
            );
        }
    }
    for i in &s.instances {
        // Model names are the clients' words: escaped, they cannot forge a line.
        // An instance that initialized but whose every request failed is not ready in
        // any sense a user cares about.
        let state = match (i.status, health(&i.metrics)) {
            (provd_client::message::ProviderStatus::Ready, "failing") => "Failing".to_owned(),
            (status, _) => format!("{status:?}"),
        };
        println!(
            "    {}/{} [{}] {}: {}",
            i.provider,
            i.model.escape_debug(),
            i.kind,
            state,
            counters(&i.metrics)
        );
    }
    if s.instances_omitted > 0 {
        println!("    … and {} more", s.instances_omitted);
    }
    if let Some(l) = &s.ledger {
        println!(
            "  usage ledger: {} records written, {} dropped (queue full), {} lost (write failed), {} pruned",
            l.written, l.dropped, l.lost, l.pruned
        );
    }
    if !s.users.is_empty() {
        println!("  users (tokens per UTC day and month; the tightest limits that bind each):");
    }
    for u in &s.users {
        println!("    {}", user_line(u));
    }
    Ok(())
}

/// One user's line in `provd status`: who, what they used, and each binding limit's
/// remainder.
fn user_line(u: &provd_client::message::UserUsage) -> String {
    let who = match &u.user {
        // A name from the user database, escaped all the same: it cannot forge a line.
        Some(name) => format!("{} (uid {})", name.escape_debug(), u.uid),
        None => format!("uid {}", u.uid),
    };
    let mut line = format!(
        "{who}: {} request{} in the last minute, {} tokens today, {} this month",
        u.requests_last_minute,
        if u.requests_last_minute == 1 { "" } else { "s" },
        u.tokens_today,
        u.tokens_this_month
    );
    for l in &u.limits {
        let resets = l
            .resets_at
            .as_deref()
            .map(|at| format!(", resets {}", at.escape_debug()))
            .unwrap_or_default();
        line.push_str(&format!(
            "; {} = {}: {} left{resets}",
            l.limit.escape_debug(),
            l.value,
            l.left
        ));
    }
    line
}

/// A provider's (or instance's) health as its counters show it, as `status` prints it.
fn health(m: &provd_client::message::ProviderMetrics) -> &'static str {
    match m.health() {
        provd_client::message::Health::Unused => "unused",
        provd_client::message::Health::Serving => "serving",
        provd_client::message::Health::Failing => "failing",
    }
}

/// `provd ping`: prints the round trip.
pub async fn ping(socket: &Path) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let start = std::time::Instant::now();
    client.ping().await?;
    println!(
        "pong from provd {} in {:?}",
        client.daemon().daemon_version,
        start.elapsed()
    );
    Ok(())
}
