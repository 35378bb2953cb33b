//! Requests the tests send and the ways they read a generation back: to its text (it
//! must succeed), to its error (it must fail), or to whatever it ended with.

use provd_client::{
    Chunk, Client, GenerateDone, GenerateEvent, GenerateRequest, Generation, WireError,
};

/// The parameters of [`weather_tool`]: a required city name.
pub fn weather_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// The tool the tool tests offer: `get_weather`, taking a city.
pub fn weather_tool() -> provd_client::Tool {
    provd_client::Tool::new("get_weather", "The weather in a city", weather_schema())
}

/// A request to the mock provider with these options (`additional_params.mock`; the
/// names are documented in `daemon/src/provider/mock.rs`).
pub fn mock_request(prompt: &str, options: serde_json::Value) -> GenerateRequest {
    let mut request = GenerateRequest::prompt(prompt);
    request.additional_params.insert("mock".into(), options);
    request
}

/// A mock generation of `chunks` numbered chunks (`"0 "`, `"1 "`, …) `delay_ms` apart,
/// for the three-word prompt "count for me".
pub fn numbered(chunks: u32, delay_ms: u32) -> GenerateRequest {
    mock_request(
        "count for me",
        serde_json::json!({"numbered": true, "chunks": chunks, "chunk_delay_ms": delay_ms}),
    )
}

/// Runs a generation that must succeed and returns its text and done.
pub async fn generation_text(client: &Client, request: GenerateRequest) -> (String, GenerateDone) {
    client
        .generate(request)
        .await
        .expect("the generation starts")
        .collect_text()
        .await
        .expect("the generation succeeds")
}

/// Runs a generation that must fail and returns its error as the daemon sent it.
pub async fn generation_error(client: &Client, request: GenerateRequest) -> WireError {
    client
        .generate(request)
        .await
        .expect("the generation starts")
        .collect_text()
        .await
        .expect_err("the generation fails")
        .to_wire()
}

/// The text of [`numbered`]`(chunks, _)`.
pub fn numbered_text(chunks: u32) -> String {
    (0..chunks).map(|i| format!("{i} ")).collect()
}

/// A generation read to its end: the text of each chunk in order, then its done or its
/// error as the daemon sent it.
pub type Outcome = (Vec<String>, Result<GenerateDone, WireError>);

/// Starts a generation (which must start) and reads it to its end, success or failure:
/// what a test uses when the chunks before an error matter, or when either end is
/// expected.
pub async fn generation_outcome(client: &Client, request: GenerateRequest) -> Outcome {
    let (chunks, end) = generation_chunks(client, request).await;
    (chunks.into_iter().map(|c| c.text).collect(), end)
}

/// Reads a started generation to its end (see [`generation_outcome`]).
pub async fn drain_generation(generation: &mut Generation) -> Outcome {
    let (chunks, end) = drain_chunks(generation).await;
    (chunks.into_iter().map(|c| c.text).collect(), end)
}

/// [`generation_outcome`] with the whole chunks (index, model), not only their texts.
pub async fn generation_chunks(
    client: &Client,
    request: GenerateRequest,
) -> (Vec<Chunk>, Result<GenerateDone, WireError>) {
    let mut generation = client
        .generate(request)
        .await
        .expect("the generation starts");
    drain_chunks(&mut generation).await
}

/// Reads a started generation to its end, keeping the whole chunks. Panics if the events
/// stop without a done or an error.
pub async fn drain_chunks(
    generation: &mut Generation,
) -> (Vec<Chunk>, Result<GenerateDone, WireError>) {
    let mut chunks = Vec::new();
    while let Some(event) = generation.next().await {
        match event {
            Ok(GenerateEvent::Chunk(c)) => chunks.push(c),
            Ok(GenerateEvent::Done(d)) => return (chunks, Ok(d)),
            Err(e) => return (chunks, Err(e.to_wire())),
        }
    }
    panic!("the generation ended without done or error");
}
