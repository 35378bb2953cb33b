//! The commands any allowed user runs against a running daemon: stream a generation,
//! list models and providers, show the daemon's state and who used what, measure a round
//! trip.

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

/// Options of `provd usage`.
#[derive(Debug, Default)]
pub struct UsageOptions {
    /// The window's start: a duration before now (`7d`, `12h`), an RFC 3339 instant or a
    /// date (UTC midnight); the daemon's default (7 days) when absent.
    pub since: Option<String>,
    /// The window's end, in the same forms; now when absent.
    pub until: Option<String>,
    /// The grouping: `user`, `provider`, `model`, `token` or `day`.
    pub by: Option<String>,
    /// Only this user (a name or a uid).
    pub user: Option<String>,
    /// Print the reply as JSON.
    pub json: bool,
}

/// `provd usage`: who used what, from the daemon's usage ledger, as a table with a
/// totals line (and a cost column when the daemon's configuration has prices), or as
/// JSON.
pub async fn usage(socket: &Path, options: UsageOptions) -> Result<(), CommandError> {
    use provd_client::message::{UsageBy, UsageParams};
    let now = std::time::SystemTime::now();
    let by = options
        .by
        .as_deref()
        .map(|name| {
            UsageBy::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = UsageBy::ALL.iter().map(|b| b.as_str()).collect();
                CommandError::Usage(format!(
                    "--by must be one of {}, got '{}'",
                    names.join(", "),
                    name.escape_debug()
                ))
            })
        })
        .transpose()?;
    let params = UsageParams {
        since_ms: options
            .since
            .as_deref()
            .map(|t| instant_ms("--since", t, now))
            .transpose()?,
        until_ms: options
            .until
            .as_deref()
            .map(|t| instant_ms("--until", t, now))
            .transpose()?,
        by,
        user: options.user,
    };
    let client = connect(socket).await?;
    let report = client.usage(&params).await?;
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    print!("{}", usage_table(&report));
    Ok(())
}

/// An instant of the command line as ms since the epoch: a duration before `now` (`7d`,
/// `12h`, `90m`), an RFC 3339 instant (`2026-03-01T12:00:00Z`) or a date (`2026-03-01`,
/// UTC midnight).
fn instant_ms(flag: &str, text: &str, now: std::time::SystemTime) -> Result<u64, CommandError> {
    let text = text.trim();
    let at = if let Ok(ago) = humantime::parse_duration(text) {
        now.checked_sub(ago)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
    } else if let Ok(at) = text.parse::<jiff::Timestamp>() {
        u128::try_from(at.as_millisecond()).ok()
    } else if let Ok(date) = text.parse::<jiff::civil::Date>() {
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .and_then(|z| u128::try_from(z.timestamp().as_millisecond()).ok())
    } else {
        return Err(CommandError::Usage(format!(
            "{flag} '{}' is neither a duration like 7d, 12h or 30m nor an instant like 2026-03-01 or 2026-03-01T12:00:00Z",
            text.escape_debug()
        )));
    };
    at.and_then(|ms| u64::try_from(ms).ok()).ok_or_else(|| {
        CommandError::Usage(format!(
            "{flag} '{}' is before 1970, which the ledger cannot hold",
            text.escape_debug()
        ))
    })
}

