//! Accepting connections that survives descriptor pressure: an accept error (EMFILE/ENFILE when
//! the process or system is out of file descriptors, ECONNABORTED) is logged and retried with
//! backoff instead of ending the listener, so an agent under load recovers once descriptors
//! free up rather than going deaf for the rest of its job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one listener lets prove themselves at once. A connection that never finishes
/// its handshake holds a slot for the handshake timeout at most; past this many, the listener
/// accepts no more until slots free (the kernel's backlog holds the rest), so strangers who
/// connect and say nothing cannot pile up tasks and descriptors.
pub const MAX_HANDSHAKING: usize = 256;

/// The next connection on `listener`, once one of `slots` is free: hold the slot until the
/// connection has proved itself.
pub async fn accept_with_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    what: &str,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the slots are never closed");
    let (stream, peer) = accept_next(listener, what).await;
    (stream, peer, slot)
}

/// The next connection on `listener`; errors are waited out (10 ms doubling to 1 s).
pub async fn accept_next(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (many connections per
/// hop, many files at a local destination); returns the limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_one() {
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        assert_eq!(raise_nofile_limit(), hard);
    }
}
