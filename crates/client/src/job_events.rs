//! A job's events as they happen: `GET /v1/jobs/{id}/events` (Server-Sent Events,
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html>).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use byok_core::JobView;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures::Stream;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::provider_ids::{self, Shape};
use crate::{Client, ClientError};

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// One event of a job's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// Where the stream stands: pass the last one to [`Client::job_events`] to resume.
    pub id: String,
    /// `job.queued`, `job.throttled`, `job.running`, `job.progress`, `job.succeeded`,
    /// `job.failed`, `job.cancelled`.
    pub event_type: String,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The history entry's message (history events only).
    pub message: Option<String>,
    /// The job when the stream read it.
    pub job: JobView,
}

/// The events of a job, oldest first; ends after the events of a final status (or when
/// the server ends the stream, after at most an hour: resume from the last
/// [`JobEvent::id`]).
pub struct JobEvents {
    inner: Pin<Box<dyn Stream<Item = Result<JobEvent, ClientError>> + Send>>,
}

impl fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobEvents").finish_non_exhaustive()
    }
}

impl Stream for JobEvents {
    type Item = Result<JobEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The `data` of an event.
#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    event_type: String,
    timestamp: DateTime<Utc>,
    #[serde(default)]
    message: Option<String>,
    data: Value,
}

/// The reader of a `text/event-stream` body: whole lines out of chunks, events out of
/// lines (the fields `id`, `event` and `data`; comments and other fields are skipped).
struct Parser {
    response: Option<reqwest::Response>,
    buffer: BytesMut,
    id: String,
    data: String,
    ready: VecDeque<Result<JobEvent, ClientError>>,
}

impl Parser {
    /// Takes the complete lines in the buffer.
    fn lines(&mut self) {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end + 1);
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => value.clone_into(&mut self.id),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
    }

    /// The event gathered since the last blank line, if it has data.
    fn dispatch(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.data);
        let event = serde_json::from_str::<Payload>(&data).and_then(|payload| {
            let job = provider_ids::decode_value(payload.data, Shape::Job)?;
            Ok(JobEvent {
                id: self.id.clone(),
                event_type: payload.event_type,
                timestamp: payload.timestamp,
                message: payload.message,
                job,
            })
        });
        self.ready
            .push_back(event.map_err(|source| ClientError::Decode {
                status: StatusCode::OK,
                request_id: None,
                source,
            }));
    }
}

impl Client {
    /// Follows a job's events (`GET /v1/jobs/{id}/events`), after `last_event_id` when
    /// resuming. A job that is final with nothing after `last_event_id` is an empty
    /// stream. Opening is retried like a read; a stream cut in the middle ends with an
    /// error item, after which a new call from the last event's id loses nothing. The
    /// server sends a keep-alive every 15 s, so the client's `timeout` (which bounds each
    /// read here) must be longer than that.
    pub async fn job_events(
        &self,
        id: Uuid,
        last_event_id: Option<&str>,
    ) -> Result<JobEvents, ClientError> {
        let id = id.to_string();
        let mut call = self
            .call(Method::GET, &["v1", "jobs", &id, "events"])
            .streaming();
        if let Some(last) = last_event_id {
            let value = HeaderValue::from_str(last).map_err(|_| {
                ClientError::Config("a Last-Event-ID is an event's id as sent".to_owned())
            })?;
            call = call.header(LAST_EVENT_ID, value);
        }
        let response = call.send().await?;
        let parser = Parser {
            // 204: nothing follows.
            response: (response.status() != StatusCode::NO_CONTENT).then_some(response),
            buffer: BytesMut::new(),
            id: String::new(),
            data: String::new(),
            ready: VecDeque::new(),
        };
        let events = futures::stream::unfold(parser, |mut parser| async move {
            loop {
                if let Some(event) = parser.ready.pop_front() {
                    return Some((event, parser));
                }
                let response = parser.response.as_mut()?;
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        parser.buffer.extend_from_slice(&chunk);
                        parser.lines();
                    }
                    Ok(None) => {
                        // The body ended: an event not closed by a blank line is dropped,
                        // as the specification says.
                        parser.response = None;
                    }
                    Err(e) => {
                        parser.response = None;
                        return Some((Err(ClientError::Transport(e)), parser));
                    }
                }
            }
        });
        Ok(JobEvents {
            inner: Box::pin(events),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> Parser {
        Parser {
            response: None,
            buffer: BytesMut::new(),
            id: String::new(),
            data: String::new(),
            ready: VecDeque::new(),
        }
    }

    #[test]
    fn events_are_cut_at_blank_lines_and_comments_are_skipped() {
        let job = serde_json::json!({
            "id": "01890a5d-ac96-774b-bcce-b302099a8057",
            "user_id": "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
            "provider": "runway", "model": "gen4.5", "status": "running", "progress": 0.5,
            "attempts": 1, "provider_job_id": "task-1",
            "request": { "user_id": "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
                         "provider": "runway", "model": "gen4.5" },
            "result": null, "error": null, "metadata": {},
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:01Z",
            "started_at": "2026-01-01T00:00:01Z", "finished_at": null,
        });
        let payload = serde_json::json!({
            "type": "job.progress", "timestamp": "2026-01-01T00:00:01Z", "data": job,
        });
        let mut p = parser();
        let text = format!(": keep-alive\n\nid: 3.p500\r\nevent: job.progress\ndata: {payload}\n");
        let (first, second) = text.split_at(20);
        p.buffer.extend_from_slice(first.as_bytes());
        p.lines();
        assert!(p.ready.is_empty());
        p.buffer.extend_from_slice(second.as_bytes());
        p.lines();
        assert!(p.ready.is_empty(), "not dispatched before the blank line");
        p.buffer.extend_from_slice(b"\n");
        p.lines();
        let event = p.ready.pop_front().unwrap().unwrap();
        assert_eq!(event.id, "3.p500");
        assert_eq!(event.event_type, "job.progress");
        assert_eq!(event.job.progress, Some(0.5));
        assert_eq!(event.message, None);
    }
}
