//! The documentation followed literally works: the README's configuration loads as
//! printed on a fresh host, its command examples name providers that configuration
//! defines, the client README's example is the one the build compiles, and every byte
//! example of PROTOCOL.md decodes to the value printed above it.

use std::collections::BTreeSet;

use provd_tests::{workspace, Daemon};

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced blocks of `lang` in `markdown`, in order.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("a fenced block ends");
        out.push(body[..end].to_owned());
        rest = &body[end..];
    }
    out
}

/// The README's configuration example (its one ```toml block).
fn readme_config() -> String {
    let toml = blocks(&read("README.md"), "toml");
    assert_eq!(toml.len(), 1, "README.md has one ```toml block");
    toml.into_iter().next().unwrap()
}

/// The provider ids `[providers.ID]` of a configuration.
fn provider_ids(toml: &str) -> BTreeSet<String> {
    toml.lines()
        .filter_map(|l| l.trim().strip_prefix("[providers."))
        .filter_map(|l| l.split(']').next())
        .filter(|id| !id.contains('.'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn readme_configuration_starts_a_daemon_as_printed() {
    let toml = readme_config();
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::builder()
        .config(&toml)
        .env("STATE_DIRECTORY", &state.path().display().to_string())
        .start();
    let client = daemon.client().await;
    let listed: BTreeSet<String> = client
        .list_providers()
        .await
        .expect("providers")
        .providers
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, provider_ids(&toml));
}

#[test]
fn readme_credential_and_token_examples_name_configured_providers() {
    let readme = read("README.md");
    let configured = provider_ids(&readme_config());
    let sh = blocks(&readme, "sh");
    let mut named = Vec::new();
    for block in &sh {
        for line in block.lines() {
            let words: Vec<&str> = line.split('#').next().unwrap().split_whitespace().collect();
            match words.as_slice() {
                ["provd", "creds", "set" | "test" | "remove", id, ..] => named.push(*id),
                ["provd", "token", "create", rest @ ..] => {
                    if let Some(i) = rest.iter().position(|w| *w == "--providers") {
                        named.extend(rest[i + 1].split(','));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(named.len() >= 4, "the examples were not found: {named:?}");
    for id in named {
        assert!(
            configured.contains(id),
            "README.md's example names provider '{id}', which its configuration ({configured:?}) does not define"
        );
    }
}

#[test]
fn client_readme_example_is_the_compiled_example() {
    let rust = blocks(&read("client/README.md"), "rust");
    assert_eq!(rust.len(), 1, "client/README.md has one ```rust block");
    let example = read("client/examples/generate.rs");
    assert!(
        example.contains(rust[0].as_str()),
        "client/README.md's example differs from client/examples/generate.rs"
    );
}

#[test]
fn systemd_readme_does_not_say_the_credential_store_is_still_to_come() {
    for path in ["systemd/README.md", "systemd/provd.toml"] {
        let text = read(path).replace('\n', " ");
        for stale in [
            "arrives with",
            "until then",
            "is not read yet",
            "takes over",
        ] {
            assert!(!text.contains(stale), "{path} still says '{stale}'");
        }
    }
}

/// The byte examples of a markdown document: each "`[...]`" line followed by a fenced
/// hex dump, as (line number, the value as written, the frame's bytes).
fn frame_examples(markdown: &str) -> Vec<(usize, String, Vec<u8>)> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.strip_prefix('`').and_then(|l| l.strip_suffix('`')) else {
            continue;
        };
        if !value.starts_with('[') || lines.get(i + 2) != Some(&"```") {
            continue;
        }
        let mut bytes = Vec::new();
        for dump in lines[i + 3..].iter().take_while(|l| **l != "```") {
            let (_offset, hex) = dump.split_once("  ").expect("an offset, two spaces, bytes");
            for byte in hex.split_whitespace() {
                bytes.push(u8::from_str_radix(byte, 16).expect("hex bytes"));
            }
        }
        out.push((i + 1, value.to_owned(), bytes));
    }
    out
}

#[test]
fn protocol_examples_decode_to_the_values_shown() {
    use provd_client::message::{decode, Envelope};
    use provd_client::{Chunk, GenerateDone, GenerateRequest};

    let doc = read("client/PROTOCOL.md");
    let examples = frame_examples(&doc);
    assert!(
        examples.len() >= 25,
        "found only {} examples",
        examples.len()
    );
    let mut typed = 0;
    for (line, written, frame) in examples {
        let at = format!("client/PROTOCOL.md:{line}");
        let (prefix, body) = frame.split_at(4);
        let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
        assert_eq!(len, body.len(), "{at}: the length prefix says {len}");
        let decoded: serde_json::Value =
            rmp_serde::from_slice(body).unwrap_or_else(|e| panic!("{at}: {e}"));
        // The document writes MessagePack's nil as `nil`; no example has it in a string.
        let shown: serde_json::Value = serde_json::from_str(&written.replace("nil", "null"))
            .unwrap_or_else(|e| panic!("{at}: the value shown is not JSON: {e}"));
        assert_eq!(decoded, shown, "{at}: the bytes decode to another value");

        // The frames of generations also decode as the Rust client reads them.
        match Envelope::parse(body).unwrap_or_else(|e| panic!("{at}: {e}")) {
            Envelope::Request {
                method: "generate",
                params,
                ..
            } => {
                decode::<GenerateRequest>(params).unwrap_or_else(|e| panic!("{at}: {e}"));
                typed += 1;
            }
            Envelope::Notification {
                method: "chunk",
                params,
            } => {
                decode::<Chunk>(params).unwrap_or_else(|e| panic!("{at}: {e}"));
                typed += 1;
            }
            Envelope::Reply {
                outcome: Ok(result),
                ..
            } if shown[3]["done"] == true => {
                decode::<GenerateDone>(result).unwrap_or_else(|e| panic!("{at}: {e}"));
                typed += 1;
            }
            _ => {}
        }
    }
    assert!(
        typed >= 10,
        "only {typed} generation frames were decoded as typed values"
    );
}
