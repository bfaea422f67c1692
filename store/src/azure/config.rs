//! Azure credentials: what `AzureConfig` holds and reads from the environment, the connection
//! string's fields, and the Entra ID token source (a service principal, the VM's managed
//! identity, or the developer tools' login).

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};

/// Credentials and endpoint overrides; `from_env` reads the standard Azure variables.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    pub connection_string: Option<String>,
    pub sas_token: Option<String>,
    /// Account key (base64), with the account it belongs to.
    pub account_key: Option<(String, String)>,
    /// Use the VM's managed identity for Entra ID tokens.
    pub managed_identity: bool,
    /// Which of the VM's identities: a user-assigned one's resource id (`/subscriptions/…`)
    /// or client id; `None`: the system-assigned identity.
    pub managed_identity_id: Option<String>,
    /// An Entra ID service principal: (tenant id, client id, client secret).
    pub client_secret: Option<(String, String, String)>,
    /// The blob endpoint (else a connection string's `BlobEndpoint`, else
    /// `https://ACCOUNT.blob.core.windows.net`): set only by a flag or a remote, it wins.
    pub endpoint: Option<String>,
    /// No credentials at all: a container with public read access.
    pub anonymous: bool,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |set: bool| if set { "<secret>" } else { "-" };
        f.debug_struct("AzureConfig")
            .field(
                "connection_string",
                &secret(self.connection_string.is_some()),
            )
            .field("sas_token", &secret(self.sas_token.is_some()))
            .field(
                "account_key",
                &self.account_key.as_ref().map(|(a, _)| (a, "<secret>")),
            )
            .field("managed_identity", &self.managed_identity)
            .field("managed_identity_id", &self.managed_identity_id)
            .field(
                "client_secret",
                &self
                    .client_secret
                    .as_ref()
                    .map(|(t, c, _)| (t, c, "<secret>")),
            )
            .field("endpoint", &self.endpoint)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl AzureConfig {
    pub fn from_env() -> Self {
        Self::from_lookup(&crate::env_var)
    }

    /// As `from_env`, reading variables through `var`.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Self {
        let identity = var("SKYX_AZURE_MANAGED_IDENTITY").filter(|v| !v.is_empty() && v != "0");
        AzureConfig {
            connection_string: var("AZURE_STORAGE_CONNECTION_STRING"),
            sas_token: var("AZURE_STORAGE_SAS_TOKEN"),
            account_key: var("AZURE_STORAGE_ACCOUNT").zip(var("AZURE_STORAGE_KEY")),
            // `1`: the system-assigned identity; a resource id or client id: that one.
            managed_identity: identity.is_some(),
            managed_identity_id: identity.filter(|v| v != "1"),
            client_secret: match (
                var("AZURE_TENANT_ID"),
                var("AZURE_CLIENT_ID"),
                var("AZURE_CLIENT_SECRET"),
            ) {
                (Some(tenant), Some(client), Some(secret)) => Some((tenant, client, secret)),
                _ => None,
            },
            endpoint: None,
            anonymous: false,
        }
    }
}

impl AzureConfig {
    /// Whether these settings name how to authenticate (a credential, or anonymous access).
    pub fn names_credentials(&self) -> bool {
        self.connection_string.is_some()
            || self.sas_token.is_some()
            || self.account_key.is_some()
            || self.managed_identity
            || self.client_secret.is_some()
            || self.anonymous
    }

    /// Where the store is, without how to authenticate: what another machine is told when
    /// the credentials are this one's own (its environment's), not the end's.
    pub fn without_credentials(&self) -> AzureConfig {
        AzureConfig {
            endpoint: self.endpoint.clone(),
            anonymous: self.anonymous,
            ..AzureConfig::default()
        }
    }

    /// These settings, authenticating with `own`'s credentials when they name none: an agent
    /// told where a store is reaches it as itself (its keys, its VM's identity).
    pub fn or_credentials_of(self, own: &AzureConfig) -> AzureConfig {
        if self.names_credentials() {
            return self;
        }
        AzureConfig {
            endpoint: self.endpoint.or_else(|| own.endpoint.clone()),
            ..own.clone()
        }
    }
}

/// Fields of a storage connection string that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ConnectionString {
    pub(super) account: Option<String>,
    pub(super) key: Option<String>,
    pub(super) sas: Option<String>,
    pub(super) blob_endpoint: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) suffix: Option<String>,
}

fn parse_connection_string(s: &str) -> ConnectionString {
    let mut out = ConnectionString::default();
    for part in s.split(';').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "AccountName" => out.account = Some(v),
            "AccountKey" => out.key = Some(v),
            "SharedAccessSignature" => out.sas = Some(v),
            "BlobEndpoint" => out.blob_endpoint = Some(v),
            "DefaultEndpointsProtocol" => out.protocol = Some(v),
            "EndpointSuffix" => out.suffix = Some(v),
            _ => {}
        }
    }
    out
}

