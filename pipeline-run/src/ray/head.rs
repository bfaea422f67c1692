//! A Ray head's Jobs REST API (its dashboard's `/api/jobs/`), over HTTP: the thin driver of
//! [`super::jobs`].

use std::time::Duration;

use skyx_agent_api::error_chain;

use super::jobs::{JobDetails, Submission, Submitted, last_line, submitted};

/// How long one call to the head may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RayError {
    #[error("the Ray head at {head} did not answer: {why}")]
    Unreachable { head: String, why: String },
    #[error("the Ray head at {head} answered {status} to {what}: {why}")]
    Refused {
        head: String,
        what: String,
        status: u16,
        why: String,
    },
}

/// One Ray cluster's head, by its dashboard address (`http://HOST:8265`).
#[derive(Debug, Clone)]
pub struct RayHead {
    base: String,
    http: reqwest::Client,
}

impl RayHead {
    /// `address`: the dashboard's URL, `http://` or `https://`.
    pub fn new(address: &str) -> Result<RayHead, String> {
        let url =
            reqwest::Url::parse(address).map_err(|e| format!("{address}: not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{address}: expected the head's dashboard as http(s)://HOST:PORT"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            // The heads are named by the user: never through a proxy of the environment.
            .no_proxy()
            .build()
            .map_err(|e| format!("an HTTP client for {address}: {e}"))?;
        Ok(RayHead {
            base: address.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn address(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: reqwest::Error) -> RayError {
        RayError::Unreachable {
            head: self.base.clone(),
            why: error_chain(&e),
        }
    }

    /// Sends `request`; (status, body).
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), RayError> {
        let answer = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = answer.status().as_u16();
        let body = answer.text().await.map_err(|e| self.unreachable(e))?;
        Ok((status, body))
    }

    fn refused(&self, what: &str, status: u16, body: &str) -> RayError {
        RayError::Refused {
            head: self.base.clone(),
            what: what.to_string(),
            status,
            why: last_line(body),
        }
    }

    /// The head's Ray version (`GET /api/version`): that it is a Ray head, and answers.
    pub async fn version(&self) -> Result<String, RayError> {
        let (status, body) = self
            .call(self.http.get(format!("{}/api/version", self.base)))
            .await?;
        let version = (status == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v["ray_version"].as_str().map(String::from));
        version.ok_or_else(|| self.refused("GET /api/version", status, &body))
    }

    /// `POST /api/jobs/` (the trailing slash is Ray's).
    pub async fn submit(&self, submission: &Submission) -> Result<Submitted, RayError> {
        let (status, body) = self
            .call(
                self.http
                    .post(format!("{}/api/jobs/", self.base))
                    .json(submission),
            )
            .await?;
        Ok(submitted(status, &body))
    }

    /// `GET /api/jobs/{id}`; `None` when the head knows no such job.
    pub async fn details(&self, id: &str) -> Result<Option<JobDetails>, RayError> {
        let what = format!("GET /api/jobs/{id}");
        let (status, body) = self
            .call(self.http.get(format!("{}/api/jobs/{id}", self.base)))
            .await?;
        match status {
            200 => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| self.refused(&what, status, &format!("unreadable answer: {e}"))),
            404 => Ok(None),
            _ => Err(self.refused(&what, status, &body)),
        }
    }

    /// The job's whole log so far (`GET /api/jobs/{id}/logs`).
    pub async fn logs(&self, id: &str) -> Result<String, RayError> {
        let what = format!("GET /api/jobs/{id}/logs");
        let (status, body) = self
            .call(self.http.get(format!("{}/api/jobs/{id}/logs", self.base)))
            .await?;
        if status != 200 {
            return Err(self.refused(&what, status, &body));
        }
        let logs: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| self.refused(&what, status, &format!("unreadable answer: {e}")))?;
        Ok(logs["logs"].as_str().unwrap_or_default().to_string())
    }

    /// Stops the job (`POST /api/jobs/{id}/stop`): SIGTERM to its command and its children,
    /// SIGKILL a few seconds later. A job already ended or unknown is no error.
    pub async fn stop(&self, id: &str) -> Result<(), RayError> {
        let (status, body) = self
            .call(self.http.post(format!("{}/api/jobs/{id}/stop", self.base)))
            .await?;
        match status {
            200 | 404 => Ok(()),
            _ => Err(self.refused(&format!("POST /api/jobs/{id}/stop"), status, &body)),
        }
    }
}
