//! The daemon's resident memory idle, with many idle connections, and with as many
//! streams open at once, each waiting on a real HTTP upstream connection.

use provd_client::{Client, GenerateEvent, GenerateRequest};

use super::system;
use crate::Daemon;

/// RSS figures, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Connections and streams opened.
    pub count: usize,
    /// After start-up and one connection that pinged and left.
    pub idle_kib: u64,
    /// With `count` idle connections (hello exchanged).
    pub connections_kib: u64,
    /// With `count` streams open, one per connection, each having received its first
    /// chunk from an upstream that then stays silent.
    pub streams_kib: u64,
    /// After every stream and connection closed again, once the RSS settled.
    pub after_kib: u64,
}

impl Memory {
    /// KiB per idle connection.
    pub fn per_connection_kib(&self) -> f64 {
        self.connections_kib.saturating_sub(self.idle_kib) as f64 / self.count as f64
    }

    /// KiB per open stream, over the connection it runs on.
    pub fn per_stream_kib(&self) -> f64 {
        self.streams_kib.saturating_sub(self.connections_kib) as f64 / self.count as f64
    }
}

/// Waits until the daemon's `status` (connections, active streams) satisfies `done`;
/// each try is a round trip, and a million of them mean the benchmark is broken.
pub async fn until(client: &Client, done: impl Fn(u64, u64) -> bool) {
    for _ in 0..1_000_000 {
        let s = client.status().await.expect("status");
        if done(s.connections, s.active_streams) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the daemon never reached the expected state");
}

/// Measures `daemon`, fresh (its config must allow `count` + 1 connections and route
/// `provider` to an upstream that sends one chunk and then stalls, with timeouts longer
/// than the measurement).
pub async fn measure(daemon: &Daemon, provider: &str, count: usize) -> Memory {
    let pid = daemon.pid();
    let observer = daemon.client().await;
    observer.ping().await.expect("ping");
    let mut memory = Memory {
        count,
        idle_kib: system::rss_kib(pid),
        ..Memory::default()
    };

    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(daemon.client().await);
    }
    until(&observer, |conns, _| conns as usize == count + 1).await;
    memory.connections_kib = system::rss_kib(pid);

    let mut streams = Vec::with_capacity(count);
    for client in &clients {
        let mut request = GenerateRequest::prompt("q");
        request.provider = Some(provider.to_owned());
        streams.push(client.generate(request).await.expect("generate"));
    }
    for stream in &mut streams {
        match stream.next().await {
            Some(Ok(GenerateEvent::Chunk(_))) => {}
            other => panic!("a stream did not open: {other:?}"),
        }
    }
    until(&observer, |_, active| active as usize == count).await;
    memory.streams_kib = system::rss_kib(pid);

    drop(streams);
    drop(clients);
    until(&observer, |conns, active| conns == 1 && active == 0).await;
    memory.after_kib = settled_rss(pid).await;
    memory
}

/// The RSS once it has stopped changing for 1.5 s (at most 5 s): what the daemon keeps
/// after a burst, since it gives freed memory back a second after its last generation.
async fn settled_rss(pid: u32) -> u64 {
    let mut last = system::rss_kib(pid);
    let mut unchanged = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = system::rss_kib(pid);
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        if unchanged == 15 {
            break;
        }
    }
    last
}
