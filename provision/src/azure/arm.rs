//! The slice of Azure Resource Manager's REST API the Azure provider calls, over reqwest: JSON
//! in and out, ARM's error envelope read into [`ArmError`], and long-running operations
//! followed as ARM documents them ("Track asynchronous Azure operations"): a 201 or 202 whose
//! resource is not in a terminal state is polled at its `Azure-AsyncOperation` URL (else its
//! `Location`), `Retry-After` apart, until `Succeeded`, `Failed` or `Canceled`. Capacity and
//! quota answers, synchronous or in an operation, are told apart by [`ArmError::is_capacity`].

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use serde_json::Value;

/// Where ARM is when no endpoint is given.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";

/// How long an operation may take before the provider gives up on it.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The scope of an ARM token.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// The API versions the provider speaks (the ones docs/cloud-contracts.md B.1 pins).
pub const RESOURCES_API: &str = "2025-04-01";
pub const NETWORK_API: &str = "2025-05-01";
pub const COMPUTE_API: &str = "2025-04-01";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArmError {
    /// ARM answered the call with an error (its envelope: code, message).
    #[error("{call}: HTTP {status} {code}: {message}")]
    Http {
        call: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The call was accepted, and its operation ended `Failed` or `Canceled`.
    #[error("{call}: operation {status} with {code}: {message}")]
    Operation {
        call: String,
        status: String,
        code: String,
        message: String,
    },
    /// No answer, or one that is not ARM's JSON.
    #[error("{call}: {why}")]
    Transport { call: String, why: String },
    /// No token to call with.
    #[error("Azure credentials: {0}")]
    Auth(String),
}

impl ArmError {
    /// Whether this says the region has no capacity for the VM or the subscription no quota:
    /// the planner's cue to place it elsewhere (docs/cloud-contracts.md B.6).
    pub fn is_capacity(&self) -> bool {
        let (code, message) = match self {
            ArmError::Http { code, message, .. } | ArmError::Operation { code, message, .. } => {
                (code.as_str(), message.to_ascii_lowercase())
            }
            _ => return false,
        };
        [
            "SkuNotAvailable",
            "AllocationFailed",
            "ZonalAllocationFailed",
            "OverconstrainedAllocationRequest",
            "OverconstrainedZonalAllocationRequest",
            "QuotaExceeded",
            "SpotPriceGreaterThanProvidedMaxPrice",
        ]
        .contains(&code)
            || (code == "OperationNotAllowed" && message.contains("quota"))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ArmError::Http { status: 404, .. })
    }

    /// The error's code (`SkuNotAvailable`), if ARM gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Http { code, .. } | ArmError::Operation { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How calls are authorised.
#[derive(Clone)]
pub enum ArmAuth {
    /// An Entra ID credential (the Azure CLI's or azd's login, a managed identity, a service
    /// principal), asked for an ARM token at each call (it caches and refreshes).
    Credential(Arc<dyn TokenCredential>),
    /// A fixed bearer token (`az account get-access-token`, or a contract server).
    Bearer(String),
    /// A token a command prints, asked again when old or refused.
    Command(Arc<crate::TokenCommand>),
}

impl std::fmt::Debug for ArmAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArmAuth::Credential(_) => "ArmAuth::Credential",
            ArmAuth::Bearer(_) => "ArmAuth::Bearer(..)",
            ArmAuth::Command(_) => "ArmAuth::Command",
        })
    }
}

impl ArmAuth {
    /// The Azure CLI's (or azd's) login: what a gateway on a user's machine has.
    pub fn developer_tools() -> Result<ArmAuth, ArmError> {
        azure_identity::DeveloperToolsCredential::new(None)
            .map(|c| ArmAuth::Credential(c as Arc<dyn TokenCredential>))
            .map_err(|e| ArmError::Auth(e.to_string()))
    }

    async fn header(&self) -> Result<String, ArmError> {
        match self {
            ArmAuth::Bearer(token) => Ok(format!("Bearer {token}")),
            ArmAuth::Command(command) => command
                .header()
                .await
                .map_err(|e| ArmError::Auth(e.to_string())),
            ArmAuth::Credential(credential) => credential
                .get_token(&[ARM_SCOPE], None)
                .await
                .map(|t| format!("Bearer {}", t.token.secret()))
                .map_err(|e| ArmError::Auth(e.to_string())),
        }
    }

