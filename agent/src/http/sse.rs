//! Server-sent events (`text/event-stream`), the framing of every streamed LLM response.
//!
//! Parsing borrows from the body: an event's data is a slice of it unless the event has
//! several `data:` lines (then they are joined), so walking a long stream allocates nothing
//! per chunk in the common case.

use std::borrow::Cow;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field (`None` means the default, "message").
    pub event: Option<&'a str>,
    /// The `data:` lines, joined with `\n`.
    pub data: Cow<'a, str>,
    /// Offset in the body just after the event's last line (to date it with the body's
    /// arrival times).
    pub end: usize,
}

/// Iterates over the complete events of an event-stream body. A last event without its
/// terminating blank line (a cut stream) is still returned.
pub struct SseEvents<'a> {
    body: &'a str,
    pos: usize,
}

/// The events of `body`. Bytes that are not UTF-8 end the stream there.
pub fn events(body: &[u8]) -> SseEvents<'_> {
    let body = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or(""),
    };
    SseEvents { body, pos: 0 }
}

impl<'a> Iterator for SseEvents<'a> {
    type Item = SseEvent<'a>;

    fn next(&mut self) -> Option<SseEvent<'a>> {
        let mut event = None;
        let mut data: Option<Cow<'a, str>> = None;
        while self.pos < self.body.len() {
            let rest = &self.body[self.pos..];
            let (line, used) = match rest.find(['\n', '\r']) {
                Some(i) => {
                    let crlf = rest[i..].starts_with("\r\n");
                    (&rest[..i], i + if crlf { 2 } else { 1 })
                }
                None => (rest, rest.len()),
            };
            self.pos += used;
            if line.is_empty() {
                if data.is_some() || event.is_some() {
                    return Some(finish(event, data, self.pos));
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    data = Some(match data.take() {
                        None => Cow::Borrowed(value),
                        Some(previous) => Cow::Owned(format!("{previous}\n{value}")),
                    })
                }
                "event" => event = Some(value),
                // Comments (": keep-alive"), id and retry carry nothing to meter.
                _ => {}
            }
        }
        (data.is_some() || event.is_some()).then(|| finish(event, data, self.pos))
    }
}

fn finish<'a>(event: Option<&'a str>, data: Option<Cow<'a, str>>, end: usize) -> SseEvent<'a> {
    SseEvent {
        event,
        data: data.unwrap_or(Cow::Borrowed("")),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_with_names_comments_and_both_line_ends() {
        let body = b": ping\r\n\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let got: Vec<_> = events(body)
            .map(|e| (e.event, e.data.into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("message_start"), "{\"a\":1}".to_string()),
                (None, "one\ntwo".to_string()),
                (None, "[DONE]".to_string()),
            ]
        );
    }

    #[test]
    fn single_line_events_borrow_from_the_body() {
        let body = b"data: {\"x\":2}\n\n";
        let event = events(body).next().unwrap();
        assert!(matches!(event.data, Cow::Borrowed(_)));
        assert_eq!(event.end, body.len());
    }

    #[test]
    fn a_cut_stream_still_yields_its_last_event_and_invalid_utf8_ends_it() {
        let got: Vec<_> = events(b"data: a\n\ndata: b")
            .map(|e| e.data.into_owned())
            .collect();
        assert_eq!(got, vec!["a", "b"]);
        let got: Vec<_> = events(b"data: a\n\ndata: \xff\n\n")
            .map(|e| e.data.into_owned())
            .collect();
        assert_eq!(got, vec!["a", ""]);
    }
}
