//! Each client sees only what it may use (issue 11, part 7): `status` and
//! `list_providers` show a non-admin only the providers it may use (its uid's provider
//! ACLs, its token's scope) and no per-model detail, which would name the models other
//! users asked for; an admin sees everything.
//!
//! Uids 64020–64029.

use provd_client::GenerateRequest;
use provd_tests::other_user::root_or_skip;
use provd_tests::Daemon;

use crate::admission::{mock_daemon, provd_as, served};

/// A model name only root's requests carry.
const ROOTS_MODEL: &str = "roots-private-model";

/// Providers `mock`, `b` (root only) and `c`; uid 64020 allowed; root has run a
/// generation of [`ROOTS_MODEL`] on each.
async fn daemon() -> Daemon {
    let daemon = mock_daemon(
        "",
        "[providers.b]\ntype = \"mock\"\n[providers.c]\ntype = \"mock\"\n\
         [access]\nallow_uids = [64020]\n[access.providers.b]\nuids = [0]\n",
    );
    let client = daemon.client().await;
    for provider in ["mock", "b", "c"] {
        let mut request = GenerateRequest::prompt("hi");
        request.provider = Some(provider.into());
        request.model = Some(ROOTS_MODEL.into());
        provd_tests::generation_text(&client, request).await;
    }
    daemon
}

fn ids(providers: &serde_json::Value) -> Vec<&str> {
    providers
        .as_array()
        .expect("a list of providers")
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_only_the_providers_it_may_use_and_no_model_names() {
    if !root_or_skip("a_user_sees_only_the_providers_it_may_use_and_no_model_names") {
        return;
    }
    let daemon = daemon().await;
    let status = served(&provd_as(64020, &daemon, &["status", "--json"]), "status");
    let providers = served(
        &provd_as(64020, &daemon, &["providers", "--json"]),
        "providers",
    );
    for shown in [&status, &providers] {
        assert!(
            !shown.contains(ROOTS_MODEL),
            "another user's model name shown: {shown}"
        );
    }
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(ids(&status["providers"]), ["c", "mock"]);
    assert_eq!(status["instances"], serde_json::json!([]));
    assert_eq!(status["instances_omitted"], 0);
    // Provider-level figures, of the providers it may use only.
    let counted: Vec<&str> = status["provider_counters"]
        .as_array()
        .expect("provider counters")
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(counted, ["c", "mock"]);
    let providers: serde_json::Value = serde_json::from_str(&providers).unwrap();
    assert_eq!(ids(&providers["providers"]), ["c", "mock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_scoped_connection_sees_only_its_token_s_providers() {
    let daemon = daemon().await;
    let (ok, token, err) =
        provd_tests::run_provd(&["token", "create", "--providers", "c"], &daemon.socket);
    assert!(ok.success(), "{err}");
    let client =
        provd_client::Client::connect_with_token(&daemon.socket, "scoped", Some(token.trim()))
            .await
            .unwrap();
    let status = client.status().await.unwrap();
    let shown: Vec<&str> = status.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(shown, ["c"]);
    assert!(status.instances.is_empty(), "{:?}", status.instances);
    let counted: Vec<&str> = status
        .provider_counters
        .iter()
        .map(|p| p.provider.as_str())
        .collect();
    assert_eq!(counted, ["c"]);
    let listed = client.list_providers().await.unwrap();
    assert_eq!(listed.providers.len(), 1);
    assert_eq!(listed.providers[0].id, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_every_provider_and_every_model() {
    let daemon = daemon().await;
    let status = daemon.client().await.status().await.unwrap();
    let shown: Vec<&str> = status.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(shown, ["b", "c", "mock"]);
    let counted: Vec<(&str, u64)> = status
        .provider_counters
        .iter()
        .map(|p| (p.provider.as_str(), p.metrics.requests))
        .collect();
    assert_eq!(counted, [("b", 1), ("c", 1), ("mock", 1)]);
    let mut instances: Vec<(&str, &str)> = status
        .instances
        .iter()
        .map(|i| (i.provider.as_str(), i.model.as_str()))
        .collect();
    instances.sort_unstable();
    assert_eq!(
        instances,
        [
            ("b", ROOTS_MODEL),
            ("c", ROOTS_MODEL),
            ("mock", ROOTS_MODEL)
        ]
    );
}
