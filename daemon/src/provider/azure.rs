//! Azure OpenAI: OpenAI's Chat Completions format behind Azure's own URLs and
//! authentication.
//!
//! - **Endpoint**: the resource's endpoint (`https://NAME.openai.azure.com`), from
//!   `options.endpoint`, else `base_url`, else `AZURE_OPENAI_ENDPOINT` in the daemon's
//!   environment (the one base URL DECISIONS let the daemon read from its environment).
//! - **Which API**: without `options.api_version`, the v1 API:
//!   `POST {endpoint}/openai/v1/chat/completions` with the deployment name as the body's
//!   `model`. With it, the deployment API:
//!   `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`.
//!   Either way the request's model (or `default_model`) names a *deployment*.
//! - **Auth**: `options.auth = "api-key"` (the default) sends the key as the `api-key`
//!   header; `"entra"` sends the credential as a Microsoft Entra bearer token
//!   (`Authorization: Bearer`), supplied by the operator (sealed or in the environment)
//!   and not refreshed by provd. The key's default variable is `AZURE_OPENAI_API_KEY`.
//! - **Models**: `list_models` returns the configured `options.deployments` (or the
//!   `default_model`) without asking Azure: the data-plane API lists base models, not the
//!   deployments a request must name.
//! - **Everything else is OpenAI's** (`openai::{chat_body, ChunkDecoder,
//!   completion_events, error_message, retry_after, refine}`). Azure's additions read as
//!   OpenAI's format does: the first streamed chunk (empty `choices`, the prompt's
//!   `prompt_filter_results`, an empty `model`) adds nothing; per-choice
//!   `content_filter_results` are ignored; an answer the content filter stops ends with
//!   finish reason `content_filter`; a prompt it refuses (400, `code: "content_filter"`)
//!   is an `invalid_request` carrying Azure's message.
//! - **Tools, structured output, reasoning and images map as OpenAI's** (see
//!   [`openai`]'s module doc): `tools`/`tool_choice`, `tool_calls` turns and `role:
//!   tool` results, `response_format` (`json_schema` needs a deployment API version of
//!   2024-08-01-preview or later, or the v1 API), `reasoning_effort` for reasoning
//!   deployments, image content parts; streamed `delta.tool_calls` and reasoning token
//!   counts read the same way.

use provd_client::{ErrorCode, GenerateRequest, ModelInfo};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use serde_json::Value;
use std::time::Duration;

use super::http::{self, HttpApi, HttpProvider, Transport};
use super::openai::{self, ChunkDecoder};
use super::sse::SseParser;
use super::{BoxFuture, ProviderError, ProviderSpec, StreamEvent};
use crate::settings::{OptionError, ProviderKind};

/// Where the endpoint may come from besides the configuration.
pub const ENDPOINT_ENV: &str = "AZURE_OPENAI_ENDPOINT";

/// An `azure-openai` provider instance.
pub type AzureOpenAiProvider = HttpProvider<AzureApi>;

/// Builds an instance; fails (naming where to put one) when no endpoint is known.
pub fn new(spec: ProviderSpec) -> Result<AzureOpenAiProvider, ProviderError> {
    let api = AzureApi::new(&spec)?;
    HttpProvider::with_api(spec, api)
}

/// How the credential is presented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// The key in the `api-key` header.
    #[default]
    ApiKey,
    /// A Microsoft Entra access token as `Authorization: Bearer`.
    Entra,
}

/// `[providers.<id>.options]` of an `azure-openai` provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AzureOptions {
    /// The resource endpoint, if configured here.
    pub endpoint: Option<String>,
    /// The deployment API's version; `None`: the v1 API.
    pub api_version: Option<String>,
    /// How the credential is sent.
    pub auth: Auth,
    /// The deployments `list_models` reports.
    pub deployments: Vec<String>,
}

