//! The generation request, built field by field.
//!
//! A `provd_request` is plain data: the library copies every string it is given, so the
//! caller's buffers may be reused as soon as a setter returns, and one finished request
//! may be used for any number of generations, from any number of threads at once, as long
//! as nobody changes it meanwhile.

use std::ffi::c_char;

use ::provd_client::{
    Effort, GenerateRequest, Image, Message, Reasoning, ResponseFormat, Role, Tool, ToolCall,
    ToolChoice,
};

use crate::args;
use crate::done::provd_done;
use crate::error::{provd_error, Error};
use crate::panic::{boundary, function_name, run_fallible};
use crate::status::provd_status;

/// Who said a message in a conversation (`provd_request_add_message`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum provd_role {
    /// Instructions; most providers take them apart from the turns.
    PROVD_ROLE_SYSTEM = 0,
    /// The person or program asking.
    PROVD_ROLE_USER = 1,
    /// The model.
    PROVD_ROLE_ASSISTANT = 2,
}

/// What to generate, from which provider and model. Made by `provd_request_new`, freed
/// by `provd_request_free`.
///
/// Unset fields take the daemon's defaults: the default provider, its default model, its
/// configured `max_tokens`, the provider's sampling defaults. A request needs a prompt or
/// at least one message.
#[derive(Debug)]
pub struct provd_request {
    pub(crate) inner: GenerateRequest,
}

/// Makes an empty request in `*request_out`; the caller frees it with
/// `provd_request_free`.
///
/// Errors: `PROVD_NULL_ARGUMENT` if `request_out` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_request_new(
    request_out: *mut *mut provd_request,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires `request_out` to be NULL or writable.
        let out = unsafe { args::out_object(request_out, "request_out") }?;
        out.write(args::give(provd_request {
            inner: GenerateRequest {
                stream: true,
                ..GenerateRequest::default()
            },
        }));
        Ok(())
    })
}

/// Frees a request. NULL is ignored. Generations started from it are not affected (they
/// copied it).
#[no_mangle]
pub extern "C" fn provd_request_free(request: *mut provd_request) {
    crate::panic::free(|| {
        // SAFETY: the header requires `request` to be NULL or a request from
        // provd_request_new, freed only this once and not in use by another thread.
        drop(unsafe { args::take(request) });
    })
}

/// Runs a setter in the panic boundary, named `function` (the setter's
/// [`function_name!`]): checks the request pointer, then lets `set` change it.
fn set(
    function: &'static str,
    request: *mut provd_request,
    err_out: *mut *mut provd_error,
    set: impl FnOnce(&mut GenerateRequest) -> Result<(), Error>,
) -> provd_status {
    run_fallible(function, err_out, || {
        // SAFETY: the header requires `request` to be NULL or a live request that no
        // other thread uses while it is being changed.
        let request = unsafe { args::handle_mut(request, "request") }?;
        set(&mut request.inner)
    })
}

/// Copies an optional string argument: NULL unsets the field.
///
/// # Safety
///
/// As [`args::bytes`].
unsafe fn owned(data: *const c_char, len: usize, name: &str) -> Result<Option<String>, Error> {
    // SAFETY: forwarded contract.
    Ok(unsafe { args::opt_text(data, len, name) }?.map(str::to_owned))
}

/// Sets the provider id (`[providers.<id>]` in the daemon's configuration) from `len`
/// bytes of UTF-8 at `provider`. NULL unsets it: the daemon's default provider answers.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`. An unknown provider is
/// reported by the generation, as `PROVD_NOT_FOUND`.
/// Not thread-safe for one request (it changes it).
#[no_mangle]
pub extern "C" fn provd_request_set_provider(
    request: *mut provd_request,
    provider: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.provider = unsafe { owned(provider, len, "provider") }?;
        Ok(())
    })
}

/// Sets the model id from `len` bytes of UTF-8 at `model`. NULL unsets it: the
/// provider's default model answers.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_model(
    request: *mut provd_request,
    model: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.model = unsafe { owned(model, len, "model") }?;
        Ok(())
    })
}

/// Sets the prompt (one user turn, appended after any messages) from `len` bytes of
/// UTF-8 at `prompt`. NULL unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_prompt(
    request: *mut provd_request,
    prompt: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.prompt = unsafe { owned(prompt, len, "prompt") }?;
        Ok(())
    })
}

