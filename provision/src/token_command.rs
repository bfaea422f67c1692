//! [`TokenCommand`]: a bearer token for a cloud's API that a command prints
//! (`gcloud auth print-access-token`, `az account get-access-token --query accessToken -o tsv`),
//! asked again when the token it gave is old or was refused.
//!
//! Why: a token passed once (`--gce-access-token`) lives about an hour, and a job that outlives
//! it could no longer delete its own VMs. A command the gateway runs again keeps the teardown
//! working however long the job runs, as kubectl's credential plugins do.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long a token is used before the command is asked again. gcloud and az print the
/// token they cached until a few minutes before it ends, so a token may be older than it
/// looks: asking often keeps most calls clear of that end, and a call refused with 401 asks
/// again at once.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// How long the command may run: one that hangs (a stalled network, a login prompt) would
/// otherwise hold every API call, the job's teardown among them.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the command gave no token. Each names the command line (which, like any command
/// line, should hold no secret: `ps` shows it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenCommandError {
    #[error("the access token command `{line}` could not start: {source}")]
    Start {
        line: String,
        source: std::io::Error,
    },
    #[error("the access token command `{line}` did not finish within {}s", RUN_TIMEOUT.as_secs())]
    Hung { line: String },
    #[error("the access token command `{line}` failed ({status}): {stderr}")]
    Failed {
        line: String,
        status: String,
        stderr: String,
    },
    #[error("the access token command `{line}` printed {what} (one word, the token, is expected)")]
    NoToken { line: String, what: &'static str },
}

/// A shell command line whose standard output is a bearer token.
pub struct TokenCommand {
    line: String,
    max_age: Duration,
    /// The last token and when the command gave it.
    cached: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for TokenCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The command line, never the token.
        f.debug_struct("TokenCommand")
            .field("line", &self.line)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl TokenCommand {
    /// `line` runs under `sh -c`; its token is used for [`DEFAULT_MAX_AGE`] at most.
    pub fn new(line: &str) -> TokenCommand {
        TokenCommand {
            line: line.to_string(),
            max_age: DEFAULT_MAX_AGE,
            cached: Mutex::new(None),
        }
    }

    /// The same, its token used for `max_age` at most.
    pub fn with_max_age(mut self, max_age: Duration) -> TokenCommand {
        self.max_age = max_age;
        self
    }

    /// The current token: the cached one while it is young, else the command's new one.
    /// Calls wait for one run of the command together.
    pub async fn token(&self) -> Result<String, TokenCommandError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, at)) = &*cached
            && at.elapsed() < self.max_age
        {
            return Ok(token.clone());
        }
        let token = self.run().await?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// The current token as an `Authorization` header's value.
    pub async fn header(&self) -> Result<String, TokenCommandError> {
        Ok(format!("Bearer {}", self.token().await?))
    }

    /// The API refused `token` (401; bare or as its header's value): the next call asks the
    /// command again. A token the command has replaced meanwhile is left alone (another call
    /// already refreshed it).
    pub async fn refused(&self, token: &str) {
        let token = token.trim_start_matches("Bearer ");
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == token) {
            *cached = None;
        }
    }

    async fn run(&self) -> Result<String, TokenCommandError> {
        let line = || self.line.clone();
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.line)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(RUN_TIMEOUT, run)
            .await
            .map_err(|_| TokenCommandError::Hung { line: line() })?
            .map_err(|source| TokenCommandError::Start {
                line: line(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(TokenCommandError::Failed {
                line: line(),
                status: out.status.to_string(),
                stderr: last.unwrap_or("(nothing on stderr)").trim().to_string(),
            });
        }
        let no_token = |what| TokenCommandError::NoToken { line: line(), what };
        let stdout =
            String::from_utf8(out.stdout).map_err(|_| no_token("bytes that are not text"))?;
        let token = stdout.trim();
        if token.is_empty() {
            return Err(no_token("nothing"));
        }
        if token.contains(char::is_whitespace) {
            return Err(no_token("more than one word"));
        }
        Ok(token.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that prints `token-N`, N counting its runs (kept in `dir/runs`).
    fn counting(dir: &std::path::Path) -> String {
        let runs = dir.join("runs").display().to_string();
        format!(
            "n=$(cat '{runs}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{runs}'; echo token-$n"
        )
    }

    #[tokio::test]
    async fn a_young_token_is_reused_and_a_refused_or_old_one_asked_again() {
        let dir = testing::scratch("token-cache");
        let command = TokenCommand::new(&counting(&dir)).with_max_age(Duration::from_secs(3600));
        assert_eq!(command.token().await.unwrap(), "token-1");
        assert_eq!(command.token().await.unwrap(), "token-1");
        // Refusing a token already replaced changes nothing.
        command.refused("token-0").await;
        assert_eq!(command.token().await.unwrap(), "token-1");
        command.refused("Bearer token-1").await;
        assert_eq!(command.token().await.unwrap(), "token-2");

        let always = TokenCommand::new(&counting(&dir)).with_max_age(Duration::ZERO);
        assert_eq!(always.token().await.unwrap(), "token-3");
        assert_eq!(always.token().await.unwrap(), "token-4");
    }

    #[tokio::test]
    async fn a_failing_or_silent_command_is_an_error_that_names_it() {
        let failing = TokenCommand::new("echo 'not logged in' >&2; exit 3");
        let err = failing.token().await.unwrap_err().to_string();
        assert!(
            err.contains("`echo 'not logged in'") && err.contains("): not logged in"),
            "{err}"
        );
        let silent = TokenCommand::new("true");
        let err = silent.token().await.unwrap_err().to_string();
        assert!(err.contains("printed nothing"), "{err}");
        let chatty = TokenCommand::new("echo two words");
        let err = chatty.token().await.unwrap_err().to_string();
        assert!(err.contains("printed more than one word"), "{err}");
    }
}

/// For the API clients' tests: a server that refuses one token, and a command whose token it
/// refuses at first.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An empty directory of the test's own, `name` (emptied first: a run that panicked may
    /// have left its files).
    pub(crate) fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("skyx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A command that prints "old" the first time and "new" after (its state in
    /// `scratch(name)`).
    pub(crate) fn old_then_new(name: &str) -> Arc<super::TokenCommand> {
        let flag = scratch(name).join("refreshed").display().to_string();
        let line = format!("if [ -e '{flag}' ]; then echo new; else touch '{flag}'; echo old; fi");
        Arc::new(super::TokenCommand::new(&line))
    }

    /// An HTTP server on loopback that answers 401 to a request whose bearer token is
    /// `refused`, and `{}` to any other; its base URL, and the tokens it was shown in turn.
    pub(crate) async fn refusing(refused: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let token = request
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: bearer "))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let (status, body) = if token == refused {
                    (
                        "401 Unauthorized",
                        r#"{"error":{"code":401,"message":"expired"}}"#,
                    )
                } else {
                    ("200 OK", "{}")
                };
                log.lock().unwrap().push(token);
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }
}
