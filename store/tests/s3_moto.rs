//! S3 behaviour s3s-fs does not have, checked against moto, which refuses as S3 does: a
//! `MetadataDirective: COPY` of an object onto its own key ("This copy request is illegal
//! because it is trying to copy an object to itself without changing the object's
//! metadata..."). Needs the test servers (`deploy/test-servers.sh`): moto is the EC2 one.

use bytes::Bytes;
use skyx_store::retry::RetryPolicy;
use skyx_store::s3::{S3Config, S3Store};
use skyx_store::{ObjectStore, ObjectStoreExt, Properties};

fn moto() -> S3Config {
    S3Config {
        endpoint: Some(std::env::var("SKYX_TEST_EC2_ENDPOINT").expect("SKYX_TEST_EC2_ENDPOINT")),
        region: Some("us-east-1".into()),
        static_credentials: Some(("moto".into(), "moto".into())),
        profile: None,
        force_path_style: true,
        ..S3Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_keeping_properties_onto_its_own_key_is_written_back_with_them() {
    let bucket = format!(
        "skyx-self-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let sdk = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(moto().endpoint.unwrap())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "moto", "moto", None, None, "test",
            ))
            .build(),
    );
    sdk.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = S3Store::new(&bucket, &moto(), RetryPolicy::never())
        .await
        .unwrap();
    let mut props = Properties {
        content_type: Some("text/html".into()),
        ..Properties::default()
    };
    props.user.insert("team".into(), "blue".into());
    let data = Bytes::from_static(b"<h1>mine</h1>");
    store.put_with("k", data.clone(), &props).await.unwrap();
    let before = store.properties("k").await.unwrap();
    let meta = store.head("k").await.unwrap();
    store
        .copy_keeping(&store.copy_source(&meta), "k")
        .await
        .unwrap_or_else(|e| panic!("a copy onto its own key: {e}"))
        .expect("a small object is copied keeping its properties");
    assert_eq!(store.get("k").await.unwrap(), data);
    assert_eq!(store.properties("k").await.unwrap(), before);
}
