//! `GET /metrics` (and `HEAD`): the daemon's metrics ([`crate::metrics`]) for Prometheus,
//! as Prometheus text 0.0.4, or OpenMetrics 1.0 when the scraper's `Accept` asks for it.
//!
//! Who may read them is who may use the front door: on the Unix socket any uid the
//! access policy allows, on the loopback listener a request with a valid provd token
//! (as every route there). An admin sees everything; anyone else sees, as `status` shows
//! a non-admin, the series of the providers it may use without model labels, and
//! neither the ledger's counters nor anything of providers it may not use.

use std::sync::atomic::Ordering;

use crate::metrics::{DaemonFigures, Format, View};

/// Renders the metrics for the caller.
pub async fn route(call: super::Call) -> super::Response {
    let caller = match call.caller {
        Ok(caller) => caller,
        Err(e) => return super::openai::error_response(&e.into()),
    };
    let format = Format::negotiate(
        call.request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let daemon = &call.front.daemon;
    let config = daemon.factory.config();
    let figures = DaemonFigures {
        connections: daemon.stats.connections.load(Ordering::Relaxed),
        active_streams: daemon.stats.active_streams.load(Ordering::Relaxed),
        uptime_seconds: daemon.started.elapsed().as_secs_f64(),
        upstream_statuses: daemon
            .factory
            .upstream_statuses()
            .into_iter()
            .map(|(provider, status, count)| {
                let provider =
                    crate::metrics::label(&config, crate::metrics::Label::Provider, &provider);
                (provider.to_owned(), status, count)
            })
            .collect(),
        ledger: daemon.ledger.is_enabled().then(|| daemon.ledger.status()),
    };
    let visible = |provider: &str| caller.check_provider(provider).is_ok();
    let view = View {
        admin: caller.grant.admin,
        provider_visible: &visible,
    };
    let text = daemon.metrics.render(&figures, &view, format);
    let mut response = http::Response::new(super::full(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    response
}
