//! One chunk of a generation as C reads it: text, a piece of a tool call, or a piece of
//! the model's reasoning.
//!
//! A chunk is lent, never given: `provd_stream_chunk` fills a [`provd_chunk`] whose
//! strings point into the stream (valid until the next call on it), and
//! `provd_client_generate_events` passes one to its callback (valid until the callback
//! returns). So it is a plain C struct of views, like `provd_model_info`, with nothing to
//! free. The older text-only paths (`provd_stream_next`, `provd_chunk_callback`) still
//! see every chunk: a tool-call or reasoning chunk reaches them as empty text.

use ::provd_client::Chunk;

use crate::{provd_str, NulString};

/// What a chunk carries (`provd_chunk.kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum provd_chunk_kind {
    /// Generated text, in `text`.
    PROVD_CHUNK_TEXT = 0,
    /// A piece of a tool call, in the `tool_call_*` fields. Sent only to requests with
    /// tools (`provd_request_set_tools_json`).
    PROVD_CHUNK_TOOL_CALL = 1,
    /// A piece of the model's reasoning, in `reasoning`. Sent only to requests that ask
    /// to see it (`provd_request_set_reasoning` with `show`).
    PROVD_CHUNK_REASONING = 2,
}

/// One chunk of a generation, as views into the object that lent it (see
/// `provd_stream_chunk` and `provd_chunk_event_callback` for how long they live).
///
/// A tool call arrives in pieces that share `tool_call_index`: the first piece of a call
/// carries its `tool_call_id` and `tool_call_name`, the others add text to
/// `tool_call_arguments`. Providers that send whole calls send one piece each. The done
/// result (`provd_done_tool_calls_get`) has every call assembled, so a caller that only
/// needs the calls can ignore the pieces.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_chunk {
    /// What this chunk carries.
    pub kind: provd_chunk_kind,
    /// 0, 1, 2, … over all the chunks of the generation, whatever their kind.
    pub index: u32,
    /// The text of a `PROVD_CHUNK_TEXT` chunk; `""` (not NULL) for the other kinds.
    pub text: provd_str,
    /// The reasoning text of a `PROVD_CHUNK_REASONING` chunk; absent (NULL) otherwise.
    pub reasoning: provd_str,
    /// Which call a `PROVD_CHUNK_TOOL_CALL` piece belongs to, 0, 1, … in the order of the
    /// calls; 0 for the other kinds.
    pub tool_call_index: u32,
    /// The call's id, on the first piece of a call; absent (NULL) otherwise.
    pub tool_call_id: provd_str,
    /// The tool's name, on the first piece of a call; absent (NULL) otherwise.
    pub tool_call_name: provd_str,
    /// A fragment of the call's arguments (JSON text once all fragments are joined);
    /// `""` for a piece without one; absent (NULL) for the other kinds.
    pub tool_call_arguments: provd_str,
}

/// A chunk's strings, owned, from which [`provd_chunk`] views are lent.
#[derive(Debug, Default)]
pub(crate) struct OwnedChunk {
    index: u32,
    text: NulString,
    reasoning: Option<NulString>,
    tool_call: Option<ToolPiece>,
}

#[derive(Debug)]
struct ToolPiece {
    index: u32,
    id: Option<NulString>,
    name: Option<NulString>,
    arguments: NulString,
}

impl OwnedChunk {
    pub(crate) fn new(chunk: Chunk) -> OwnedChunk {
        OwnedChunk {
            index: chunk.index,
            text: NulString::new(chunk.text),
            reasoning: chunk.reasoning.map(NulString::new),
            tool_call: chunk.tool_call.map(|piece| ToolPiece {
                index: piece.index,
                id: piece.id.map(NulString::new),
                name: piece.name.map(NulString::new),
                arguments: NulString::new(piece.arguments),
            }),
        }
    }

    /// The chunk's text, as the text-only paths lend it.
    pub(crate) fn text(&self) -> provd_str {
        self.text.lend()
    }

    /// Views of every field; valid while `self` is neither dropped nor changed.
    pub(crate) fn view(&self) -> provd_chunk {
        let kind = if self.tool_call.is_some() {
            provd_chunk_kind::PROVD_CHUNK_TOOL_CALL
        } else if self.reasoning.is_some() {
            provd_chunk_kind::PROVD_CHUNK_REASONING
        } else {
            provd_chunk_kind::PROVD_CHUNK_TEXT
        };
        let piece = self.tool_call.as_ref();
        provd_chunk {
            kind,
            index: self.index,
            text: self.text.lend(),
            reasoning: NulString::lend_opt(&self.reasoning),
            tool_call_index: piece.map_or(0, |p| p.index),
            tool_call_id: piece.map_or(provd_str::ABSENT, |p| NulString::lend_opt(&p.id)),
            tool_call_name: piece.map_or(provd_str::ABSENT, |p| NulString::lend_opt(&p.name)),
            tool_call_arguments: piece.map_or(provd_str::ABSENT, |p| p.arguments.lend()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::provd_client::ToolCallDelta;

    fn chunk(text: &str) -> Chunk {
        Chunk {
            id: 1,
            index: 4,
            text: text.into(),
            model: "m".into(),
            created_at: 0,
            tool_call: None,
            reasoning: None,
        }
    }

    fn lent(s: provd_str) -> Option<&'static str> {
        // SAFETY: the views point into chunks the tests keep alive (leaked below).
        (!s.data.is_null()).then(|| {
            unsafe { std::str::from_utf8(std::slice::from_raw_parts(s.data.cast(), s.len)) }
                .unwrap()
        })
    }

    #[test]
    fn each_kind_fills_its_own_fields_and_leaves_the_others_absent() {
        let text = Box::leak(Box::new(OwnedChunk::new(chunk("hi")))).view();
        assert_eq!(text.kind, provd_chunk_kind::PROVD_CHUNK_TEXT);
        assert_eq!((text.index, lent(text.text)), (4, Some("hi")));
        assert_eq!(lent(text.reasoning), None);
        assert_eq!(lent(text.tool_call_arguments), None);

        let mut c = chunk("");
        c.tool_call = Some(ToolCallDelta {
            index: 1,
            id: Some("call_9".into()),
            name: Some("get_weather".into()),
            arguments: "{\"ci".into(),
        });
        let piece = Box::leak(Box::new(OwnedChunk::new(c))).view();
        assert_eq!(piece.kind, provd_chunk_kind::PROVD_CHUNK_TOOL_CALL);
        assert_eq!(piece.tool_call_index, 1);
        assert_eq!(lent(piece.tool_call_id), Some("call_9"));
        assert_eq!(lent(piece.tool_call_name), Some("get_weather"));
        assert_eq!(lent(piece.tool_call_arguments), Some("{\"ci"));
        assert_eq!(lent(piece.text), Some(""));

        let mut c = chunk("");
        c.reasoning = Some("Thinking".into());
        let thought = Box::leak(Box::new(OwnedChunk::new(c))).view();
        assert_eq!(thought.kind, provd_chunk_kind::PROVD_CHUNK_REASONING);
        assert_eq!(lent(thought.reasoning), Some("Thinking"));
        assert_eq!(lent(thought.tool_call_name), None);
    }
}
