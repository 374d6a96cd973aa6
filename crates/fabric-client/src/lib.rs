//! A typed async client for the fabric's JSON-RPC 2.0 API (docs/api.md): one method per API
//! method over `POST /rpc`, and task events over the WebSocket at `GET /rpc`.

mod endpoint;
mod error;
mod subscribe;
mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fabric_types::wire::{
    FabricStats, KpiQuery, KpiRows, ModuleEntry, ModuleListResult, ModulePut, ModulePutResult,
    Schedule, ScheduleList, ScheduleName, SchedulePut, SubmitBatch, Submitted, SubmittedBatch,
    Task, TaskList, TaskPage, TaskRef, TaskSpec, TaskWait, UsageQuery, UsageRows,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use endpoint::Endpoint;
pub use error::{BoxError, ClientError};
pub use fabric_types::wire::TaskEventNotice;

/// The result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long connecting to the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request other than `task.wait` may take, unless
/// [`Client::with_request_timeout`] says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long past its own timeout a `task.wait` request may take to come back.
pub const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// The server's wait when `task.wait` names no timeout (docs/api.md leaves it to the server;
/// the reference server waits 30 s). The request may take this plus [`WAIT_MARGIN`].
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A connection to one fabric server. Cheap to share by reference across tasks: requests
/// reuse a pool of HTTP connections.
pub struct Client {
    endpoint: Endpoint,
    authorization: Option<HeaderValue>,
    http: reqwest::Client,
    /// Shared with the WebSocket connections of [`Client::subscribe`].
    tls: std::sync::Arc<rustls::ClientConfig>,
    request_timeout: Duration,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.endpoint.base)
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Client {
    /// A client of the server at `url` (`http://HOST:PORT` or `https://HOST:PORT`),
    /// sending `token` as a bearer token when given; an `https` server must have a
    /// certificate the public web's roots trust (see [`Client::with_ca_cert`] for a
    /// private CA). Nothing is sent until the first call.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        Self::with_ca_cert(url, token, None)
    }

    /// [`Client::new`], trusting for `https` only the CA certificates in the PEM file
    /// `ca_cert` when given.
    pub fn with_ca_cert(
        url: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self> {
        let tls = tls::client_config(ca_cert)?;
        let endpoint = Endpoint::parse(url)?;
        let authorization = token
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| ClientError::InvalidToken)?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| ClientError::transport(endpoint.rpc.as_str(), e))?;
        Ok(Self {
            endpoint,
            authorization,
            http,
            tls,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            next_id: AtomicU64::new(1),
        })
    }

    /// The same client with another limit on how long a request may take.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The server's base URL, as errors and messages name it.
    pub fn url(&self) -> &str {
        &self.endpoint.base
    }

    /// Any method by name, with by-name `params`: the raw `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_within(method, params, self.request_timeout).await
    }

    /// Many calls in one JSON-RPC batch: one result per call, in the order given.
    pub async fn batch<M: AsRef<str>>(&self, calls: Vec<(M, Value)>) -> Result<Vec<Result<Value>>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let first = self
            .next_id
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        let requests: Vec<Value> = calls
            .iter()
            .zip(first..)
            .map(|((method, params), id)| request(id, method.as_ref(), params))
            .collect();
        let body = serde_json::to_vec(&requests).expect("JSON values always serialize");
        let answer = self.post(body, self.request_timeout).await?;
        match answer {
            Value::Array(responses) => match_batch(first, calls.len(), responses),
            // A batch the server refused whole comes back as one error response.
            single => Err(response_result(single, "the batch")
                .err()
                .unwrap_or_else(|| {
                    ClientError::decode("the batch", "expected an array of responses")
                })),
        }
    }

    /// `module.put`: stores a module or component (the bytes are sent base64-encoded).
    pub async fn module_put(&self, wasm: &[u8], name: Option<&str>) -> Result<ModulePutResult> {
        let params = ModulePut {
            wasm_base64: BASE64.encode(wasm),
            name: name.map(str::to_owned),
        };
        self.invoke("module.put", &params).await
    }

    /// `module.list`: the caller's modules.
    pub async fn module_list(&self) -> Result<Vec<ModuleEntry>> {
        let result: ModuleListResult = self.invoke("module.list", &json!({})).await?;
        Ok(result.modules)
    }

    /// `module.delete`: deletes the caller's module `module` (`sha256:<hex>` or a name);
    /// returns what it was. Refused (-32008) while unfinished tasks use it.
    pub async fn module_delete(&self, module: &str) -> Result<ModuleEntry> {
        self.invoke("module.delete", &json!({ "module": module }))
            .await
    }

    /// `task.submit`: the task is durable when this returns.
    pub async fn task_submit(&self, spec: &TaskSpec) -> Result<Submitted> {
        self.invoke("task.submit", spec).await
    }

    /// `task.submit_batch`: every task is stored, or none.
    pub async fn task_submit_batch(&self, tasks: Vec<TaskSpec>) -> Result<Vec<Submitted>> {
        let result: SubmittedBatch = self
            .invoke("task.submit_batch", &SubmitBatch { tasks })
            .await?;
        Ok(result.tasks)
    }

    /// `task.get`: one task with all its attempts.
    pub async fn task_get(&self, id: &str) -> Result<Task> {
        self.invoke("task.get", &TaskRef { id: id.to_owned() })
            .await
    }

    /// `task.wait`: the task once it is terminal, or as it is when `timeout` passes (the
    /// server's default wait when `None`). The request may last the wait plus
    /// [`WAIT_MARGIN`].
    pub async fn task_wait(&self, id: &str, timeout: Option<Duration>) -> Result<Task> {
        let params = TaskWait {
            id: id.to_owned(),
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let within = timeout
            .unwrap_or(DEFAULT_WAIT)
            .saturating_add(WAIT_MARGIN)
            .max(self.request_timeout);
        self.invoke_within("task.wait", &params, within).await
    }

    /// `task.list`: a page of the caller's tasks, newest first.
    pub async fn task_list(&self, params: TaskList) -> Result<TaskPage> {
        self.invoke("task.list", &params).await
    }

    /// `task.cancel`: the task as the cancellation left it.
    pub async fn task_cancel(&self, id: &str) -> Result<Task> {
        self.invoke("task.cancel", &TaskRef { id: id.to_owned() })
            .await
    }

    /// `task.retry`: a failed, cancelled or expired task queued again as a new task
    /// (labelled `retry_of=<id>`); the new task's id and state.
    pub async fn task_retry(&self, id: &str) -> Result<Submitted> {
        self.invoke("task.retry", &TaskRef { id: id.to_owned() })
            .await
    }

    /// `fabric.stats`: task counts by state and the answering node's workers.
    pub async fn stats(&self) -> Result<FabricStats> {
        self.invoke("fabric.stats", &json!({})).await
    }

    /// `kpi.query`: KPI aggregates of the caller's attempts.
    pub async fn kpi_query(&self, query: &KpiQuery) -> Result<KpiRows> {
        self.invoke("kpi.query", query).await
    }

    /// `usage.report`: metered usage for billing.
    pub async fn usage_report(&self, query: &UsageQuery) -> Result<UsageRows> {
        self.invoke("usage.report", query).await
    }

    /// `schedule.put`: creates or replaces a cron schedule; returns it as stored.
    pub async fn schedule_put(&self, schedule: &SchedulePut) -> Result<Schedule> {
        self.invoke("schedule.put", schedule).await
    }

    /// `schedule.get`: one of the caller's schedules.
    pub async fn schedule_get(&self, name: &str) -> Result<Schedule> {
        let params = ScheduleName {
            name: name.to_owned(),
        };
        self.invoke("schedule.get", &params).await
    }

    /// `schedule.list`: the caller's schedules, by name.
    pub async fn schedule_list(&self) -> Result<Vec<Schedule>> {
        let result: ScheduleList = self.invoke("schedule.list", &json!({})).await?;
        Ok(result.schedules)
    }

    /// `schedule.delete`: deletes one of the caller's schedules (its tasks stay).
    pub async fn schedule_delete(&self, name: &str) -> Result<Value> {
        let params = ScheduleName {
            name: name.to_owned(),
        };
        self.invoke("schedule.delete", &params).await
    }

    /// `rpc.discover`: the server's OpenRPC document.
    pub async fn discover(&self) -> Result<Value> {
        self.call("rpc.discover", json!({})).await
    }

    async fn invoke<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R> {
        self.invoke_within(method, params, self.request_timeout)
            .await
    }

    async fn invoke_within<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
        within: Duration,
    ) -> Result<R> {
        let params = serde_json::to_value(params).expect("API params always serialize");
        let result = self.call_within(method, params, within).await?;
        serde_json::from_value(result).map_err(|e| ClientError::decode(method, e))
    }

    async fn call_within(&self, method: &str, params: Value, within: Duration) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&request(id, method, &params))
            .expect("JSON values always serialize");
        let answer = self.post(body, within).await?;
        if answer.get("id").and_then(Value::as_u64) != Some(id) && answer.get("error").is_none() {
            return Err(ClientError::decode(
                method,
                "the response answers another request",
            ));
        }
        response_result(answer, method)
    }

    /// Posts one JSON-RPC body and parses the JSON answer.
    async fn post(&self, body: Vec<u8>, within: Duration) -> Result<Value> {
        let url = self.endpoint.rpc.as_str();
        let mut request = self
            .http
            .post(self.endpoint.rpc.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(within)
            .body(body);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(url, e, within))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(url, e, within))?;
        if status != reqwest::StatusCode::OK {
            return Err(ClientError::from_http_status(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::decode("the response", e))
    }
}