impl AzureOptions {
    /// Reads and checks the options table.
    pub fn from_table(table: &toml::Table) -> Result<AzureOptions, OptionError> {
        let mut options = AzureOptions::default();
        for (key, value) in table {
            // The value as JSON writes it, so a string shows its quotes.
            let got = serde_json::to_string(value).unwrap_or_default();
            let refused = |rule: &str| (key.clone(), format!("{rule}, got {got}"));
            match key.as_str() {
                "endpoint" => {
                    let url = value
                        .as_str()
                        .filter(|u| is_http_url(u))
                        .ok_or_else(|| refused("must be an http(s) URL such as \"https://NAME.openai.azure.com\""))?;
                    options.endpoint = Some(url.to_owned());
                }
                "api_version" => {
                    let version = value.as_str().filter(|v| is_api_version(v)).ok_or_else(|| {
                        refused("must be an API version such as \"2024-10-21\" or \"2025-04-01-preview\"")
                    })?;
                    options.api_version = Some(version.to_owned());
                }
                "auth" => {
                    options.auth = match value.as_str() {
                        Some("api-key") => Auth::ApiKey,
                        Some("entra") => Auth::Entra,
                        _ => return Err(refused("must be \"api-key\" or \"entra\"")),
                    }
                }
                "deployments" => {
                    let names: Option<Vec<String>> = value.as_array().and_then(|a| {
                        a.iter()
                            .map(|d| d.as_str().filter(|d| is_deployment(d)).map(str::to_owned))
                            .collect()
                    });
                    options.deployments = names.ok_or_else(|| {
                        refused("must be a list of deployment names (letters, digits, '.', '_', '-')")
                    })?;
                }
                _ => {
                    return Err((
                        key.clone(),
                        "is not an option of type azure-openai (endpoint, api_version, auth, deployments)"
                            .to_owned(),
                    ))
                }
            }
        }
        Ok(options)
    }
}

fn is_http_url(text: &str) -> bool {
    Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// An API version goes into the query string: dates and `-preview` suffixes only.
fn is_api_version(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A deployment name as Azure allows it. Checked before a request's model goes into the
/// deployment API's path, so a client's model name can never reach another path.
fn is_deployment(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What Azure does its own way: the URL and the auth header.
#[derive(Debug)]
pub struct AzureApi {
    options: AzureOptions,
    /// The endpoint without a trailing `/`.
    endpoint: String,
}

impl AzureApi {
    fn new(spec: &ProviderSpec) -> Result<AzureApi, ProviderError> {
        // The configuration checked the options already; a failure here is a bug.
        let options = AzureOptions::from_table(&spec.config.options).map_err(|(key, rule)| {
            ProviderError::new(
                ErrorCode::InvalidRequest,
                format!("provider '{}': options.{key} {rule}", spec.id),
            )
        })?;
        // `base_url` is filled from AZURE_OPENAI_ENDPOINT by the factory when unset.
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| spec.config.base_url.clone())
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "provider '{}' (azure-openai) has no endpoint: set options.endpoint (https://NAME.openai.azure.com) or {ENDPOINT_ENV} in the daemon's environment",
                        spec.id
                    ),
                )
            })?;
        Ok(AzureApi {
            options,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }
}

impl HttpApi for AzureApi {
    type Framer = SseParser;
    type Decoder = ChunkDecoder;

    fn kind(&self) -> ProviderKind {
        ProviderKind::AzureOpenai
    }

    fn authorize(
        &self,
        spec: &ProviderSpec,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        let key = spec.require_credential()?;
        Ok(match self.options.auth {
            Auth::ApiKey => request.header("api-key", http::auth_header(&spec.id, "", key)?),
            Auth::Entra => request.header(
                reqwest::header::AUTHORIZATION,
                http::auth_header(&spec.id, "Bearer ", key)?,
            ),
        })
    }