/// Sets the system prompt from `len` bytes of UTF-8 at `system`. NULL unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_system(
    request: *mut provd_request,
    system: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.system = unsafe { owned(system, len, "system") }?;
        Ok(())
    })
}

/// Appends one turn to the conversation: `role` is a `provd_role` value, `content` is
/// `len` bytes of UTF-8 (not NULL; an empty turn is `""` with length 0).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, content), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (a role that is no `provd_role`).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_message(
    request: *mut provd_request,
    role: u32,
    content: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // `role` arrives as a plain integer: a C enum may hold any value, and a Rust enum
        // that does is undefined behaviour.
        let role = match role {
            x if x == provd_role::PROVD_ROLE_SYSTEM as u32 => Role::System,
            x if x == provd_role::PROVD_ROLE_USER as u32 => Role::User,
            x if x == provd_role::PROVD_ROLE_ASSISTANT as u32 => Role::Assistant,
            other => {
                return Err(Error::invalid(
                    "role",
                    format!("must be a provd_role (0, 1 or 2), got {other}"),
                ))
            }
        };
        // SAFETY: the header's rule for pointer + length arguments.
        let content = unsafe { args::text(content, len, "content") }?.to_owned();
        r.messages.push(Message::text(role, content));
        Ok(())
    })
}

/// Caps the generated tokens; 0 unsets the cap (the provider's configured `max_tokens`
/// applies).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request). Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_max_tokens(
    request: *mut provd_request,
    max_tokens: u32,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.max_tokens = (max_tokens > 0).then_some(max_tokens);
        Ok(())
    })
}

/// Checks a sampling parameter: negative unsets it, NaN and infinities are refused.
fn sampling(value: f64, name: &str) -> Result<Option<f32>, Error> {
    if !value.is_finite() {
        return Err(Error::invalid(
            name,
            format!("must be a finite number, got {value}"),
        ));
    }
    // The wire carries float32, like the Rust client.
    Ok((value >= 0.0).then_some(value as f32))
}

/// Sets the sampling temperature. A negative value unsets it (the provider's default
/// applies); the range a provider accepts is checked by the daemon.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_ARGUMENT` (NaN or infinite).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_temperature(
    request: *mut provd_request,
    temperature: f64,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.temperature = sampling(temperature, "temperature")?;
        Ok(())
    })
}

/// Sets nucleus sampling (`top_p`). A negative value unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_ARGUMENT` (NaN or infinite).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_top_p(
    request: *mut provd_request,
    top_p: f64,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.top_p = sampling(top_p, "top_p")?;
        Ok(())
    })
}

/// Appends a stop sequence: `len` bytes of UTF-8 at `stop` (not NULL).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, stop), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_stop(
    request: *mut provd_request,
    stop: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let stop = unsafe { args::text(stop, len, "stop") }?;
        r.stop.push(stop.to_owned());
        Ok(())
    })
}

/// Replaces the provider-specific parameters with a JSON object: `len` bytes of UTF-8 at
/// `json`, such as `{"mock": {"chunks": 3}}`. They are passed through to the upstream
/// request (the mock provider reads `mock`). NULL removes them all.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`, `PROVD_INVALID_ARGUMENT`
/// (not JSON, or JSON that is not an object; the message says where). On error the
/// request keeps its previous parameters. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_additional_params_json(
    request: *mut provd_request,
    json: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let Some(json) = (unsafe { args::opt_text(json, len, "json") })? else {
            r.additional_params.clear();
            return Ok(());
        };
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid("json", format!("is not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(Error::invalid(
                "json",
                format!("must be a JSON object, got {value}"),
            ));
        };
        r.additional_params = map.into_iter().collect();
        Ok(())
    })
}

/// Parses `len` bytes of UTF-8 JSON at `json` into `T`, or says why not.
///
/// # Safety
///
/// As [`args::bytes`].
unsafe fn json_arg<T: serde::de::DeserializeOwned>(
    json: *const c_char,
    len: usize,
    name: &str,
    shape: &str,
) -> Result<Option<T>, Error> {
    // SAFETY: forwarded contract.
    let Some(text) = (unsafe { args::opt_text(json, len, name) })? else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| Error::invalid(name, format!("must be {shape}: {e}")))
}

/// `value`, the argument `name`, unless it is empty.
fn not_empty<'a>(value: &'a str, name: &str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::invalid(name, "is empty"));
    }
    Ok(value)
}

