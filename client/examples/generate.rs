//! The example of `client/README.md`: stream one generation from a running provd.
//!
//! `cargo run -p provd-client --example generate -- "Say hi"` (with `provd serve` running;
//! `PROVD_SOCKET` picks another socket).

use provd_client::{default_socket_path, Client, ClientError, GenerateEvent, GenerateRequest};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "Say hi".into());
    let client = Client::connect(&default_socket_path()).await?;
    let mut request = GenerateRequest::prompt(prompt);
    request.max_tokens = Some(200);
    let mut generation = client.generate(request).await?;
    while let Some(event) = generation.next().await {
        match event? {
            GenerateEvent::Chunk(chunk) => print!("{}", chunk.text),
            GenerateEvent::Done(done) => {
                println!();
                eprintln!("[{}/{}] {:?}", done.provider, done.model, done.usage);
            }
        }
    }
    Ok(())
}