    fn url(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Url, ProviderError> {
        let Some(version) = &self.options.api_version else {
            return http::endpoint(&spec.id, &self.endpoint, "/openai/v1/chat/completions");
        };
        let deployment = request.model.as_deref().unwrap_or(&spec.model);
        if !is_deployment(deployment) {
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "provider '{}': '{}' is not an Azure deployment name (letters, digits, '.', '_', '-'; at most 64)",
                    spec.id,
                    deployment.chars().take(64).collect::<String>()
                ),
            ));
        }
        http::endpoint(
            &spec.id,
            &self.endpoint,
            &format!("/openai/deployments/{deployment}/chat/completions?api-version={version}"),
        )
    }

    fn body(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Value, ProviderError> {
        openai::chat_body(spec, request, "max_completion_tokens")
    }

    fn decoder(&self, provider: &str) -> ChunkDecoder {
        ChunkDecoder::new(provider)
    }

    fn whole(
        &self,
        spec: &ProviderSpec,
        http: &Transport,
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        openai::completion_events(spec, http, &body, streamed)
    }

    fn list_models(
        provider: &HttpProvider<Self>,
    ) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        let spec = provider.spec();
        let deployments = match provider.api().options.deployments.as_slice() {
            [] => spec.config.default_model.iter().cloned().collect(),
            listed => listed.to_vec(),
        };
        let models = deployments
            .into_iter()
            .map(|id| ModelInfo {
                id,
                provider: spec.id.clone(),
                display_name: None,
                context_window: None,
                created_at: None,
                ..ModelInfo::default()
            })
            .collect();
        Box::pin(async move { Ok(models) })
    }

    fn error_message(body: &[u8]) -> Option<String> {
        openai::error_message(body)
    }

    fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        openai::retry_after(headers)
    }

    fn refine(error: &mut ProviderError, body: &[u8]) {
        openai::refine(error, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<AzureOptions, OptionError> {
        AzureOptions::from_table(&toml::from_str(text).unwrap())
    }

    fn api(table: &str) -> (ProviderSpec, AzureApi) {
        let spec = ProviderSpec::for_test(
            "az",
            &format!("type = \"azure-openai\"\ndefault_model = \"chat\"\n{table}"),
            "chat",
            Some("k-0123456789"),
        );
        let api = AzureApi::new(&spec).unwrap();
        (spec, api)
    }

    #[test]
    fn options_are_read_and_each_bad_one_is_named() {
        let o = options(
            "endpoint = \"https://r.openai.azure.com/\"\napi_version = \"2025-04-01-preview\"\nauth = \"entra\"\ndeployments = [\"a\", \"b.c_d-1\"]",
        )
        .unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("https://r.openai.azure.com/"));
        assert_eq!(o.api_version.as_deref(), Some("2025-04-01-preview"));
        assert_eq!(o.auth, Auth::Entra);
        assert_eq!(o.deployments, ["a", "b.c_d-1"]);
        for (text, key) in [
            ("endpoint = \"ftp://x\"", "endpoint"),
            ("endpoint = \"not a url\"", "endpoint"),
            ("api_version = \"2024&x=1\"", "api_version"),
            ("auth = \"password\"", "auth"),
            ("deployments = [\"../x\"]", "deployments"),
            ("deployments = \"a\"", "deployments"),
            ("deployment = \"a\"", "deployment"),
        ] {
            assert_eq!(options(text).unwrap_err().0, key, "{text}");
        }
    }

    #[test]
    fn without_an_api_version_the_v1_url_is_used_whatever_the_model() {
        let (spec, api) = api("base_url = \"https://r.openai.azure.com/\"");
        let mut request = GenerateRequest::prompt("q");
        request.model = Some("other".into());
        assert_eq!(
            api.url(&spec, &request).unwrap().as_str(),
            "https://r.openai.azure.com/openai/v1/chat/completions"
        );
    }

    #[test]
    fn with_an_api_version_the_deployment_is_in_the_path_and_must_be_a_deployment_name() {
        let (spec, api) = api(
            "[providers.az.options]\nendpoint = \"https://r.openai.azure.com\"\napi_version = \"2024-10-21\"",
        );
        let url = api.url(&spec, &GenerateRequest::prompt("q")).unwrap();
        assert_eq!(
            url.as_str(),
            "https://r.openai.azure.com/openai/deployments/chat/chat/completions?api-version=2024-10-21"
        );
        for hostile in ["../../admin", "a/b", "a?b=1", "a#b", "..", "x y"] {
            let mut request = GenerateRequest::prompt("q");
            request.model = Some(hostile.into());
            let e = api.url(&spec, &request).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{hostile}");
        }
    }

    #[test]
    fn without_an_endpoint_the_error_names_both_places_to_put_one() {
        let spec = ProviderSpec::for_test("az", "type = \"azure-openai\"", "chat", None);
        let e = AzureApi::new(&spec).unwrap_err();
        assert!(e.message.contains("options.endpoint"), "{e}");
        assert!(e.message.contains(ENDPOINT_ENV), "{e}");
    }
}