/// `text`, the argument `name`, parsed as JSON that must be `object` (a JSON object
/// described for the error).
fn json_object(text: &str, name: &str, object: &str) -> Result<serde_json::Value, Error> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(name, format!("is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(
            name,
            format!("must be {object}, got {value}"),
        ));
    }
    Ok(value)
}

/// The last turn of the conversation, which must be said by `role` (`what` names the
/// setter's subject in the error).
fn last_turn<'a>(
    r: &'a mut GenerateRequest,
    role: Role,
    what: &str,
) -> Result<&'a mut Message, Error> {
    let found = r.messages.last().map(|m| m.role);
    match r.messages.last_mut() {
        Some(m) if m.role == role => Ok(m),
        _ => Err(Error::invalid(
            "request",
            format!(
                "cannot take {what}: it goes on the last turn, which must be a `{}` turn, \
                 but {}",
                role_name(role),
                match found {
                    None => "the request has no messages yet (provd_request_add_message \
                             appends one)"
                        .to_owned(),
                    Some(other) => format!("the last turn is a `{}` turn", role_name(other)),
                }
            ),
        )),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// Replaces the tools the model may call with a JSON array, `len` bytes of UTF-8 at
/// `json`, of objects `{"name": ..., "description": ..., "parameters": {JSON Schema}}`
/// (`description` and `parameters` optional), such as
/// `[{"name": "get_weather", "parameters": {"type": "object", "properties": {"city":
/// {"type": "string"}}}}]`. NULL removes them all.
///
/// With tools, the generation may end with `PROVD_FINISH_TOOL_USE` and the calls in the
/// done result, and its chunks may be tool-call pieces (`provd_chunk`).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`, `PROVD_INVALID_ARGUMENT`
/// (not JSON, not an array of such objects, or a tool without a name; the message says
/// where). A provider that cannot use tools is reported by the generation, as
/// `PROVD_INVALID_REQUEST`. On error the request keeps its previous tools.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_tools_json(
    request: *mut provd_request,
    json: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let tools: Option<Vec<Tool>> = unsafe {
            json_arg(
                json,
                len,
                "json",
                "a JSON array of {\"name\", \"description\", \"parameters\"} objects",
            )
        }?;
        let tools = tools.unwrap_or_default();
        if let Some(i) = tools.iter().position(|t| t.name.is_empty()) {
            return Err(Error::invalid(
                "json",
                format!("tool {i} has an empty name"),
            ));
        }
        r.tools = tools;
        Ok(())
    })
}

/// Sets whether and which tool the model must call, from `len` bytes of UTF-8 at
/// `choice`: `"auto"` (it decides; the default with tools), `"none"` (it answers in
/// text), `"required"` (it calls at least one tool), or any other text, the name of the
/// one tool it must call. NULL unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (an empty choice). A name that is not one of the request's
/// tools, or a choice the provider cannot honour, is reported by the generation, as
/// `PROVD_INVALID_REQUEST`. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_tool_choice(
    request: *mut provd_request,
    choice: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.tool_choice = match unsafe { args::opt_text(choice, len, "choice") }? {
            None => None,
            Some("") => {
                return Err(Error::invalid(
                    "choice",
                    "is empty; give \"auto\", \"none\", \"required\" or a tool's name",
                ))
            }
            Some("auto") => Some(ToolChoice::Auto),
            Some("none") => Some(ToolChoice::None),
            Some("required") => Some(ToolChoice::Required),
            Some(name) => Some(ToolChoice::Tool(name.to_owned())),
        };
        Ok(())
    })
}

/// Sets the shape of the answer from JSON text, `len` bytes of UTF-8 at `json`, as the
/// wire carries it: `{"type": "text"}`, `{"type": "json_object"}`, or `{"type":
/// "json_schema", "name": ..., "schema": {JSON Schema}, "strict": true}`. NULL unsets it
/// (free text). `provd_request_set_response_json_object` and
/// `provd_request_set_response_json_schema` do the same without writing the JSON.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`, `PROVD_INVALID_ARGUMENT`
/// (not JSON, or none of those shapes; the message says why). On error the request keeps
/// its previous format. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_response_format_json(
    request: *mut provd_request,
    json: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.response_format = unsafe {
            json_arg(
                json,
                len,
                "json",
                "a response format: {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}",
            )
        }?;
        Ok(())
    })
}

/// Asks for an answer that is one JSON object (of any shape).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request). Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_response_json_object(
    request: *mut provd_request,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.response_format = Some(ResponseFormat::JsonObject);
        Ok(())
    })
}