/// A JSON-RPC 2.0 request object.
fn request(id: u64, method: &str, params: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The `result` of a response object, or the error it carries.
fn response_result(mut response: Value, what: &str) -> Result<Value> {
    if let Some(error) = response.get("error") {
        return Err(ClientError::from_error_object(error).unwrap_or_else(|| {
            ClientError::decode(what, format!("malformed error object {error}"))
        }));
    }
    match response.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(ClientError::decode(
            what,
            "a response with neither result nor error",
        )),
    }
}

/// Puts a batch's responses (in any order) back in the order of its requests, whose ids
/// run from `first`.
fn match_batch(first: u64, count: usize, responses: Vec<Value>) -> Result<Vec<Result<Value>>> {
    let mut slots: Vec<Option<Result<Value>>> = (0..count).map(|_| None).collect();
    for response in responses {
        let slot = response
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| id.checked_sub(first))
            .and_then(|index| usize::try_from(index).ok())
            .filter(|&index| index < count);
        match slot {
            Some(index) => slots[index] = Some(response_result(response, "a batched call")),
            // An error without an id is about the batch as a whole.
            None => {
                return Err(response_result(response, "the batch")
                    .err()
                    .unwrap_or_else(|| {
                        ClientError::decode("the batch", "a response whose id matches no request")
                    }));
            }
        }
    }
    let results = slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| {
            slot.unwrap_or_else(|| {
                Err(ClientError::decode(
                    "the batch",
                    format!("no response to call #{}", index + 1),
                ))
            })
        })
        .collect();
    Ok(results)
}

