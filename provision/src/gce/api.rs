//! The slice of Compute Engine's REST API v1 the GCE provider calls, over reqwest: JSON in and
//! out, Google's error envelope read into [`ApiError`], and long-running operations waited
//! for with `zoneOperations.wait` / `globalOperations.wait` (which may answer before the
//! operation is done: the caller loops until `status` is `DONE`). A failed operation is
//! `DONE` with an `error` member; capacity and quota answers, synchronous or in an operation,
//! are told apart by [`ApiError::is_capacity`].

use std::sync::Arc;

use serde_json::Value;
use token_source::TokenSource;

/// Where the API is when no endpoint is given.
pub const GOOGLE_ENDPOINT: &str = "https://compute.googleapis.com/";

/// How long an operation may take before the provider gives up on it.
pub const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// The OAuth scope the gateway's calls need.
pub const COMPUTE_SCOPE: &str = "https://www.googleapis.com/auth/compute";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The API answered the call with an error (Google's envelope: code, reason, message).
    #[error("{call}: HTTP {status} {reason}: {message}")]
    Http {
        call: String,
        status: u16,
        reason: String,
        message: String,
    },
    /// The call was accepted, and its operation ended in an error.
    #[error("{call}: operation failed with {code}: {message}")]
    Operation {
        call: String,
        code: String,
        message: String,
    },
    /// No answer, or one that is not the API's JSON.
    #[error("{call}: {why}")]
    Transport { call: String, why: String },
    /// No credentials to call with.
    #[error("Google credentials: {0}")]
    Auth(String),
}

impl ApiError {
    /// The API's code (an HTTP error's reason) and message, when it answered with one.
    fn code_and_message(&self) -> Option<(&str, &str)> {
        match self {
            ApiError::Http {
                reason, message, ..
            } => Some((reason, message)),
            ApiError::Operation { code, message, .. } => Some((code, message)),
            _ => None,
        }
    }

    /// Whether this says the zone has no capacity or the project no quota for the VM: the
    /// planner's cue to place it elsewhere (codes and reasons from docs/cloud-contracts.md A.3).
    pub fn is_capacity(&self) -> bool {
        let zone_full = self.code_and_message().is_some_and(|(code, _)| {
            [
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                "insufficientCapacity",
            ]
            .contains(&code)
        });
        zone_full || self.is_quota()
    }

    /// Whether this is a quota the project is over. GCE's quotas are the region's or the
    /// project's (`Limit: 8.0 in region us-west1`, `CPUS_ALL_REGIONS`), never a zone's: the
    /// region's other zones would only answer the same.
    pub fn is_quota(&self) -> bool {
        let Some((code, message)) = self.code_and_message() else {
            return false;
        };
        ["QUOTA_EXCEEDED", "quotaExceeded"].contains(&code)
            || (message.starts_with("Quota '") && message.contains("exceeded"))
    }

    /// Whether this is a quota of the whole project (`Quota 'CPUS_ALL_REGIONS' exceeded.
    /// Limit: 32.0 globally.`), not of one region.
    pub fn is_global_quota(&self) -> bool {
        self.is_quota()
            && self
                .code_and_message()
                .is_some_and(|(_, m)| m.contains("_ALL_REGIONS") || m.contains(" globally"))
    }

    /// Whether the API said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Http { status: 404, .. })
    }
}

/// How calls are authorised.
#[derive(Clone)]
pub enum Auth {
    /// Google's application default credentials (a service-account key file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials, or the metadata server),
    /// with the compute scope, found at the first call.
    Default(Arc<tokio::sync::OnceCell<Arc<dyn TokenSource>>>),
    /// A fixed bearer token (`gcloud auth print-access-token`, or a contract server).
    Bearer(String),
    /// A token a command prints, asked again when old or refused.
    Command(Arc<crate::TokenCommand>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Default(_) => "Auth::Default",
            Auth::Bearer(_) => "Auth::Bearer(..)",
            Auth::Command(_) => "Auth::Command",
        })
    }
}

impl Auth {
    /// Google's application default credentials.
    pub fn default_credentials() -> Auth {
        Auth::Default(Arc::new(tokio::sync::OnceCell::new()))
    }

    async fn header(&self) -> Result<String, ApiError> {
        let source = match self {
            Auth::Bearer(token) => return Ok(format!("Bearer {token}")),
            Auth::Command(command) => {
                return command
                    .header()
                    .await
                    .map_err(|e| ApiError::Auth(e.to_string()));
            }
            Auth::Default(cell) => {
                cell.get_or_try_init(|| async {
                    use token_source::TokenSourceProvider as _;
                    let config =
                        gcloud_auth::project::Config::default().with_scopes(&[COMPUTE_SCOPE]);
                    gcloud_auth::token::DefaultTokenSourceProvider::new(config)
                        .await
                        .map(|p| p.token_source())
                        .map_err(|e| ApiError::Auth(e.to_string()))
                })
                .await?
            }
        };
        // The token source answers "Bearer …" and refreshes it on its own.
        source
            .token()
            .await
            .map_err(|e| ApiError::Auth(e.to_string()))
    }

    /// The API refused `header` (401): whether a call may be tried again with a new token.
    async fn refused(&self, header: &str) -> bool {
        let Auth::Command(command) = self else {
            return false;
        };
        command.refused(header).await;
        true
    }
}

/// One project's Compute Engine API.
#[derive(Debug, Clone)]
pub struct Compute {
    http: reqwest::Client,
    /// `{endpoint}compute/v1/projects/{project}/`
    base: String,
    auth: Auth,
}

