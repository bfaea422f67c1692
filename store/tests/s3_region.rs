//! A bucket in another region than the client signs for. S3 answers such requests with `301
//! PermanentRedirect` (HEAD: no body) or `400 AuthorizationHeaderMalformed`, naming the
//! bucket's region in `x-amz-bucket-region`; the store must follow once and carry on, not
//! surface a permission error. A proxy on loopback answers exactly so for any request not
//! signed for eu-west-1, and forwards the rest to the real S3 server of the test servers
//! (s3s-fs, which checks every signature).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skyx_store::ObjectStore;
use skyx_store::s3::{S3Config, S3Store};

const BUCKET_REGION: &str = "eu-west-1";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start the test servers"))
}

#[derive(Default)]
struct Counts {
    redirected: AtomicUsize,
    forwarded: AtomicUsize,
}

/// The region a SigV4 request is signed for (`Credential=AK/DATE/REGION/s3/aws4_request`).
fn signed_region(req: &Request<Incoming>) -> Option<String> {
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(2).map(str::to_string)
}

async fn handle(
    req: Request<Incoming>,
    upstream: Arc<String>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if signed_region(&req).as_deref() != Some(BUCKET_REGION) {
        counts.redirected.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if req.method() == hyper::Method::HEAD {
            (StatusCode::MOVED_PERMANENTLY, String::new())
        } else if req.method() == hyper::Method::PUT {
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting '{BUCKET_REGION}'</Message><Region>{BUCKET_REGION}</Region></Error>"
                ),
            )
        } else {
            (
                StatusCode::MOVED_PERMANENTLY,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message></Error>".to_string(),
            )
        };
        return Ok(Response::builder()
            .status(status)
            .header("x-amz-bucket-region", BUCKET_REGION)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    counts.forwarded.fetch_add(1, Ordering::SeqCst);
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
    let answer = client
        .request(forward.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (mut parts, body) = answer.into_parts();
    parts
        .headers
        .insert("x-amz-bucket-region", BUCKET_REGION.parse().unwrap());
    let body = body.collect().await.unwrap().to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// Starts the proxy; its URL and what it has counted.
async fn proxy() -> (String, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = Arc::new(
        env("SKYX_TEST_S3_ENDPOINT")
            .trim_end_matches('/')
            .to_string(),
    );
    let counts = Arc::new(Counts::default());
    let served = counts.clone();
    tokio::spawn(async move {
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
    });
    (url, counts)
}

fn config(endpoint: &str, region: Option<&str>) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_string()),
        region: region.map(str::to_string),
        static_credentials: Some((
            env("SKYX_TEST_S3_ACCESS_KEY"),
            env("SKYX_TEST_S3_SECRET_KEY"),
        )),
        force_path_style: true,
        ..S3Config::default()
    }
}

async fn bucket() -> String {
    let name = format!("region-{}-{}", std::process::id(), rand_suffix());
    let direct = S3Store::new(
        &name,
        &config(&env("SKYX_TEST_S3_ENDPOINT"), Some("us-east-1")),
        skyx_store::RetryPolicy::default(),
    )
    .await
    .unwrap();
    direct.create_bucket().await.unwrap();
    name
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[tokio::test]
async fn a_store_without_a_region_asks_the_bucket_and_signs_for_its_region() {
    let bucket = bucket().await;
    let (url, counts) = proxy().await;
    let store = S3Store::new(
        &bucket,
        &config(&url, None),
        skyx_store::RetryPolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(store.region(), BUCKET_REGION);
    assert_eq!(
        counts.redirected.load(Ordering::SeqCst),
        1,
        "the HeadBucket"
    );
    store
        .put("a/b", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let listed: Vec<_> = store.list("a/").try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(store.head("a/b").await.unwrap().size, 5);
    // Nothing more was redirected: every later request was signed for the bucket's region.
    assert_eq!(counts.redirected.load(Ordering::SeqCst), 1);
    assert!(counts.forwarded.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_store_signing_for_the_wrong_region_follows_the_redirect_once() {
    let bucket = bucket().await;
    let (url, counts) = proxy().await;
    // The user said us-east-1: no HeadBucket first; the first request is refused.
    let store = S3Store::new(
        &bucket,
        &config(&url, Some("us-east-1")),
        skyx_store::RetryPolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(counts.redirected.load(Ordering::SeqCst), 0);
    // A PUT refused with 400 AuthorizationHeaderMalformed, repeated in eu-west-1.
    store.put("x", Bytes::from_static(b"data")).await.unwrap();
    assert_eq!(counts.redirected.load(Ordering::SeqCst), 1);
    assert_eq!(store.region(), BUCKET_REGION);
    let up = store.create_multipart("big").await.unwrap();
    let part = store
        .put_part(&up, 1, Bytes::from(vec![7u8; 1024]))
        .await
        .unwrap();
    store.complete_multipart(&up, vec![part]).await.unwrap();
    assert_eq!(store.head("big").await.unwrap().size, 1024);
    assert_eq!(counts.redirected.load(Ordering::SeqCst), 1);

    // A HEAD (301, no body) on a fresh store signing for us-east-1 is followed the same way.
    let (url, counts) = proxy().await;
    let store = S3Store::new(
        &bucket,
        &config(&url, Some("us-east-1")),
        skyx_store::RetryPolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(store.head("x").await.unwrap().size, 4);
    assert_eq!(counts.redirected.load(Ordering::SeqCst), 1);
}