fn transport_error(url: &str, error: reqwest::Error, within: Duration) -> ClientError {
    if error.is_timeout() {
        let reason = format!("no answer within {} s", within.as_secs_f64());
        return ClientError::Transport {
            url: url.to_owned(),
            reason,
            source: Box::new(error),
        };
    }
    ClientError::transport(url, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_types::wire::code;

    #[test]
    fn a_response_yields_its_result_or_its_error() {
        let ok = json!({"jsonrpc": "2.0", "id": 1, "result": {"id": "7", "state": "queued"}});
        assert_eq!(response_result(ok, "task.submit").unwrap()["id"], "7");
        let null = json!({"jsonrpc": "2.0", "id": 1, "result": null});
        assert_eq!(response_result(null, "m").unwrap(), Value::Null);
        let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "task 7 not found"}});
        let error = response_result(error, "task.get").unwrap_err();
        assert_eq!(error.code(), Some(code::NOT_FOUND));
        assert_eq!(error.to_string(), "RPC error -32002: task 7 not found");
        let neither = json!({"jsonrpc": "2.0", "id": 1});
        assert!(matches!(
            response_result(neither, "m"),
            Err(ClientError::Decode { .. })
        ));
    }

    #[test]
    fn batch_responses_come_back_in_request_order() {
        let responses = vec![
            json!({"jsonrpc": "2.0", "id": 12, "error": {"code": -32601, "message": "method not found"}}),
            json!({"jsonrpc": "2.0", "id": 10, "result": "a"}),
            json!({"jsonrpc": "2.0", "id": 11, "result": "b"}),
        ];
        let results = match_batch(10, 3, responses).unwrap();
        assert_eq!(results[0].as_ref().unwrap(), "a");
        assert_eq!(results[1].as_ref().unwrap(), "b");
        assert_eq!(
            results[2].as_ref().unwrap_err().code(),
            Some(code::METHOD_NOT_FOUND)
        );

        let missing = match_batch(10, 2, vec![json!({"id": 10, "result": 1})]).unwrap();
        assert!(
            missing[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("call #2")
        );

        let whole =
            vec![json!({"id": null, "error": {"code": -32600, "message": "invalid request"}})];
        assert_eq!(
            match_batch(10, 2, whole).unwrap_err().code(),
            Some(code::INVALID_REQUEST)
        );
    }

    #[test]
    fn requests_are_json_rpc_2() {
        let request = request(3, "task.get", &json!({"id": "9"}));
        assert_eq!(
            request,
            json!({"jsonrpc": "2.0", "id": 3, "method": "task.get", "params": {"id": "9"}})
        );
    }

    #[test]
    fn the_debug_form_never_shows_the_token() {
        let client = Client::new("http://127.0.0.1:7070", Some("s3cret".into())).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("http://127.0.0.1:7070"), "{debug}");
        assert!(matches!(
            Client::new("http://127.0.0.1:7070", Some("bad\ntoken".into())),
            Err(ClientError::InvalidToken)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transport_error_naming_the_url() {
        // A port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let error = client.stats().await.unwrap_err();
        assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("http://127.0.0.1:{port}/rpc")),
            "{message}"
        );
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }
}
