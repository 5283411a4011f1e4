//! The HTTP client of the command line: one hub URL, an optional token, JSON in and out, and
//! errors turned into one line and an exit code.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::{CliError, Exit};

/// A running hub, as the command line reaches it.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// One Server-Sent Event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `event:` (empty for the default `message`).
    pub(crate) event: String,
    /// `data:` lines, joined by newlines.
    pub(crate) data: String,
}

impl Client {
    /// A client of the hub at `url` (`http://host:port`).
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(CliError::usage(format!(
                "--url {url}: expected http://host:port"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|err| CliError::failed(format!("cannot build an HTTP client: {err}")))?;
        Ok(Client { base, token, http })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and reads its JSON answer; an error answer becomes a [`CliError`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|err| CliError::failed(format!("reading the hub's answer: {err}")))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status.as_u16(), &body))
    }

    /// `GET path` → JSON.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body → JSON.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `DELETE path` → JSON.
    pub(crate) async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// The project a user names by id, slug or display name.
    pub(crate) async fn project(&self, name: &str) -> Result<Value, CliError> {
        match self.get(&format!("/api/projects/{}", encode(name))).await {
            Ok(project) => return Ok(project),
            Err(err) if err.code != Exit::NotFound => return Err(err),
            Err(_) => {}
        }
        let projects = self.get("/api/projects").await?;
        projects
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name.trim()))
            })
            .cloned()
            .ok_or_else(|| CliError::not_found(format!("no project named '{name}' (see `hub ls`)")))
    }

    /// A response body as it arrives, for streams (events, followed logs).
    pub(crate) async fn stream(
        &self,
        path: &str,
        accept: &str,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, CliError>> + use<>, CliError> {
        let response = self
            .request(reqwest::Method::GET, path)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(api_error(status.as_u16(), &body));
        }
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|err| CliError::failed(format!("stream ended: {err}")))))
    }

    /// The Server-Sent Events at `path`.
    pub(crate) async fn events(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<SseEvent, CliError>> + use<>, CliError> {
        let bytes = self.stream(path, "text/event-stream").await?;
        Ok(sse_events(bytes))
    }

    fn unreachable(&self, err: &reqwest::Error) -> CliError {
        if err.is_connect() || err.is_timeout() {
            CliError {
                code: Exit::NoHub,
                message: format!(
                    "no hub answers at {}: start one with `hub serve` (or point --url / HUB_URL \
                     at a running hub)",
                    self.base
                ),
                hint: None,
            }
        } else {
            CliError::failed(format!("talking to the hub at {}: {err}", self.base))
        }
    }
}

/// An error answer of the API as one line: `code: message`.
fn api_error(status: u16, body: &Value) -> CliError {
    let code = body["error"]["code"].as_str().unwrap_or("error");
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let text = format!("{code}: {message}");
    match status {
        404 => CliError::not_found(text),
        401 => CliError {
            code: Exit::Failed,
            message: text,
            hint: Some("pass the hub's token with --token or HUB_API_TOKEN".into()),
        },
        _ => CliError::failed(text),
    }
}

/// Percent-encodes one path segment.
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Splits a byte stream into Server-Sent Events (comments skipped).
fn sse_events<S>(bytes: S) -> impl Stream<Item = Result<SseEvent, CliError>>
where
    S: Stream<Item = Result<bytes::Bytes, CliError>>,
{
    let lines = lines(bytes);
    futures_util::stream::unfold(
        (Box::pin(lines), SseEvent::default()),
        |(mut lines, mut event)| async move {
            loop {
                match lines.next().await? {
                    Err(err) => return Some((Err(err), (lines, SseEvent::default()))),
                    Ok(line) if line.is_empty() => {
                        if event.data.is_empty() && event.event.is_empty() {
                            continue;
                        }
                        let done = std::mem::take(&mut event);
                        return Some((Ok(done), (lines, event)));
                    }
                    Ok(line) if line.starts_with(':') => {}
                    Ok(line) => {
                        let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => event.event = value.to_owned(),
                            "data" => {
                                if !event.data.is_empty() {
                                    event.data.push('\n');
                                }
                                event.data.push_str(value);
                            }
                            _ => {}
                        }
                    }
                }
            }
        },
    )
}

/// Splits a byte stream into text lines (without their `\n` / `\r\n`).
pub(crate) fn lines<S>(bytes: S) -> impl Stream<Item = Result<String, CliError>>
where
    S: Stream<Item = Result<bytes::Bytes, CliError>>,
{
    futures_util::stream::unfold(
        (Box::pin(bytes), Vec::<u8>::new(), false),
        |(mut bytes, mut pending, mut ended)| async move {
            loop {
                if let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let mut line: Vec<u8> = pending.drain(..=end).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    return Some((Ok(text), (bytes, pending, ended)));
                }
                if ended {
                    if pending.is_empty() {
                        return None;
                    }
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    pending.clear();
                    return Some((Ok(text), (bytes, pending, ended)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                    Some(Err(err)) => return Some((Err(err), (bytes, pending, true))),
                    None => ended = true,
                }
            }
        },
    )
}
