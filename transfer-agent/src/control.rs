//! The agent's control API over HTTP/1.1 (hyper) on TLS: routing, the hello proof, JSON in and
//! out. Only the gateway's certificate completes the TLS handshake (`skyx_agent_api::control_tls`),
//! so every request that reaches [`handle`] is the gateway's. What each request does is
//! [`crate::agent::Agent`]'s business; the wire types are [`skyx_agent_api::wire`]'s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use crate::agent::{Agent, AgentError};
use skyx_agent_api::control_tls::{ControlIdentity, proof};
use skyx_agent_api::wire::{API_VERSION, ApiError, Base64, Hello, HelloRequest};

/// Largest request body accepted. No request grows with the job: a dispatch carries one
/// route's window of chunks and their objects, a sink registration one round of them (keys
/// under 1 KiB, metadata under a few KiB: a few MiB at most).
const MAX_BODY: usize = 64 << 20;

/// How long a new connection has to complete its TLS handshake: a stranger who connects and
/// says nothing holds a task no longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// When the control API last saw a request, for the idle lease.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last authenticated request (or since start).
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Control {
    pub agent: Arc<Agent>,
    /// The launch's token: the secret the agent proves itself with (it is never sent).
    pub token: Arc<str>,
    /// The certificate the control API serves with, which the proof is bound to.
    pub identity: Arc<ControlIdentity>,
    pub activity: Arc<Activity>,
    /// Notified when the gateway asks the agent to shut down.
    pub shutdown: Arc<Notify>,
    /// The pipeline stage this agent runs, if any.
    pub stage: Arc<crate::stage::StageSlot>,
}

/// A fresh control identity for this agent, and the TLS configuration that serves it to
/// `gateway_cert` alone.
pub fn identity_for(
    gateway_cert: &[u8],
) -> Result<(Arc<ControlIdentity>, Arc<rustls::ServerConfig>), skyx_agent_api::TlsError> {
    let identity = ControlIdentity::generate()?;
    let tls = identity.server_config(gateway_cert)?;
    Ok((Arc::new(identity), tls))
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log.
        f.debug_struct("Control")
            .field("agent", &self.agent.name())
            .finish_non_exhaustive()
    }
}

/// Serves the control API on `listener` until the task is dropped, over TLS with `tls` (the
/// agent's identity, the gateway's certificate the only client accepted).
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, control: Control) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(crate::accept::MAX_HANDSHAKING));
    loop {
        let (stream, peer, slot) =
            crate::accept::accept_with_slot(&listener, &slots, "control").await;
        let _ = stream.set_nodelay(true);
        let (control, acceptor) = (control.clone(), acceptor.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(slot);
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refused a control connection that is not this agent's gateway");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "refused a control connection: no TLS handshake in time");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(handle(control, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("serializable");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(
        status,
        &ApiError {
            error: message.into(),
        },
    )
}

fn from_agent<T: Serialize>(result: Result<T, AgentError>) -> Response<Full<Bytes>> {
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) if e.is_bad_request() => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(c: Control, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    c.activity.touch();
    if method == Method::POST && path == "/v1/hello" {
        return match body::<HelloRequest>(req).await {
            Ok(hello) => json(
                StatusCode::OK,
                &Hello {
                    api_version: API_VERSION,
                    name: c.agent.name().to_string(),
                    agent_version: env!("CARGO_PKG_VERSION").to_string(),
                    proof: Base64(proof(
                        c.token.as_bytes(),
                        c.agent.name(),
                        &hello.nonce.0,
                        c.identity.cert(),
                    )),
                },
            ),
            Err(r) => r,
        };
    }
    let agent = &c.agent;
    match (method, path.as_str()) {
        (Method::POST, "/v1/job") => match body(req).await {
            Ok(spec) => from_agent(agent.install(spec).await.map(|()| serde_json::json!({}))),
            Err(r) => r,
        },
        (Method::POST, "/v1/listen") => match body(req).await {
            Ok(r) => from_agent(agent.listen(r).await),
            Err(r) => r,
        },
        (Method::POST, "/v1/route") => match body(req).await {
            Ok(r) => from_agent(agent.add_route(r).await.map(|()| serde_json::json!({}))),
            Err(r) => r,
        },
        (Method::POST, "/v1/objects") => match body(req).await {
            Ok(r) => from_agent(agent.sink_objects(r).map(|()| serde_json::json!({}))),
            Err(r) => r,
        },
        (Method::POST, "/v1/dispatch") => match body(req).await {
            Ok(r) => from_agent(agent.dispatch(r).map(|()| serde_json::json!({}))),
            Err(r) => r,
        },
        (Method::GET, "/v1/events") => {
            let q = query(&req);
            let after = q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
            let wait_ms: u64 = q.get("wait_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            let wait = Duration::from_millis(wait_ms.min(30_000));
            json(StatusCode::OK, &agent.events(after, wait).await)
        }
        (Method::GET, "/v1/metrics") => json(StatusCode::OK, &agent.metrics()),
        (Method::POST, "/v1/probe/listen") => match body(req).await {
            Ok(r) => from_agent(agent.probe_listen(r).await),
            Err(r) => r,
        },
        (Method::POST, "/v1/probe/send") => match body(req).await {
            Ok(r) => from_agent(agent.probe_send(r).await),
            Err(r) => r,
        },
        (Method::POST, "/v1/stage") => {
            match body::<skyx_agent_api::wire::StageRequest>(req).await {
                Ok(r) => match c.stage.start(r, agent.store_config().clone()) {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
                    Err(why) => error(StatusCode::CONFLICT, why),
                },
                Err(r) => r,
            }
        }
        (Method::GET, "/v1/stage") => {
            let wait_ms: u64 = query(&req)
                .get("wait_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let wait = Duration::from_millis(wait_ms.min(30_000));
            json(StatusCode::OK, &c.stage.status(wait).await)
        }
        (Method::POST, "/v1/shutdown") => {
            c.shutdown.notify_one();
            json(StatusCode::OK, &serde_json::json!({}))
        }
        (_, p) => error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}")),
    }
}
