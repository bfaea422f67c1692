//! How to reach S3 for one end: endpoint, region, credentials, anonymous access and
//! requester-pays, from the environment (what the AWS CLI reads) or given per end.

/// How to reach S3. Every field is optional; unset fields come from the standard AWS chain.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (the chain's `AWS_ENDPOINT_URL` otherwise).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Static access key and secret (the chain otherwise).
    pub static_credentials: Option<(String, String)>,
    pub profile: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); implied by a custom endpoint.
    pub force_path_style: bool,
    /// Unsigned requests (the AWS CLI's `--no-sign-request`): public buckets, no credentials.
    pub anonymous: bool,
    /// Every request says the requester pays (`x-amz-request-payer: requester`), as
    /// requester-pays buckets demand.
    pub requester_pays: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "static_credentials",
                &self
                    .static_credentials
                    .as_ref()
                    .map(|(id, _)| (id, "<secret>")),
            )
            .field("profile", &self.profile)
            .field("force_path_style", &self.force_path_style)
            .field("anonymous", &self.anonymous)
            .field("requester_pays", &self.requester_pays)
            .finish()
    }
}

/// Adds `x-amz-request-payer: requester` to every request before it is signed.
#[derive(Debug)]
pub(super) struct RequesterPays;

impl aws_sdk_s3::config::Intercept for RequesterPays {
    fn name(&self) -> &'static str {
        "RequesterPays"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-request-payer", "requester");
        Ok(())
    }
}

impl S3Config {
    /// Reads what the AWS CLI reads, plus `SKYX_S3_FORCE_PATH_STYLE=1`.
    pub fn from_env() -> Self {
        // Region, keys (with session tokens) and profile: the SDK's own chain reads them.
        S3Config {
            region: None,
            static_credentials: None,
            profile: None,
            ..Self::from_lookup(&crate::env_var)
        }
    }

    /// As `from_env`, reading variables through `var` (for configurations kept elsewhere, such
    /// as one region of an emulated sky). Credentials given there are used as static keys.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Self {
        let endpoint = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"));
        let force = var("SKYX_S3_FORCE_PATH_STYLE").is_some_and(|v| v == "1" || v == "true");
        S3Config {
            force_path_style: force || endpoint.is_some(),
            endpoint,
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            static_credentials: var("AWS_ACCESS_KEY_ID").zip(var("AWS_SECRET_ACCESS_KEY")),
            profile: var("AWS_PROFILE"),
            anonymous: false,
            requester_pays: false,
        }
    }
}