/// A `usage` report as `provd usage` prints it.
fn usage_table(report: &provd_client::message::UsageReport) -> String {
    use provd_client::message::{UsageBy, UsageRow};
    use std::fmt::Write as _;
    let when = |ms: u64| {
        jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|_| ms.to_string())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "usage by {} from {} to {}{}",
        report.by,
        when(report.since_ms),
        when(report.until_ms),
        report
            .uid
            .map(|uid| format!(", uid {uid} only"))
            .unwrap_or_default()
    );
    // Keys are the clients' words (model names, token ids): escaped, they cannot forge a
    // line or a column.
    let label = |row: &UsageRow| -> String {
        match (report.by, &row.key) {
            (UsageBy::User, _) => match (&row.user, row.uid) {
                (Some(name), Some(uid)) => format!("{} ({uid})", name.escape_debug()),
                (None, Some(uid)) => uid.to_string(),
                (_, None) => "(unknown uid)".to_owned(),
            },
            (UsageBy::Token, None) => "(no token)".to_owned(),
            (_, Some(key)) => key.escape_debug().to_string(),
            (_, None) => "-".to_owned(),
        }
    };
    let heading = match report.by {
        UsageBy::User => "USER",
        UsageBy::Provider => "PROVIDER",
        UsageBy::Model => "MODEL",
        UsageBy::Token => "TOKEN",
        UsageBy::Day => "DAY (UTC)",
    };
    let mut lines: Vec<(String, &UsageRow)> = report.rows.iter().map(|r| (label(r), r)).collect();
    lines.push(("total".to_owned(), &report.total));
    let width = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .chain([heading.len()])
        .max()
        .unwrap_or(0);
    let cost = |row: &UsageRow| row.cost.map_or("-".to_owned(), |c| format!("{c:.6}"));
    let _ = write!(
        out,
        "{heading:<width$}  {:>9} {:>9} {:>7} {:>9} {:>12} {:>12} {:>10}",
        "REQUESTS", "COMPLETED", "FAILED", "CANCELLED", "PROMPT", "COMPLETION", "REASONING"
    );
    if report.priced {
        let _ = write!(out, " {:>14}", "COST");
    }
    out.push('\n');
    for (i, (label, row)) in lines.iter().enumerate() {
        if i == lines.len() - 1 {
            let _ = writeln!(
                out,
                "{}",
                "-".repeat(width + 77 + if report.priced { 15 } else { 0 })
            );
        }
        let _ = write!(
            out,
            "{label:<width$}  {:>9} {:>9} {:>7} {:>9} {:>12} {:>12} {:>10}",
            row.requests,
            row.completed,
            row.failed,
            row.cancelled,
            row.prompt_tokens,
            row.completion_tokens,
            row.reasoning_tokens
        );
        if report.priced {
            let _ = write!(out, " {:>14}", cost(row));
        }
        out.push('\n');
    }
    if report.rows_omitted > 0 {
        let _ = writeln!(
            out,
            "({} more rows with the fewest tokens are left out; the total counts them)",
            report.rows_omitted
        );
    }
    if report.priced && !report.unpriced.is_empty() {
        let models: Vec<String> = report
            .unpriced
            .iter()
            .map(|m| m.escape_debug().to_string())
            .collect();
        let _ = writeln!(
            out,
            "no price for {} ([prices.\"provider/model\"]): the rows with a '-' cost include it",
            models.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::message::{UsageBy, UsageReport, UsageRow};

    #[test]
    fn since_takes_durations_instants_and_dates() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_772_323_200 + 86_400);
        assert_eq!(instant_ms("--since", "1d", now).unwrap(), 1_772_323_200_000);
        assert_eq!(
            instant_ms("--since", "12h", now).unwrap(),
            1_772_323_200_000 + 43_200_000
        );
        assert_eq!(
            instant_ms("--since", "2026-03-01T00:00:01Z", now).unwrap(),
            1_772_323_201_000
        );
        assert_eq!(
            instant_ms("--since", "2026-03-01", now).unwrap(),
            1_772_323_200_000
        );
        let e = instant_ms("--since", "last week", now)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--since 'last week' is neither"), "{e}");
        let e = instant_ms("--until", "1970-01-01T00:00:00Z", now).unwrap();
        assert_eq!(e, 0);
        let e = instant_ms("--since", "100000d", now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("before 1970"), "{e}");
    }

    #[test]
    fn the_table_has_a_totals_line_and_a_cost_column_only_with_prices() {
        let row = |key: &str, uid, cost| UsageRow {
            key: Some(key.to_owned()),
            uid: Some(uid),
            user: Some(key.to_owned()),
            requests: 2,
            completed: 2,
            prompt_tokens: 10,
            completion_tokens: 20,
            cost,
            ..UsageRow::default()
        };
        let mut report = UsageReport {
            by: UsageBy::User,
            rows: vec![row("alice", 1000, None), row("bob\n", 1001, None)],
            total: UsageRow {
                requests: 4,
                ..UsageRow::default()
            },
            ..UsageReport::default()
        };
        let text = usage_table(&report);
        assert!(text.contains("alice (1000)"), "{text}");
        assert!(
            text.contains("bob\\n (1001)"),
            "a name cannot break a line: {text}"
        );
        assert!(text.lines().last().unwrap().starts_with("total "), "{text}");
        assert!(!text.contains("COST"), "{text}");
        report.priced = true;
        report.rows[0].cost = Some(0.5);
        report.unpriced = vec!["q/m1".into()];
        let text = usage_table(&report);
        assert!(text.contains("COST"), "{text}");
        assert!(text.contains("0.500000"), "{text}");
        assert!(text.contains("no price for q/m1"), "{text}");
    }
}