    /// ARM refused `header` (401): whether a call may be tried again with a new token.
    async fn refused(&self, header: &str) -> bool {
        let ArmAuth::Command(command) = self else {
            return false;
        };
        command.refused(header).await;
        true
    }
}

/// One subscription's Resource Manager.
#[derive(Debug, Clone)]
pub struct Arm {
    http: reqwest::Client,
    /// `{endpoint}/subscriptions/{subscription}`
    base: String,
    auth: ArmAuth,
    /// The least wait between polls of an operation (ARM's `Retry-After` may ask for more).
    poll: Duration,
}

/// An answer: its status, body and the headers of an operation to follow.
struct Answer {
    status: u16,
    body: Value,
    async_operation: Option<String>,
    location: Option<String>,
    retry_after: Option<Duration>,
}

impl Arm {
    pub fn new(endpoint: Option<&str>, subscription: &str, auth: ArmAuth, poll: Duration) -> Arm {
        let endpoint = endpoint.unwrap_or(ARM_ENDPOINT).trim_end_matches('/');
        Arm {
            http: reqwest::Client::new(),
            base: format!("{endpoint}/subscriptions/{subscription}"),
            auth,
            poll,
        }
    }

    /// The id of a resource under the subscription (`/subscriptions/S/resourceGroups/...`),
    /// as ARM references name them.
    pub fn id(&self, path: &str) -> String {
        let at = self.base.find("/subscriptions/").unwrap_or(0);
        format!("{}{path}", &self.base[at..])
    }

