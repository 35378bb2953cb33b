//! A blocking client for callers without an async runtime (the C ABI, scripts, tests).
//!
//! It owns a small tokio runtime whose one worker thread runs the connection's reader;
//! every call blocks the calling thread on that runtime. Calls from many threads at once
//! are fine: they share the connection the same way async tasks do.

use std::path::Path;
use std::sync::Arc;

use crate::client::{self, CancelHandle, ClientError, ConnectOptions, GenerateEvent};
use crate::message::{
    GenerateDone, GenerateRequest, HelloResult, ModelList, ProviderList, StatusResult,
};

/// A blocking connection to the daemon. `Send + Sync`; share it by reference or `Arc`.
#[derive(Debug)]
pub struct Client {
    // Declared before the runtime so the connection closes before the runtime stops.
    inner: client::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        Client::connect_as(path, "provd-client-blocking")
    }

    /// Connects, naming the client in the daemon's logs.
    pub fn connect_as(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        Client::connect_with_options(path, client_name, None, &ConnectOptions::new())
    }

    /// Connects with a token (or none) and the deadlines of `options`, as
    /// [`client::Client::connect_with_options`]: every blocking call of this client then
    /// returns [`ClientError::TimedOut`] rather than wait past its deadline.
    pub fn connect_with_options(
        path: &Path,
        client_name: &str,
        token: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("provd-client")
            .enable_all()
            .build()
            .map_err(|e| {
                ClientError::Disconnected(format!("cannot start the client runtime: {e}"))
            })?;
        let inner = runtime.block_on(client::Client::connect_with_options(
            path,
            client_name,
            token,
            options,
        ))?;
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// What the daemon said about itself in the hello.
    pub fn daemon(&self) -> &HelloResult {
        self.inner.daemon()
    }

    /// Round trip to the daemon.
    pub fn ping(&self) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.ping())
    }

    /// Lists the configured providers.
    pub fn list_providers(&self) -> Result<ProviderList, ClientError> {
        self.runtime.block_on(self.inner.list_providers())
    }

    /// Lists models of one provider, or of all.
    pub fn list_models(&self, provider: Option<&str>) -> Result<ModelList, ClientError> {
        self.runtime.block_on(self.inner.list_models(provider))
    }

    /// The daemon's status.
    pub fn status(&self) -> Result<StatusResult, ClientError> {
        self.runtime.block_on(self.inner.status())
    }

    /// Who used what, from the usage ledger (see [`crate::Client::usage`]).
    pub fn usage(
        &self,
        params: &crate::message::UsageParams,
    ) -> Result<crate::message::UsageReport, ClientError> {
        self.runtime.block_on(self.inner.usage(params))
    }

    /// Starts a generation; iterate the result for its events.
    pub fn generate(&self, request: GenerateRequest) -> Result<Generation, ClientError> {
        let inner = self.runtime.block_on(self.inner.generate(request))?;
        Ok(Generation {
            inner: Some(inner),
            runtime: self.runtime.clone(),
        })
    }
}

/// A running generation; an iterator of events that ends after `Done` or an error.
/// Dropping it early cancels the generation.
#[derive(Debug)]
pub struct Generation {
    inner: Option<client::Generation>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Generation {
    /// The request id.
    pub fn id(&self) -> u32 {
        self.inner.as_ref().map_or(0, client::Generation::id)
    }

    /// A handle to cancel this generation from another thread.
    pub fn cancel_handle(&self) -> Option<BlockingCancel> {
        self.inner.as_ref().map(|g| BlockingCancel {
            handle: g.cancel_handle(),
            runtime: self.runtime.clone(),
        })
    }

    /// Reads to the end; returns the text and the terminal result.
    pub fn collect_text(mut self) -> Result<(String, GenerateDone), ClientError> {
        let inner = self.inner.take().expect("a generation is collected once");
        self.runtime.block_on(inner.collect_text())
    }
}

impl Iterator for Generation {
    type Item = Result<GenerateEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let inner = self.inner.as_mut()?;
        self.runtime.block_on(inner.next())
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Dropped inside the runtime context so its cancel-on-drop can spawn.
        let _guard = self.runtime.enter();
        self.inner.take();
    }
}

/// Cancels a blocking generation from any thread.
#[derive(Clone, Debug)]
pub struct BlockingCancel {
    handle: CancelHandle,
    // Owned, not a `Handle`: a cancel from another thread must keep the runtime alive
    // even if the client and the generation are dropped meanwhile.
    runtime: Arc<tokio::runtime::Runtime>,
}

impl BlockingCancel {
    /// Asks the daemon to cancel; the generation then ends with `cancelled`. Call it from
    /// a plain thread: like every blocking call, it panics inside an async runtime.
    pub fn cancel(&self) -> Result<(), ClientError> {
        self.runtime.block_on(self.handle.cancel())
    }

    /// The generation's id.
    pub fn id(&self) -> u32 {
        self.handle.id()
    }
}