/// Asks for an answer that is JSON matching a schema: `name` (`name_len` bytes of UTF-8)
/// names it, `schema` (`schema_len` bytes of UTF-8) is the JSON Schema as JSON text, and
/// `strict` asks the provider to enforce it exactly where it can.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, name, schema), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (an empty name, or a schema that is not a JSON object). On
/// error the request keeps its previous format. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_response_json_schema(
    request: *mut provd_request,
    name: *const c_char,
    name_len: usize,
    schema: *const c_char,
    schema_len: usize,
    strict: bool,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let (name, schema) = unsafe {
            (
                args::text(name, name_len, "name")?,
                args::text(schema, schema_len, "schema")?,
            )
        };
        not_empty(name, "name")?;
        let schema = json_object(schema, "schema", "a JSON object (a JSON Schema)")?;
        r.response_format = Some(ResponseFormat::JsonSchema {
            name: name.to_owned(),
            schema,
            strict,
        });
        Ok(())
    })
}

/// How hard the model should reason (`provd_request_set_reasoning`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum provd_effort {
    /// No effort given: the provider's default, or the token budget if one is given.
    PROVD_EFFORT_DEFAULT = 0,
    /// As little reasoning as the provider allows.
    PROVD_EFFORT_MINIMAL = 1,
    /// Little reasoning.
    PROVD_EFFORT_LOW = 2,
    /// Moderate reasoning.
    PROVD_EFFORT_MEDIUM = 3,
    /// Much reasoning.
    PROVD_EFFORT_HIGH = 4,
}

/// Asks for the model's reasoning: `effort` is a `provd_effort` value, `budget_tokens` a
/// cap on reasoning tokens (0: none given), and `show` says whether the reasoning text is
/// sent to the caller (as `PROVD_CHUNK_REASONING` chunks, or in `provd_done_reasoning`
/// when not streamed); hidden reasoning is still counted in the usage. Each provider
/// maps effort and budget to what its API has. `provd_request_clear_reasoning` undoes
/// this.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_ARGUMENT` (an effort that is
/// no `provd_effort`). A provider that cannot reason is reported by the generation, as
/// `PROVD_INVALID_REQUEST`. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_reasoning(
    request: *mut provd_request,
    effort: u32,
    budget_tokens: u32,
    show: bool,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        use provd_effort::*;
        // A plain integer for the reason `provd_request_add_message` takes its role so.
        let effort = match effort {
            x if x == PROVD_EFFORT_DEFAULT as u32 => None,
            x if x == PROVD_EFFORT_MINIMAL as u32 => Some(Effort::Minimal),
            x if x == PROVD_EFFORT_LOW as u32 => Some(Effort::Low),
            x if x == PROVD_EFFORT_MEDIUM as u32 => Some(Effort::Medium),
            x if x == PROVD_EFFORT_HIGH as u32 => Some(Effort::High),
            other => {
                return Err(Error::invalid(
                    "effort",
                    format!("must be a provd_effort (0 to 4), got {other}"),
                ))
            }
        };
        r.reasoning = Some(Reasoning {
            effort,
            budget_tokens: (budget_tokens > 0).then_some(budget_tokens),
            show,
        });
        Ok(())
    })
}

/// Stops asking for reasoning (the provider's default behaviour applies).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request). Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_clear_reasoning(
    request: *mut provd_request,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.reasoning = None;
        Ok(())
    })
}

/// Adds an image to the last turn, which must be a user turn
/// (`provd_request_add_message` with `PROVD_ROLE_USER`): `data` is the image's bytes in
/// base64 (`data_len` bytes of ASCII, no `data:` prefix), `media_type` its type
/// (`image/png`, `image/jpeg`, `image/gif` or `image/webp`). Images follow the turn's
/// text, in the order added.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, media_type, data), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (the last turn is not a user turn; empty data). A media type
/// or an image the provider cannot take is reported by the generation, as
/// `PROVD_INVALID_REQUEST`. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_image_base64(
    request: *mut provd_request,
    media_type: *const c_char,
    media_type_len: usize,
    data: *const c_char,
    data_len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let (media_type, data) = unsafe {
            (
                args::text(media_type, media_type_len, "media_type")?,
                args::text(data, data_len, "data")?,
            )
        };
        not_empty(data, "data")?;
        last_turn(r, Role::User, "an image")?
            .images
            .push(Image::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            });
        Ok(())
    })
}