impl Compute {
    /// The API of `project` at `endpoint` (Google's unless given).
    pub fn new(endpoint: Option<&str>, project: &str, auth: Auth) -> Compute {
        let endpoint = endpoint.unwrap_or(GOOGLE_ENDPOINT).trim_end_matches('/');
        Compute {
            http: reqwest::Client::new(),
            base: format!("{endpoint}/compute/v1/projects/{project}/"),
            auth,
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    /// A POST (a body-less one for `wait`); mutating calls carry a [`request_id`].
    pub async fn post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.call(reqwest::Method::POST, path, query, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(reqwest::Method::PATCH, path, &[], Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::DELETE, path, &[], None).await
    }

    /// A call and its answer; `path` is relative to the project (`zones/z/instances`). A call
    /// refused for its token (401) is made once more with a new one, where the auth has one.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let header = self.auth.header().await?;
        match self
            .call_with(method.clone(), path, query, body, &header)
            .await
        {
            Err(ApiError::Http { status: 401, .. }) if self.auth.refused(&header).await => {
                let header = self.auth.header().await?;
                self.call_with(method, path, query, body, &header).await
            }
            answer => answer,
        }
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        authorization: &str,
    ) -> Result<Value, ApiError> {
        let call = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", authorization)
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |why: String| ApiError::Transport {
            call: call.clone(),
            why,
        };
        let response = request.send().await.map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| transport(e.to_string()))?;
        let json: Value = serde_json::from_str(&text).map_err(|_| {
            transport(format!(
                "HTTP {status}, not JSON: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let error = &json["error"];
        Err(ApiError::Http {
            call,
            status,
            reason: error["errors"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            message: error["message"].as_str().unwrap_or(&text).to_string(),
        })
    }

    /// Waits until `operation` (as an insert, delete or patch returned it) is done; its error,
    /// if it ended in one, as [`ApiError::Operation`].
    pub async fn wait(&self, operation: &Value, call: &str) -> Result<(), ApiError> {
        let name = operation["name"].as_str().unwrap_or_default();
        // Zonal operations name their zone (a URL); global ones do not.
        let path = match operation["zone"]
            .as_str()
            .and_then(|z| z.rsplit('/').next())
        {
            Some(zone) => format!("zones/{zone}/operations/{name}/wait"),
            None => format!("global/operations/{name}/wait"),
        };
        let mut op = operation.clone();
        let deadline = std::time::Instant::now() + OPERATION_TIMEOUT;
        while op["status"].as_str() != Some("DONE") {
            if std::time::Instant::now() > deadline {
                return Err(ApiError::Transport {
                    call: call.to_string(),
                    why: format!("operation {name} not done after {OPERATION_TIMEOUT:?}"),
                });
            }
            // `wait` may answer before the operation is done (it is only best effort).
            if op["status"].as_str() == Some("RUNNING") {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            op = self.post(&path, &[], None).await?;
        }
        match op["error"]["errors"].get(0) {
            None => Ok(()),
            Some(first) => Err(ApiError::Operation {
                call: call.to_string(),
                code: first["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                message: first["message"].as_str().unwrap_or("").to_string(),
            }),
        }
    }
}

/// A `requestId` for a mutating call: a retry with the same id is not done twice.
pub fn request_id() -> String {
    let hex = skyx_agent_api::control_tls::launch_token();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_command::testing;

    #[tokio::test]
    async fn a_token_refused_is_asked_of_its_command_again_and_the_call_made_again() {
        let (endpoint, seen) = testing::refusing("old").await;
        let auth = Auth::Command(testing::old_then_new("gce-401"));
        let compute = Compute::new(Some(&endpoint), "p", auth);
        compute.get("zones", &[]).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["old", "new"]);
        // A fixed token that is refused is the caller's error, not asked again.
        let fixed = Compute::new(Some(&endpoint), "p", Auth::Bearer("old".into()));
        let err = fixed.get("zones", &[]).await.unwrap_err();
        assert!(matches!(err, ApiError::Http { status: 401, .. }), "{err}");
    }

    #[test]
    fn capacity_and_quota_answers_are_told_apart() {
        let op = |code: &str, message: &str| ApiError::Operation {
            call: "insert".into(),
            code: code.into(),
            message: message.into(),
        };
        assert!(op("ZONE_RESOURCE_POOL_EXHAUSTED", "The zone ...").is_capacity());
        assert!(op("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.").is_capacity());
        assert!(op("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.").is_quota());
        assert!(!op("ZONE_RESOURCE_POOL_EXHAUSTED", "The zone ...").is_quota());
        let regional = op(
            "QUOTA_EXCEEDED",
            "Quota 'CPUS' exceeded.  Limit: 8.0 in region x.",
        );
        assert!(!regional.is_global_quota());
        let global = "Quota 'CPUS_ALL_REGIONS' exceeded.  Limit: 32.0 globally.";
        assert!(op("QUOTA_EXCEEDED", global).is_global_quota());
        assert!(op("SOMETHING", "Quota 'CPUS_ALL_REGIONS' exceeded. Limit: 8").is_capacity());
        assert!(!op("RESOURCE_NOT_FOUND", "The resource was not found").is_capacity());
        let http = ApiError::Http {
            call: "insert".into(),
            status: 403,
            reason: "forbidden".into(),
            message: "Required 'compute.instances.create' permission".into(),
        };
        assert!(!http.is_capacity());
    }

    #[test]
    fn request_ids_are_uuids() {
        let id = request_id();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_ne!(id, request_id());
    }
}
