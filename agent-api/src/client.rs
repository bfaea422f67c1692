//! The gateway's side of the control API: typed calls to one agent, over TLS that shows the
//! gateway's certificate and accepts only the agent's pinned one ([`crate::control_tls`]).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::control_tls::{GatewayIdentity, Pinned, proof_holds};
use crate::wire::{
    AgentMetrics, ApiError, Base64, Dispatch, EventsResponse, Hello, HelloRequest, JobSpec,
    ListenRequest, ListenResponse, ProbeListen, ProbeRequest, ProbeResult, RouteRequest,
    SinkObjects,
};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("agent {agent} at {addr} is unreachable: {message}")]
    Unreachable {
        agent: String,
        addr: SocketAddr,
        message: String,
    },
    #[error("agent {agent} did not answer {path} within {after:?}")]
    Timeout {
        agent: String,
        path: String,
        after: Duration,
    },
    #[error("agent {agent} refused {path} ({status}): {message}")]
    Refused {
        agent: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("agent {agent} answered {path} with something unreadable: {message}")]
    Malformed {
        agent: String,
        path: String,
        message: String,
    },
    /// What answered at the agent's address could not prove it holds the launch's token:
    /// not the agent this gateway launched (or a machine in the middle).
    #[error("{addr} did not prove it is agent {agent} (no proof of its launch token): refused")]
    Impostor { agent: String, addr: SocketAddr },
    #[error("control TLS setup failed: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl ClientError {
    /// Whether the agent itself is gone or not answering (as opposed to refusing a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Timeout { .. }
        )
    }
}

/// How late past its wait an answer to an events poll may come (round trips, a runtime busy
/// with the data path: the control API shares the agent's runtime).
pub const EVENTS_GRACE: Duration = Duration::from_secs(4);

/// A connection pool to one agent's control API, its certificate pinned.
#[derive(Debug, Clone)]
pub struct AgentClient {
    name: String,
    addr: SocketAddr,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Calls that do work at the agent (opening stores, connecting hops) get this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A pool of TLS connections presenting `gateway` and checking the server with `server`.
fn pool(
    gateway: &GatewayIdentity,
    server: Arc<Pinned>,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, ClientError> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    tcp.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(gateway.client_config(server)?)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

impl AgentClient {
    /// Opens the control channel to the agent launched as `name` with `token`: says hello with
    /// a fresh nonce over TLS that shows `gateway`'s certificate, checks the agent's proof that
    /// it holds the token, bound to the certificate it served the hello with, and pins that
    /// certificate for every later call. Answers the client and the agent's hello.
    pub async fn connect(
        name: impl Into<String>,
        addr: SocketAddr,
        token: &str,
        gateway: &GatewayIdentity,
    ) -> Result<(AgentClient, Hello), ClientError> {
        let name = name.into();
        let first = Arc::new(Pinned::first_contact());
        let greeter = AgentClient {
            name: name.clone(),
            addr,
            http: pool(gateway, first.clone())?,
        };
        let nonce = crate::keys::random::<32>().to_vec();
        let hello: Hello = greeter
            .call(
                Method::POST,
                "/v1/hello",
                Some(&HelloRequest {
                    nonce: Base64(nonce.clone()),
                }),
                Duration::from_secs(10),
            )
            .await?;
        // The only connection that pool made carried the hello: the certificate it saw is the
        // one the proof must be bound to.
        let Some(cert) = first.seen() else {
            return Err(ClientError::Impostor { agent: name, addr });
        };
        if !proof_holds(token.as_bytes(), &name, &nonce, &cert, &hello.proof.0) {
            return Err(ClientError::Impostor { agent: name, addr });
        }
        let client = AgentClient {
            name,
            addr,
            http: pool(gateway, Arc::new(Pinned::to(&cert)))?,
        };
        Ok((client, hello))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("serializable")),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.addr))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .expect("valid request");
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Unreachable {
                    agent: self.name.clone(),
                    addr: self.addr,
                    message: error_chain(&e),
                })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    agent: self.name.clone(),
                    addr: self.addr,
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                agent: self.name.clone(),
                path: path.to_string(),
                after: timeout,
            })??;
        if status != StatusCode::OK {
            let message = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused {
                agent: self.name.clone(),
                path: path.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed {
            agent: self.name.clone(),
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    pub async fn install(&self, spec: &JobSpec) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>(Method::POST, "/v1/job", Some(spec), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn listen(&self, req: &ListenRequest) -> Result<ListenResponse, ClientError> {
        self.call(Method::POST, "/v1/listen", Some(req), CALL_TIMEOUT)
            .await
    }

    pub async fn add_route(&self, req: &RouteRequest) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>(Method::POST, "/v1/route", Some(req), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn sink_objects(&self, req: &SinkObjects) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>(Method::POST, "/v1/objects", Some(req), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn dispatch(&self, req: &Dispatch) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>(Method::POST, "/v1/dispatch", Some(req), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Events after `after`, waiting up to `wait` for one.
    /// Events after `after`, waiting up to `wait` for one. The agent answers within `wait`
    /// plus a little whatever it is doing (heavy work runs on its blocking pool), so an answer
    /// later than [`EVENTS_GRACE`] past it is a sign the agent is frozen or unreachable.
    pub async fn events(&self, after: u64, wait: Duration) -> Result<EventsResponse, ClientError> {
        let path = format!("/v1/events?after={after}&wait_ms={}", wait.as_millis());
        self.call::<(), _>(Method::GET, &path, None, wait + EVENTS_GRACE)
            .await
    }

    /// The agent's counters.
    pub async fn metrics(&self) -> Result<AgentMetrics, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/metrics", None, Duration::from_secs(10))
            .await
    }

    /// Opens a probe listener on the agent; answers the address to probe.
    pub async fn probe_listen(&self, req: &ProbeListen) -> Result<ListenResponse, ClientError> {
        self.call(Method::POST, "/v1/probe/listen", Some(req), CALL_TIMEOUT)
            .await
    }

    /// Has the agent probe the path to a listener; returns when the probe is done.
    pub async fn probe_send(&self, req: &ProbeRequest) -> Result<ProbeResult, ClientError> {
        let wait =
            Duration::from_secs_f64(req.seconds.clamp(0.0, 3600.0)) + Duration::from_secs(60);
        self.call(Method::POST, "/v1/probe/send", Some(req), wait)
            .await
    }

    /// Starts a pipeline stage on the agent's machine.
    pub async fn start_stage(&self, req: &crate::wire::StageRequest) -> Result<(), ClientError> {
        self.call::<_, serde_json::Value>(Method::POST, "/v1/stage", Some(req), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// The stage's state, the agent waiting up to `wait` for it to end.
    pub async fn stage_status(
        &self,
        wait: Duration,
    ) -> Result<crate::wire::StageStatus, ClientError> {
        let path = format!("/v1/stage?wait_ms={}", wait.as_millis());
        self.call::<(), _>(Method::GET, &path, None, wait + CALL_TIMEOUT)
            .await
    }

    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(
            Method::POST,
            "/v1/shutdown",
            None,
            Duration::from_secs(5),
        )
        .await
        .map(drop)
    }
}

/// `e` with every error under it (`a: b: c`): reqwest's own text hides why a request failed
/// (refused, reset, timed out).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