/// The connection string's settings, when it is for `account`.
pub(super) fn connection_for(config: &AzureConfig, account: &str) -> Option<ConnectionString> {
    config
        .connection_string
        .as_deref()
        .map(parse_connection_string)
        .filter(|c| c.account.as_deref() == Some(account))
}

/// Whether a store of `account` reached with `config` can hand out URLs another account's
/// service can read: it signs them (a SAS, or an account key to sign one) or needs no signature
/// (anonymous, a public container). Entra ID credentials sign nothing.
pub(crate) fn url_readable_elsewhere(config: &AzureConfig, account: &str) -> bool {
    let conn = connection_for(config, account);
    conn.as_ref()
        .is_some_and(|c| c.sas.is_some() || c.key.is_some())
        || config.sas_token.is_some()
        || config
            .account_key
            .as_ref()
            .is_some_and(|(a, _)| a == account)
        || config.anonymous
}

/// The blob service endpoint of `account`, and whether it is a custom one (a connection
/// string's `BlobEndpoint` or a configured endpoint: an emulator or a private endpoint) rather
/// than the public service's.
pub(crate) fn blob_endpoint(config: &AzureConfig, account: &str) -> (String, bool) {
    let conn = connection_for(config, account);
    // An endpoint the user gave for this end wins over the one of a connection string, which
    // may be this machine's own (an agent told where the end's store is keeps its own keys).
    match config
        .endpoint
        .clone()
        .or_else(|| conn.as_ref().and_then(|c| c.blob_endpoint.clone()))
    {
        Some(e) => (e, true),
        None => {
            let proto = conn
                .as_ref()
                .and_then(|c| c.protocol.clone())
                .unwrap_or_else(|| "https".into());
            let suffix = conn
                .as_ref()
                .and_then(|c| c.suffix.clone())
                .unwrap_or_else(|| "core.windows.net".into());
            (format!("{proto}://{account}.blob.{suffix}"), false)
        }
    }
}

pub(super) fn entra_credential(
    config: &AzureConfig,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    if let Some((tenant, client, secret)) = &config.client_secret {
        return Ok(azure_identity::ClientSecretCredential::new(
            tenant,
            client.clone(),
            Secret::new(secret.clone()),
            None,
        )?);
    }
    if config.managed_identity {
        use azure_identity::UserAssignedId;
        let user_assigned_id = config.managed_identity_id.as_ref().map(|id| {
            if id.starts_with('/') {
                UserAssignedId::ResourceId(id.clone())
            } else {
                UserAssignedId::ClientId(id.clone())
            }
        });
        return Ok(azure_identity::ManagedIdentityCredential::new(Some(
            azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id,
                ..Default::default()
            },
        ))?);
    }
    Ok(azure_identity::DeveloperToolsCredential::new(None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_name_no_credential_take_the_agents_own() {
        let own = AzureConfig {
            managed_identity: true,
            endpoint: Some("https://own.example".into()),
            ..AzureConfig::default()
        };
        let told = AzureConfig {
            endpoint: Some("https://told.example".into()),
            ..AzureConfig::default()
        };
        let used = told.clone().or_credentials_of(&own);
        assert!(used.managed_identity);
        assert_eq!(used.endpoint.as_deref(), Some("https://told.example"));
        // Settings that name a credential keep it.
        let keyed = AzureConfig {
            sas_token: Some("sv=1".into()),
            ..told
        };
        assert_eq!(keyed.clone().or_credentials_of(&own), keyed);
        let stripped = keyed.without_credentials();
        assert!(!stripped.names_credentials());
        assert_eq!(stripped.endpoint.as_deref(), Some("https://told.example"));
    }

    #[test]
    fn connection_strings_parse() {
        let c = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        );
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.key.as_deref(), Some("a2V5"));
        assert_eq!(
            c.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
    }

    #[test]
    fn the_managed_identity_variable_names_the_system_one_or_a_user_assigned_one() {
        let with = |value: &str| {
            AzureConfig::from_lookup(&|k| {
                (k == "SKYX_AZURE_MANAGED_IDENTITY").then(|| value.to_string())
            })
        };
        let system = with("1");
        assert!(system.managed_identity && system.managed_identity_id.is_none());
        let id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/skyx";
        let user = with(id);
        assert!(user.managed_identity);
        assert_eq!(user.managed_identity_id.as_deref(), Some(id));
        assert!(!with("0").managed_identity && !with("").managed_identity);
        // Either way, a token source is made without touching the network.
        assert!(entra_credential(&user).is_ok() && entra_credential(&system).is_ok());
    }
}
