//! A destination that throttles and refuses, answering as S3 documents it: a proxy on
//! loopback in front of the S3 server answers `503 SlowDown` whenever more than a few
//! requests are already in flight, and `403 AccessDenied` to opening the upload of one
//! object. The copy survives the throttling (retries, fewer requests at once), fails only the
//! refused object, names it, and lands every other object byte for byte.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::stores::{Kind, Scratch, env, read};

/// Requests the proxy lets through at once; any more is throttled.
const ACCEPTED_AT_ONCE: usize = 3;

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    throttled: AtomicUsize,
    refused: AtomicUsize,
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ))))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    upstream: Arc<String>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let opening_upload = req.method() == hyper::Method::POST
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "uploads"));
    if opening_upload && req.uri().path().contains("refused") {
        counts.refused.fetch_add(1, Ordering::SeqCst);
        return Ok(s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Access Denied",
        ));
    }
    if counts.in_flight.fetch_add(1, Ordering::SeqCst) >= ACCEPTED_AT_ONCE {
        counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        counts.throttled.fetch_add(1, Ordering::SeqCst);
        return Ok(s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ));
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let answer = client.request(forward.body(Full::new(body)).unwrap()).await;
    let response = match answer {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Response::from_parts(parts, Full::new(body))
        }
        Err(e) => s3_error(StatusCode::BAD_GATEWAY, "InternalError", &e.to_string()),
    };
    counts.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(response)
}

/// Starts the proxy on its own runtime; its URL and counts.
fn proxy() -> (String, Arc<Counts>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = Arc::new(
        env("SKYX_TEST_S3_ENDPOINT")
            .trim_end_matches('/')
            .to_string(),
    );
    let counts = Arc::new(Counts::default());
    let served = counts.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (upstream, counts) = (upstream.clone(), served.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, upstream.clone(), counts.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        })
    });
    (url, counts)
}

#[test]
fn a_throttling_destination_gets_every_object_but_the_one_it_refuses() {
    let s = Scratch::new("throttle");
    let src = s.dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("small-{i:02}"), vec![i as u8; 50_000 + i * 7]))
        .collect();
    files.push(("big.bin".into(), vec![5u8; 12 * 1024 * 1024]));
    files.push(("refused-big.bin".into(), vec![6u8; 12 * 1024 * 1024]));
    for (name, body) in &files {
        std::fs::write(src.join(name), body).unwrap();
    }
    let dst = s.root(Kind::S3, "throttled");
    let (proxy_url, counts) = proxy();
    let out = s.skyx(
        &[
            "cp",
            "-r",
            src.to_str().unwrap(),
            &format!("{dst}/"),
            "--dst-endpoint",
            &proxy_url,
            "--chunk-size",
            "5MiB",
            "--connections",
            "8",
            "--json",
            "--no-progress",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let failed = report["objects_failed"].as_array().expect("objects_failed");
    assert_eq!(failed.len(), 1, "{report}");
    assert!(
        failed[0]["key"]
            .as_str()
            .unwrap()
            .ends_with("refused-big.bin")
    );
    assert!(
        failed[0]["why"]
            .as_str()
            .unwrap()
            .contains("opening its upload"),
        "{report}"
    );
    assert!(counts.refused.load(Ordering::SeqCst) >= 1);
    assert!(
        counts.throttled.load(Ordering::SeqCst) > 0,
        "the proxy never throttled: the test proves nothing"
    );
    for (name, body) in &files {
        if name.starts_with("refused") {
            continue;
        }
        assert!(read(&format!("{dst}/{name}")) == *body, "{name} differs");
    }
}
