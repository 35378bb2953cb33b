//! The documentation followed literally works: the README's configuration loads as
//! printed on a fresh host, its command examples name providers that configuration
//! defines, and the client README's example is the one the build compiles.

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
