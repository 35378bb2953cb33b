//! A raw connection for tests that must send bytes no well-behaved client would: garbage,
//! truncated frames, wrong types, requests out of order.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use provd_client::message::{self, Envelope, Hello, PROTOCOL_VERSION};
use provd_client::WireError;
use serde::Serialize;

/// Safety net so a broken daemon fails a test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// An owned, decoded frame from the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `[1, id, nil, result]`, the result as JSON for easy assertions.
    Result(u32, serde_json::Value),
    /// `[1, id, error, nil]`.
    Error(u32, WireError),
    /// `[2, method, params]`, params as JSON.
    Notification(String, serde_json::Value),
}

/// A blocking socket speaking raw frames.
pub struct RawConn {
    stream: UnixStream,
}

impl RawConn {
    /// Connects without a hello.
    pub fn connect(path: &Path) -> RawConn {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        RawConn { stream }
    }

    /// Connects and completes the hello.
    pub fn greeted(path: &Path) -> RawConn {
        let mut c = RawConn::connect(path);
        c.request(
            0,
            "hello",
            &Hello {
                protocol_version: PROTOCOL_VERSION,
                client: "raw".into(),
                token: None,
            },
        );
        match c.read_frame() {
            Some(Frame::Result(0, _)) => c,
            other => panic!("hello failed: {other:?}"),
        }
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes one frame around `payload`.
    pub fn send_payload(&mut self, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.send_bytes(&frame);
    }

    /// Writes a request.
    pub fn request<T: Serialize>(&mut self, id: u32, method: &str, params: &T) {
        let frame = message::encode_request(id, method, params).unwrap();
        self.send_bytes(&frame);
    }

    /// Reads one frame; `None` when the daemon closed the connection.
    pub fn read_frame(&mut self) -> Option<Frame> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read failed: {e}"),
        }
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        self.stream.read_exact(&mut payload).expect("frame payload");
        let to_json = |bytes: &[u8]| -> serde_json::Value {
            rmp_serde::from_slice(bytes).expect("payload as JSON")
        };
        Some(
            match Envelope::parse(&payload).expect("daemon frames parse") {
                Envelope::Reply {
                    id,
                    outcome: Ok(result),
                } => Frame::Result(id, to_json(result)),
                Envelope::Reply {
                    id,
                    outcome: Err(e),
                } => Frame::Error(id, e),
                Envelope::Notification { method, params } => {
                    Frame::Notification(method.to_owned(), to_json(params))
                }
                Envelope::Request { .. } => panic!("the daemon sent a request"),
            },
        )
    }

    /// Reads frames until the reply for `id`, returning it and the chunk notifications of
    /// `id` seen on the way.
    pub fn read_reply(&mut self, id: u32) -> (Frame, Vec<serde_json::Value>) {
        let mut chunks = Vec::new();
        loop {
            match self.read_frame() {
                None => panic!("connection closed before the reply to {id}"),
                Some(Frame::Notification(m, p)) if m == "chunk" => {
                    if p["id"] == id {
                        chunks.push(p);
                    }
                }
                Some(f @ (Frame::Result(i, _) | Frame::Error(i, _))) if i == id => {
                    return (f, chunks)
                }
                Some(_) => {}
            }
        }
    }

    /// Asserts the daemon closes the connection next (after any frames it still sends),
    /// returning those frames.
    pub fn expect_close(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.read_frame() {
            frames.push(f);
            assert!(
                frames.len() < 10_000,
                "the daemon keeps sending instead of closing"
            );
        }
        frames
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// The underlying socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}
