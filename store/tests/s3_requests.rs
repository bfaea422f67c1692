//! What the S3 store puts on the wire for an end's settings: a requester-pays end sends
//! `x-amz-request-payer: requester` on every request, signed; an anonymous end sends no
//! signature at all. A one-request HTTP server on loopback records what arrives (no S3 server
//! here checks either: moto and s3s-fs ignore the header).

use skyx_store::ObjectStore;
use skyx_store::s3::{S3Config, S3Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers one request with an empty 200 and returns the request's head, lowercased.
async fn one_request(listener: tokio::net::TcpListener) -> String {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the request's head");
        head.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"e\"\r\n\
              Last-Modified: Sat, 28 Nov 2026 00:00:00 GMT\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    String::from_utf8_lossy(&head).to_lowercase()
}

/// The head of the request a `head` of one object sends with `config`.
async fn request_with(mut config: S3Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.endpoint = Some(format!("http://{}", listener.local_addr().unwrap()));
    config.region = Some("us-east-1".into());
    let server = tokio::spawn(one_request(listener));
    let store = S3Store::new("bucket", &config, skyx_store::RetryPolicy::default())
        .await
        .unwrap();
    store.head("key").await.unwrap();
    server.await.unwrap()
}

fn signed_headers(request: &str) -> String {
    let auth = request
        .lines()
        .find(|l| l.starts_with("authorization:"))
        .unwrap_or_else(|| panic!("no authorization header in {request}"));
    auth.split("signedheaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_requester_pays_end_signs_the_header_into_every_request() {
    let keys = Some(("AKIDEXAMPLE".to_string(), "secret".to_string()));
    let paying = request_with(S3Config {
        static_credentials: keys.clone(),
        requester_pays: true,
        ..S3Config::default()
    })
    .await;
    assert!(
        paying.contains("\r\nx-amz-request-payer: requester\r\n"),
        "{paying}"
    );
    assert!(
        signed_headers(&paying)
            .split(';')
            .any(|h| h == "x-amz-request-payer")
    );
    let plain = request_with(S3Config {
        static_credentials: keys,
        ..S3Config::default()
    })
    .await;
    assert!(!plain.contains("x-amz-request-payer"), "{plain}");
}

#[tokio::test]
async fn an_anonymous_end_sends_no_signature() {
    let anonymous = request_with(S3Config {
        static_credentials: Some(("AKIDEXAMPLE".into(), "secret".into())),
        anonymous: true,
        ..S3Config::default()
    })
    .await;
    assert!(!anonymous.contains("authorization:"), "{anonymous}");
}