    /// A call and its answer. A call refused for its token (401) is made once more with a new
    /// one, where the auth has one.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ArmError> {
        let header = self.auth.header().await?;
        match self.call_with(method.clone(), url, body, &header).await {
            Err(ArmError::Http { status: 401, .. }) if self.auth.refused(&header).await => {
                let header = self.auth.header().await?;
                self.call_with(method, url, body, &header).await
            }
            answer => answer,
        }
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        authorization: &str,
    ) -> Result<Answer, ArmError> {
        let call = format!("{method} {}", url.split('?').next().unwrap_or(url));
        let mut request = self
            .http
            .request(method, url)
            .header("Authorization", authorization);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |why: String| ArmError::Transport {
            call: call.clone(),
            why,
        };
        let response = request.send().await.map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let async_operation = header("azure-asyncoperation");
        let location = header("location");
        let retry_after = header("retry-after")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response
            .text()
            .await
            .map_err(|e| transport(e.to_string()))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| {
                transport(format!(
                    "HTTP {status}, not JSON: {}",
                    text.chars().take(200).collect::<String>()
                ))
            })?
        };
        if !(200..300).contains(&status) {
            let error = &body["error"];
            return Err(ArmError::Http {
                call,
                status,
                code: error["code"].as_str().unwrap_or("").to_string(),
                message: error["message"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(Answer {
            status,
            body,
            async_operation,
            location,
            retry_after,
        })
    }

    fn url(&self, path: &str, api: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={api}", self.base)
    }

    /// A GET of a URL ARM gave (a `nextLink`).
    pub async fn get_url(&self, url: &str) -> Result<Value, ArmError> {
        Ok(self.call(reqwest::Method::GET, url, None).await?.body)
    }

    pub async fn get(&self, path: &str, api: &str) -> Result<Value, ArmError> {
        Ok(self
            .call(reqwest::Method::GET, &self.url(path, api), None)
            .await?
            .body)
    }

    /// Creates or updates a resource and waits until ARM says it is done; returns the
    /// resource as it then is.
    pub async fn put(&self, path: &str, api: &str, body: &Value) -> Result<Value, ArmError> {
        let url = self.url(path, api);
        let answer = self.call(reqwest::Method::PUT, &url, Some(body)).await?;
        let state = answer.body["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("Succeeded");
        if !terminal(state) {
            self.follow(&answer, &format!("PUT {path}")).await?;
            return self.get(path, api).await;
        }
        if state != "Succeeded" {
            return Err(ArmError::Operation {
                call: format!("PUT {path}"),
                status: state.to_string(),
                code: String::new(),
                message: String::new(),
            });
        }
        Ok(answer.body)
    }

    /// Deletes a resource and waits until it is gone; one already gone is fine.
    pub async fn delete(&self, path: &str, api: &str) -> Result<(), ArmError> {
        match self
            .call(reqwest::Method::DELETE, &self.url(path, api), None)
            .await
        {
            Ok(answer) if answer.status == 202 || answer.async_operation.is_some() => {
                self.follow(&answer, &format!("DELETE {path}")).await
            }
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Polls an accepted operation until it ends: its `Azure-AsyncOperation` status if ARM
    /// gave one, else its `Location` (202 while running).
    async fn follow(&self, first: &Answer, call: &str) -> Result<(), ArmError> {
        let mut wait = first.retry_after.unwrap_or(self.poll).max(self.poll);
        let deadline = std::time::Instant::now() + OPERATION_TIMEOUT;
        let overdue = || ArmError::Transport {
            call: call.to_string(),
            why: format!("operation not done after {OPERATION_TIMEOUT:?}"),
        };
        if let Some(status_url) = &first.async_operation {
            loop {
                if std::time::Instant::now() > deadline {
                    return Err(overdue());
                }
                tokio::time::sleep(wait).await;
                let answer = self.call(reqwest::Method::GET, status_url, None).await?;
                let status = answer.body["status"].as_str().unwrap_or("InProgress");
                match status {
                    "Succeeded" => return Ok(()),
                    "Failed" | "Canceled" => {
                        let error = &answer.body["error"];
                        return Err(ArmError::Operation {
                            call: call.to_string(),
                            status: status.to_string(),
                            code: error["code"].as_str().unwrap_or("").to_string(),
                            message: error["message"].as_str().unwrap_or("").to_string(),
                        });
                    }
                    _ => wait = answer.retry_after.unwrap_or(self.poll).max(self.poll),
                }
            }
        }
        let Some(location) = &first.location else {
            return Ok(());
        };
        loop {
            if std::time::Instant::now() > deadline {
                return Err(overdue());
            }
            tokio::time::sleep(wait).await;
            let answer = self.call(reqwest::Method::GET, location, None).await?;
            if answer.status != 202 {
                return Ok(());
            }
            wait = answer.retry_after.unwrap_or(self.poll).max(self.poll);
        }
    }
}

fn terminal(state: &str) -> bool {
    matches!(state, "Succeeded" | "Failed" | "Canceled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_command::testing;

    #[tokio::test]
    async fn a_token_refused_is_asked_of_its_command_again_and_the_call_made_again() {
        let (endpoint, seen) = testing::refusing("old").await;
        let auth = ArmAuth::Command(testing::old_then_new("arm-401"));
        let arm = Arm::new(Some(&endpoint), "s", auth, Duration::from_millis(10));
        arm.get("/resourcegroups", RESOURCES_API).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["old", "new"]);
    }

    #[test]
    fn capacity_and_quota_answers_are_told_apart() {
        let http = |code: &str, message: &str| ArmError::Http {
            call: "PUT vm".into(),
            status: 409,
            code: code.into(),
            message: message.into(),
        };
        assert!(http("SkuNotAvailable", "The requested size ...").is_capacity());
        assert!(
            http(
                "OperationNotAllowed",
                "Operation could not be completed as it results in exceeding approved Total Regional Cores quota."
            )
            .is_capacity()
        );
        assert!(!http("OperationNotAllowed", "The VM is being deleted").is_capacity());
        assert!(!http("InvalidParameter", "adminUsername").is_capacity());
        let op = ArmError::Operation {
            call: "PUT vm".into(),
            status: "Failed".into(),
            code: "AllocationFailed".into(),
            message: "Allocation failed.".into(),
        };
        assert!(op.is_capacity());
    }

    #[test]
    fn ids_are_the_paths_under_the_subscription() {
        let arm = Arm::new(
            Some("http://127.0.0.1:1/"),
            "sub-1",
            ArmAuth::Bearer("t".into()),
            Duration::from_millis(1),
        );
        assert_eq!(
            arm.id("/resourceGroups/rg"),
            "/subscriptions/sub-1/resourceGroups/rg"
        );
        assert_eq!(
            arm.url("/resourcegroups?$filter=x", RESOURCES_API),
            "http://127.0.0.1:1/subscriptions/sub-1/resourcegroups?$filter=x&api-version=2025-04-01"
        );
    }
}