/// Adds an image by URL (`url_len` bytes of UTF-8 at `url`, an `https://` URL) to the
/// last turn, which must be a user turn. The daemon never fetches it: a provider
/// whose API takes only bytes answers the generation with `PROVD_INVALID_REQUEST`.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, url), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (the last turn is not a user turn; an empty URL).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_image_url(
    request: *mut provd_request,
    url: *const c_char,
    url_len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let url = not_empty(unsafe { args::text(url, url_len, "url") }?, "url")?;
        last_turn(r, Role::User, "an image")?
            .images
            .push(Image::Url {
                url: url.to_owned(),
            });
        Ok(())
    })
}

/// Adds a tool call to the last turn, which must be an assistant turn
/// (`provd_request_add_message` with `PROVD_ROLE_ASSISTANT`, its text possibly empty):
/// to send back a turn in which the model called tools. `id`, `name` and `arguments`
/// (a JSON object as text) are as the done result gave them (`provd_tool_call`); each is pointer +
/// length UTF-8. Calls keep the order added. Its tool's result follows in a turn of its
/// own (`provd_request_add_tool_result`). `provd_request_add_turn_from_done` adds the
/// whole turn from a done result in one call.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, id, name, arguments), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (the last turn is not an assistant turn; an empty id or
/// name; arguments that are not a JSON object). Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_tool_call(
    request: *mut provd_request,
    id: *const c_char,
    id_len: usize,
    name: *const c_char,
    name_len: usize,
    arguments: *const c_char,
    arguments_len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let (id, name, arguments) = unsafe {
            (
                args::text(id, id_len, "id")?,
                args::text(name, name_len, "name")?,
                args::text(arguments, arguments_len, "arguments")?,
            )
        };
        not_empty(id, "id")?;
        not_empty(name, "name")?;
        json_object(arguments, "arguments", "a JSON object")?;
        last_turn(r, Role::Assistant, "a tool call")?
            .tool_calls
            .push(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments: arguments.to_owned(),
            });
        Ok(())
    })
}

/// Sets the provider state of the last turn, which must be an assistant turn: the JSON
/// text `provd_done_provider_state_json` gave for it, passed back unchanged (`len` bytes
/// of UTF-8 at `json`). NULL removes it. The daemon gives it to a provider of the type
/// that made it and drops it for any other.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`, `PROVD_INVALID_ARGUMENT`
/// (the last turn is not an assistant turn; not JSON). Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_provider_state_json(
    request: *mut provd_request,
    json: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let state: Option<serde_json::Value> = unsafe { json_arg(json, len, "json", "JSON text") }?;
        last_turn(r, Role::Assistant, "a provider state")?.provider_state = state;
        Ok(())
    })
}

/// Appends the assistant turn a generation produced, to continue the conversation: its
/// tool calls and provider state from `done`, and its text from `content` (`len` bytes of
/// UTF-8, the chunks' text joined; NULL for none, as when the model only called tools).
/// The same as `provd_request_add_message` (assistant), `provd_request_add_tool_call` for
/// each call and `provd_request_set_provider_state_json`. `done` is only read.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, done), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request; `done` may be read by other threads meanwhile.
#[no_mangle]
pub extern "C" fn provd_request_add_turn_from_done(
    request: *mut provd_request,
    done: *const provd_done,
    content: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header requires `done` to be NULL or a live done result, and the
        // rule for pointer + length arguments.
        let (done, content) = unsafe {
            (
                args::handle(done, "done")?,
                args::opt_text(content, len, "content")?,
            )
        };
        r.messages.push(Message {
            role: Role::Assistant,
            content: content.unwrap_or_default().to_owned(),
            tool_calls: done.wire_tool_calls.clone(),
            provider_state: done.provider_state.clone(),
            ..Message::default()
        });
        Ok(())
    })
}

