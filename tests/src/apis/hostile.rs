//! A hostile upstream: it speaks every provider API (Anthropic, OpenAI and compatible
//! servers, Ollama, Gemini, told apart by the request's path) and answers with an error
//! that echoes what it was sent — the request's headers, the auth key among them, and its
//! body — plus any strings the test gives it (keys the daemon holds for *other*
//! providers), in every error shape those APIs have.
//!
//! The shape is chosen by the prompt, so that any client can ask for it (the `provd`
//! command line too): the request body contains `scenario:<name>`, where `<name>` is one
//! of [`Scenario`]'s forms (see [`Scenario::name`]).

use serde_json::{json, Value};

use super::{anthropic, gemini, ollama, openai};
use crate::upstream::{split_every, Recorded, Reply, Upstream};

/// Which API a request was for, from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/messages`.
    Anthropic,
    /// `POST …/chat/completions`.
    Openai,
    /// `POST /api/chat`.
    Ollama,
    /// `POST /v1beta/models/…:(stream)generateContent`.
    Gemini,
}

impl Api {
    fn of(request: &Recorded) -> Api {
        let path = request.path();
        if path.ends_with("/messages") {
            Api::Anthropic
        } else if path.ends_with("/chat/completions") {
            Api::Openai
        } else if path == "/api/chat" {
            Api::Ollama
        } else {
            Api::Gemini
        }
    }
}

/// Which secret a plain-text body places at a given offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The key the request carried (its auth header).
    Own,
    /// The test's extra secret number `n`.
    Extra(usize),
}

/// One error shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A `text/plain` body of `status`: `offset` filler characters, then the secret, then
    /// a few more words: with the offset looped across the daemon's quoting cut, the
    /// secret straddles it once at every position.
    Plain {
        /// HTTP status.
        status: u16,
        /// Filler characters before the secret.
        offset: usize,
        /// The secret placed there.
        which: Which,
    },
    /// A `text/plain` body of `status` that is the whole echo (long: every header, the
    /// body, the extra secrets), after `filler` characters.
    Echo {
        /// HTTP status.
        status: u16,
        /// Filler characters before the echo (0: short; thousands: long).
        filler: usize,
    },
    /// The API's own JSON error body, its message the echo.
    Json {
        /// HTTP status.
        status: u16,
    },
    /// A JSON body that is not the API's error shape (`{"detail": …}`), so the daemon
    /// quotes it raw.
    OtherJson {
        /// HTTP status.
        status: u16,
    },
    /// A 200 stream: one piece of text, then the API's in-stream error event (Ollama: an
    /// NDJSON error line) carrying the echo, the body cut every 7 bytes so that every
    /// secret arrives split across chunks.
    StreamError,
    /// A 200 stream whose first event has the echo where the API has an object, so the
    /// decoder's JSON error quotes it (`invalid type: string "…"`).
    MalformedStream,
    /// A 200 whole body with the echo where the API has an array or object (for
    /// `stream: false` requests).
    MalformedWhole,
    /// A 302 whose `Location` quotes the secrets.
    Redirect,
}

impl Scenario {
    /// The name to put after `scenario:` in the prompt.
    pub fn name(&self) -> String {
        let which = |w: &Which| match w {
            Which::Own => "own".to_owned(),
            Which::Extra(n) => format!("extra{n}"),
        };
        match self {
            Scenario::Plain {
                status,
                offset,
                which: w,
            } => format!("plain_{status}_{offset}_{}", which(w)),
            Scenario::Echo { status, filler } => format!("echo_{status}_{filler}"),
            Scenario::Json { status } => format!("json_{status}"),
            Scenario::OtherJson { status } => format!("otherjson_{status}"),
            Scenario::StreamError => "streamerror".into(),
            Scenario::MalformedStream => "malformedstream".into(),
            Scenario::MalformedWhole => "malformedwhole".into(),
            Scenario::Redirect => "redirect".into(),
        }
    }

    /// The prompt that asks the hostile upstream for this scenario.
    pub fn prompt(&self) -> String {
        format!("scenario:{} please", self.name())
    }

    fn parse(name: &str) -> Option<Scenario> {
        let parts: Vec<&str> = name.split('_').collect();
        let number = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok());
        let status = || number(1).and_then(|s| u16::try_from(s).ok());
        Some(match parts[0] {
            "plain" => Scenario::Plain {
                status: status()?,
                offset: number(2)?,
                which: match *parts.get(3)? {
                    "own" => Which::Own,
                    extra => Which::Extra(extra.strip_prefix("extra")?.parse().ok()?),
                },
            },
            "echo" => Scenario::Echo {
                status: status()?,
                filler: number(2)?,
            },
            "json" => Scenario::Json { status: status()? },
            "otherjson" => Scenario::OtherJson { status: status()? },
            "streamerror" => Scenario::StreamError,
            "malformedstream" => Scenario::MalformedStream,
            "malformedwhole" => Scenario::MalformedWhole,
            "redirect" => Scenario::Redirect,
            _ => return None,
        })
    }
}

/// The key a request carried, from whichever auth header its API uses.
pub fn own_key(request: &Recorded) -> String {
    let value = request
        .header("authorization")
        .or_else(|| request.header("x-api-key"))
        .or_else(|| request.header("x-goog-api-key"))
        .unwrap_or("");
    value.strip_prefix("Bearer ").unwrap_or(value).to_owned()
}

/// Everything the request carried, as text: the key and the extra secrets first (so
/// that they come before any cut), then the request line, every header and the body.
fn echo(request: &Recorded, extra: &[String]) -> String {
    let mut text = format!("refused key {}", own_key(request));
    for secret in extra {
        text.push_str(&format!(", also seen {secret}"));
    }
    text.push_str(&format!(
        "; you sent {} {}\n",
        request.method, request.target
    ));
    for (name, value) in &request.headers {
        text.push_str(&format!("{name}: {value}\n"));
    }
    text.push_str(&String::from_utf8_lossy(&request.body));
    text
}

fn plain(status: u16, body: String) -> Reply {
    let mut reply = Reply::json(status, &Value::Null);
    reply.content_type = "text/plain; charset=utf-8".into();
    reply.body = vec![crate::upstream::Part::Bytes(body.into_bytes())];
    reply
}

/// The answer to `request` for the scenario its body names, echoing `extra` too.
pub fn respond(request: &Recorded, extra: &[String]) -> Reply {
    let body = String::from_utf8_lossy(&request.body);
    let name = body
        .split("scenario:")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .unwrap_or_default();
    let Some(scenario) = Scenario::parse(&name) else {
        return plain(400, format!("no scenario in the request: {body}"));
    };
    let api = Api::of(request);
    let echoed = echo(request, extra);
    match scenario {
        Scenario::Plain {
            status,
            offset,
            which,
        } => {
            let secret = match which {
                Which::Own => own_key(request),
                Which::Extra(n) => extra[n].clone(),
            };
            plain(
                status,
                format!("{}{secret} was refused", "x".repeat(offset)),
            )
        }
        Scenario::Echo { status, filler } => {
            plain(status, format!("{}{echoed}", "y".repeat(filler)))
        }
        Scenario::Json { status } => match api {
            Api::Anthropic => anthropic::error(status, "api_error", &echoed),
            Api::Openai => openai::error(status, &echoed, "server_error", None),
            Api::Ollama => ollama::error(status, &echoed),
            Api::Gemini => gemini::error(status, "INTERNAL", &echoed, json!([])),
        },
        Scenario::OtherJson { status } => Reply::json(
            status,
            &json!({"detail": echoed, "padding": "z".repeat(400)}),
        ),
        Scenario::StreamError => {
            let text = match api {
                Api::Anthropic => format!(
                    "{}{}{}",
                    anthropic::message_start("m", 3),
                    anthropic::text_block(0, &["hello "]),
                    event_text(anthropic::error_event("overloaded_error", &echoed)),
                ),
                Api::Openai => format!(
                    "{}{}",
                    openai::chunk_event("m", json!({"content": "hello "}), None),
                    event_text(openai::error_event(&echoed, "server_error")),
                ),
                Api::Ollama => format!(
                    "{}{}",
                    ollama::chunk_line("m", "hello "),
                    event_text(ollama::error_line(&echoed)),
                ),
                Api::Gemini => format!(
                    "{}{}",
                    gemini::chunk("m", json!([{"text": "hello "}]), None, (1, 1, 0)),
                    event_text(gemini::error_event(500, "INTERNAL", &echoed)),
                ),
            };
            stream(api, &text)
        }
        Scenario::MalformedStream => {
            let text = match api {
                Api::Anthropic => {
                    anthropic::event(&json!({"type": "message_start", "message": echoed}))
                }
                Api::Openai => format!("data: {}\n\n", json!({"choices": echoed})),
                Api::Ollama => format!("{}\n", json!({"message": echoed})),
                Api::Gemini => gemini::event(&json!({"candidates": echoed})),
            };
            stream(api, &text)
        }
        Scenario::MalformedWhole => {
            let field = match api {
                Api::Anthropic => "content",
                Api::Openai => "choices",
                Api::Ollama => "message",
                Api::Gemini => "candidates",
            };
            let mut body = serde_json::Map::new();
            body.insert(field.into(), Value::String(echoed));
            Reply::json(200, &Value::Object(body))
        }
        Scenario::Redirect => {
            let mut location = format!("https://elsewhere.example/v1?key={}", own_key(request));
            for (i, secret) in extra.iter().enumerate() {
                location.push_str(&format!("&k{i}={secret}"));
            }
            plain(302, "moved".into()).header("location", &location)
        }
    }
}

fn event_text(part: crate::upstream::Part) -> String {
    match part {
        crate::upstream::Part::Bytes(b) => String::from_utf8(b).expect("events are text"),
        other => panic!("not bytes: {other:?}"),
    }
}

fn stream(api: Api, text: &str) -> Reply {
    let content_type = match api {
        Api::Ollama => "application/x-ndjson",
        _ => "text/event-stream",
    };
    Reply::stream(content_type, split_every(text, 7))
}

/// Starts a hostile upstream that also echoes `extra` (keys the daemon holds for other
/// providers) in every answer.
pub async fn start(extra: Vec<String>) -> Upstream {
    Upstream::start(move |request| respond(request, &extra)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_parse_back() {
        for s in [
            Scenario::Plain {
                status: 500,
                offset: 287,
                which: Which::Extra(1),
            },
            Scenario::Plain {
                status: 401,
                offset: 0,
                which: Which::Own,
            },
            Scenario::Echo {
                status: 503,
                filler: 5000,
            },
            Scenario::Json { status: 429 },
            Scenario::OtherJson { status: 400 },
            Scenario::StreamError,
            Scenario::MalformedStream,
            Scenario::MalformedWhole,
            Scenario::Redirect,
        ] {
            assert_eq!(Scenario::parse(&s.name()), Some(s));
        }
    }
}