/// Appends a tool turn: the result of the call `tool_call_id` (`id_len` bytes of UTF-8,
/// the id from the done result), `content` (`len` bytes of UTF-8; the tool's output, or
/// when `is_error` is true, what went wrong). The turn follows the assistant turn that
/// made the call; results of parallel calls follow one another.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, tool_call_id, content), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (an empty id). A result whose id no earlier call has is
/// reported by the generation, as `PROVD_INVALID_REQUEST`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_tool_result(
    request: *mut provd_request,
    tool_call_id: *const c_char,
    id_len: usize,
    content: *const c_char,
    len: usize,
    is_error: bool,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let (id, content) = unsafe {
            (
                args::text(tool_call_id, id_len, "tool_call_id")?,
                args::text(content, len, "content")?,
            )
        };
        not_empty(id, "tool_call_id")?;
        let mut turn = Message::tool_result(id, content);
        turn.is_error = is_error;
        r.messages.push(turn);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_request() -> *mut provd_request {
        let mut r = std::ptr::null_mut();
        assert_eq!(
            provd_request_new(&mut r, std::ptr::null_mut()),
            provd_status::PROVD_OK
        );
        r
    }

    fn inner(r: *mut provd_request) -> &'static GenerateRequest {
        // SAFETY: test requests are live until freed at the end of each test.
        unsafe { &(*r).inner }
    }

    #[test]
    fn setters_copy_fields_and_null_unsets() {
        let r = new_request();
        let none = std::ptr::null_mut();
        let s = |v: &str| (v.as_ptr().cast::<c_char>(), v.len());
        let (p, n) = s("hello");
        assert_eq!(
            provd_request_set_prompt(r, p, n, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s("mock");
        assert_eq!(
            provd_request_set_provider(r, p, n, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s("be brief");
        assert_eq!(
            provd_request_add_message(r, provd_role::PROVD_ROLE_USER as u32, p, n, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            provd_request_set_max_tokens(r, 7, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            provd_request_set_temperature(r, 0.5, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            provd_request_set_top_p(r, -1.0, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s("END");
        assert_eq!(
            provd_request_add_stop(r, p, n, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s(r#"{"mock": {"chunks": 3}}"#);
        assert_eq!(
            provd_request_set_additional_params_json(r, p, n, none),
            provd_status::PROVD_OK
        );
        let req = inner(r);
        assert_eq!(req.prompt.as_deref(), Some("hello"));
        assert_eq!(req.provider.as_deref(), Some("mock"));
        assert_eq!(req.messages.len(), 1);
        assert_eq!(
            (req.max_tokens, req.temperature, req.top_p),
            (Some(7), Some(0.5), None)
        );
        assert_eq!(req.stop, vec!["END".to_owned()]);
        assert_eq!(req.additional_params["mock"]["chunks"], 3);
        assert!(req.stream);

        assert_eq!(
            provd_request_set_provider(r, std::ptr::null(), 0, none),
            provd_status::PROVD_OK
        );
        assert_eq!(inner(r).provider, None);
        provd_request_free(r);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_request_unchanged() {
        let r = new_request();
        let mut err = std::ptr::null_mut();
        let bad_json = "[1, 2]";
        let status = provd_request_set_additional_params_json(
            r,
            bad_json.as_ptr().cast(),
            bad_json.len(),
            &mut err,
        );
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        // SAFETY: `err` is a fresh error object, taken once.
        let e = unsafe { args::take(err) }.unwrap();
        assert!(e
            .message
            .as_str()
            .starts_with("provd_request_set_additional_params_json: "));
        assert!(e.message.as_str().contains("must be a JSON object"));
        assert!(inner(r).additional_params.is_empty());

        let none = std::ptr::null_mut();
        assert_eq!(
            provd_request_set_temperature(r, f64::NAN, none),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_request_add_message(r, 9, c"x".as_ptr(), 1, none),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_request_add_stop(r, std::ptr::null(), 0, none),
            provd_status::PROVD_NULL_ARGUMENT
        );
        assert_eq!(
            provd_request_set_prompt(std::ptr::null_mut(), c"x".as_ptr(), 1, none),
            provd_status::PROVD_NULL_ARGUMENT
        );
        assert!(inner(r).messages.is_empty() && inner(r).stop.is_empty());
        provd_request_free(r);
    }

    /// Calls a setter with `text` as pointer + length and returns its status and the
    /// message of its error, if any.
    fn call(
        f: impl FnOnce(*const c_char, usize, *mut *mut provd_error) -> provd_status,
        text: &str,
    ) -> (provd_status, String) {
        let mut err = std::ptr::null_mut();
        let status = f(text.as_ptr().cast(), text.len(), &mut err);
        // SAFETY: `err` is NULL or a fresh error object, taken once.
        let message =
            unsafe { args::take(err) }.map_or(String::new(), |e| e.message.as_str().to_owned());
        (status, message)
    }

    #[test]
    fn tools_choice_and_formats_are_parsed_and_malformed_json_is_refused_by_name() {
        let r = new_request();
        let tools = r#"[{"name": "get_weather", "description": "Weather", "parameters":
            {"type": "object", "properties": {"city": {"type": "string"}}}}, {"name": "now"}]"#;
        let ok = call(|p, n, e| provd_request_set_tools_json(r, p, n, e), tools);
        assert_eq!(ok, (provd_status::PROVD_OK, String::new()));
        assert_eq!(inner(r).tools.len(), 2);
        assert_eq!(
            inner(r).tools[0].parameters.as_ref().unwrap()["type"],
            "object"
        );
        assert_eq!(inner(r).tools[1].description, None);

        for bad in [
            "{\"name\": \"x\"}",
            "[{\"description\": \"no name\"}]",
            "[1",
            "[{\"name\": \"\"}]",
        ] {
            let (status, message) = call(|p, n, e| provd_request_set_tools_json(r, p, n, e), bad);
            assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT, "{bad}");
            assert!(
                message.starts_with("provd_request_set_tools_json: "),
                "{message}"
            );
            assert_eq!(
                inner(r).tools.len(),
                2,
                "a refused list leaves the tools as they were"
            );
        }

        for (choice, expected) in [
            ("auto", ToolChoice::Auto),
            ("none", ToolChoice::None),
            ("required", ToolChoice::Required),
            ("get_weather", ToolChoice::Tool("get_weather".into())),
        ] {
            let ok = call(|p, n, e| provd_request_set_tool_choice(r, p, n, e), choice);
            assert_eq!(ok.0, provd_status::PROVD_OK);
            assert_eq!(inner(r).tool_choice, Some(expected));
        }
        let (status, _) = call(|p, n, e| provd_request_set_tool_choice(r, p, n, e), "");
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);

        let json = r#"{"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": true}"#;
        let ok = call(
            |p, n, e| provd_request_set_response_format_json(r, p, n, e),
            json,
        );
        assert_eq!(ok.0, provd_status::PROVD_OK);
        assert!(matches!(
            &inner(r).response_format,
            Some(ResponseFormat::JsonSchema { name, strict: true, .. }) if name == "city"
        ));
        let (status, message) = call(
            |p, n, e| provd_request_set_response_format_json(r, p, n, e),
            r#"{"type": "xml"}"#,
        );
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(message.contains("must be a response format"), "{message}");

        assert_eq!(
            provd_request_set_response_json_object(r, std::ptr::null_mut()),
            provd_status::PROVD_OK
        );
        assert_eq!(inner(r).response_format, Some(ResponseFormat::JsonObject));
        let name = "answer";
        let (status, message) = call(
            |p, n, e| {
                provd_request_set_response_json_schema(
                    r,
                    name.as_ptr().cast(),
                    name.len(),
                    p,
                    n,
                    false,
                    e,
                )
            },
            "[]",
        );
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(message.contains("must be a JSON object"), "{message}");
        assert_eq!(inner(r).response_format, Some(ResponseFormat::JsonObject));
        let ok = call(
            |p, n, e| {
                provd_request_set_response_json_schema(
                    r,
                    name.as_ptr().cast(),
                    name.len(),
                    p,
                    n,
                    false,
                    e,
                )
            },
            r#"{"type": "object"}"#,
        );
        assert_eq!(ok.0, provd_status::PROVD_OK);
        assert!(matches!(
            &inner(r).response_format,
            Some(ResponseFormat::JsonSchema { strict: false, .. })
        ));
        provd_request_free(r);
    }

    #[test]
    fn reasoning_is_set_from_an_effort_number_and_cleared() {
        let r = new_request();
        let none = std::ptr::null_mut();
        assert_eq!(
            provd_request_set_reasoning(r, provd_effort::PROVD_EFFORT_HIGH as u32, 0, true, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            inner(r).reasoning,
            Some(Reasoning {
                effort: Some(Effort::High),
                budget_tokens: None,
                show: true
            })
        );
        assert_eq!(
            provd_request_set_reasoning(r, 0, 2048, false, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            inner(r).reasoning.as_ref().unwrap().budget_tokens,
            Some(2048)
        );
        assert_eq!(
            provd_request_set_reasoning(r, 5, 0, false, none),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_request_clear_reasoning(r, none),
            provd_status::PROVD_OK
        );
        assert_eq!(inner(r).reasoning, None);
        provd_request_free(r);
    }

    #[test]
    fn images_calls_and_state_attach_to_the_last_turn_of_the_right_role() {
        let r = new_request();
        let none = std::ptr::null_mut();
        let png = "image/png";
        let (status, message) = call(
            |p, n, e| provd_request_add_image_base64(r, png.as_ptr().cast(), png.len(), p, n, e),
            "iVBORw0KGgo=",
        );
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(message.contains("no messages yet"), "{message}");

        let text = "What is this?";
        provd_request_add_message(
            r,
            provd_role::PROVD_ROLE_USER as u32,
            text.as_ptr().cast(),
            text.len(),
            none,
        );
        let ok = call(
            |p, n, e| provd_request_add_image_base64(r, png.as_ptr().cast(), png.len(), p, n, e),
            "iVBORw0KGgo=",
        );
        assert_eq!(ok.0, provd_status::PROVD_OK);
        let ok = call(
            |p, n, e| provd_request_add_image_url(r, p, n, e),
            "https://example.com/a.png",
        );
        assert_eq!(ok.0, provd_status::PROVD_OK);
        assert_eq!(inner(r).messages[0].images.len(), 2);

        let (id, name) = ("call_1", "get_weather");
        let add_call = |arguments: &str| {
            call(
                |p, n, e| {
                    provd_request_add_tool_call(
                        r,
                        id.as_ptr().cast(),
                        id.len(),
                        name.as_ptr().cast(),
                        name.len(),
                        p,
                        n,
                        e,
                    )
                },
                arguments,
            )
        };
        let (status, message) = add_call("{}");
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(
            message.contains("must be a `assistant` turn, but the last turn is a `user` turn"),
            "{message}"
        );
        provd_request_add_message(
            r,
            provd_role::PROVD_ROLE_ASSISTANT as u32,
            c"".as_ptr(),
            0,
            none,
        );
        let (status, message) = add_call("{\"city\": ");
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(
            message.contains("`arguments` is not valid JSON"),
            "{message}"
        );
        let (status, message) = add_call("[1]");
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(message.contains("must be a JSON object"), "{message}");
        assert_eq!(add_call("{\"city\": \"Paris\"}").0, provd_status::PROVD_OK);
        let ok = call(
            |p, n, e| provd_request_set_provider_state_json(r, p, n, e),
            r#"{"type": "mock", "state": {}}"#,
        );
        assert_eq!(ok.0, provd_status::PROVD_OK);
        let result = "18 degrees";
        assert_eq!(
            provd_request_add_tool_result(
                r,
                id.as_ptr().cast(),
                id.len(),
                result.as_ptr().cast(),
                result.len(),
                true,
                none
            ),
            provd_status::PROVD_OK
        );
        let turns = &inner(r).messages;
        assert_eq!(turns[1].tool_calls[0].arguments, "{\"city\": \"Paris\"}");
        assert_eq!(turns[1].provider_state.as_ref().unwrap()["type"], "mock");
        assert_eq!(turns[2].role, Role::Tool);
        assert_eq!(
            (turns[2].tool_call_id.as_deref(), turns[2].is_error),
            (Some("call_1"), true)
        );
        provd_request_free(r);
    }

    #[test]
    fn a_turn_from_done_carries_its_calls_and_state() {
        let r = new_request();
        let done = provd_done::new(&::provd_client::GenerateDone {
            tool_calls: vec![ToolCall {
                id: "c0".into(),
                name: "now".into(),
                arguments: "{}".into(),
            }],
            provider_state: Some(serde_json::json!({"type": "mock", "state": {"signature": "s"}})),
            ..Default::default()
        });
        let mut err = std::ptr::null_mut();
        assert_eq!(
            provd_request_add_turn_from_done(r, &done, std::ptr::null(), 0, &mut err),
            provd_status::PROVD_OK
        );
        let turn = &inner(r).messages[0];
        assert_eq!((turn.role, turn.content.as_str()), (Role::Assistant, ""));
        assert_eq!(turn.tool_calls[0].id, "c0");
        assert_eq!(
            turn.provider_state.as_ref().unwrap()["state"]["signature"],
            "s"
        );
        assert_eq!(
            provd_request_add_turn_from_done(r, std::ptr::null(), std::ptr::null(), 0, &mut err),
            provd_status::PROVD_NULL_ARGUMENT
        );
        // SAFETY: a fresh error object, taken once.
        let e = unsafe { args::take(err) }.unwrap();
        assert_eq!(
            e.message.as_str(),
            "provd_request_add_turn_from_done: argument `done` is NULL"
        );
        provd_request_free(r);
    }
}
