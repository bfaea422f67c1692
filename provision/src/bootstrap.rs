//! What a new agent VM is handed to boot with, for every cloud: `deploy/agent/bootstrap.sh`
//! (install the pinned agent, find the VM's address, start the systemd unit), delivered as
//! cloud-init user data on EC2 and Azure ([`cloud_init`]) and as a `startup-script` on GCE,
//! whose Debian images run no cloud-init ([`startup_script`]). Everything that goes into a
//! shell script is checked first: a name, URL, pin, token or address a shell would read
//! differently never reaches one.

use std::net::IpAddr;

use base64::Engine as _;

use crate::AgentBinary;

/// The systemd unit, cloud-init template, GCE startup script and bootstrap in `deploy/agent/`.
pub const AGENT_SERVICE: &str = include_str!("../../deploy/agent/skyx-agent.service");
pub const CLOUD_INIT_TEMPLATE: &str = include_str!("../../deploy/agent/cloud-init.yaml");
pub const STARTUP_SCRIPT_TEMPLATE: &str = include_str!("../../deploy/agent/startup-script.sh");
pub const BOOTSTRAP_TEMPLATE: &str = include_str!("../../deploy/agent/bootstrap.sh");

/// The agents' control port: where `deploy/agent/skyx-agent.service` starts them.
pub const CONTROL_PORT: u16 = 7443;

/// Where the bootstrap learns the address peers reach the VM at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// EC2's metadata service, with an IMDSv2 token.
    Ec2Metadata,
    /// GCE's metadata server (`Metadata-Flavor: Google`).
    GceMetadata,
    /// Given by the gateway (Azure's metadata service names no Standard public address).
    Given(IpAddr),
}

/// One agent's boot: who it is and what it trusts.
#[derive(Debug, Clone, Copy)]
pub struct Boot<'a> {
    pub name: &'a str,
    /// The launch token (a secret: it is only ever in the VM's own user data or metadata).
    pub token: &'a str,
    /// The gateway's certificate, base64 DER ([`crate::cert_env`]).
    pub gateway_cert: &'a str,
    pub agent: &'a AgentBinary,
    pub address: Address,
    /// The managed identity an Azure VM's agent reaches Azure stores as when the job gives
    /// an Azure end no credential of its own (a user-assigned identity's resource id).
    pub store_identity: Option<&'a str>,
}

/// Why a bootstrap could not be rendered: what would go into its shell script is not safe to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The agent binary's URL or pin.
    #[error(transparent)]
    Binary(#[from] crate::BinaryError),
    /// An agent name with characters a shell would read.
    #[error("agent name '{0}': letters, digits and :#-_. only")]
    Name(String),
    /// A token or certificate that is not the hex or base64 the gateway makes.
    #[error("the launch token or certificate has characters a shell would read")]
    Secret,
    /// A managed identity's resource id with characters no resource id has.
    #[error("managed identity '{0}': a resource id has letters, digits and /._()- only")]
    Identity(String),
}

/// cloud-init user data (EC2, Azure): writes the token, certificate, unit and bootstrap, then
/// runs the bootstrap.
pub fn cloud_init(boot: &Boot<'_>) -> Result<String, BootError> {
    writing_files(CLOUD_INIT_TEMPLATE, boot)
}

/// A GCE `startup-script`: the same files written by a shell script, then the bootstrap.
pub fn startup_script(boot: &Boot<'_>) -> Result<String, BootError> {
    writing_files(STARTUP_SCRIPT_TEMPLATE, boot)
}

/// `template` (one of the two ways a VM is handed its files) with every placeholder filled.
fn writing_files(template: &str, boot: &Boot<'_>) -> Result<String, BootError> {
    let bootstrap = bootstrap(boot)?;
    Ok(template
        .replace("@TOKEN@", boot.token)
        .replace("@GATEWAY_CERT_B64@", boot.gateway_cert)
        .replace("@SERVICE_B64@", &b64(AGENT_SERVICE))
        .replace("@BOOTSTRAP_B64@", &b64(&bootstrap)))
}

/// `deploy/agent/bootstrap.sh` with every placeholder filled, each value checked.
pub fn bootstrap(boot: &Boot<'_>) -> Result<String, BootError> {
    boot.agent.check()?;
    if !plain_name(boot.name) {
        return Err(BootError::Name(boot.name.to_string()));
    }
    if !plain_secret(boot.token) || !plain_secret(boot.gateway_cert) {
        return Err(BootError::Secret);
    }
    let identity = boot.store_identity.unwrap_or("");
    if !identity
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '(' | ')' | '-'))
    {
        return Err(BootError::Identity(identity.to_string()));
    }
    let (cloud, address) = match boot.address {
        Address::Ec2Metadata => ("aws", String::new()),
        Address::GceMetadata => ("gcp", String::new()),
        Address::Given(ip) => ("azure", ip.to_string()),
    };
    Ok(BOOTSTRAP_TEMPLATE
        .replace("@AGENT_URL@", boot.agent.url.as_deref().unwrap_or(""))
        .replace("@AGENT_SHA256@", boot.agent.sha256.as_deref().unwrap_or(""))
        .replace("@CLOUD@", cloud)
        .replace("@ADDRESS@", &address)
        .replace("@STORE_IDENTITY@", identity)
        .replace("@NAME@", boot.name))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Whether `name` can stand in a shell script (`aws:us-east-1#0`, `stage-2`).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '#' | '-' | '_' | '.'))
}

/// Whether a token (hex) or certificate (base64) can stand between single quotes (no quote,
/// space or control character; what the gateway makes is far narrower).
fn plain_secret(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> AgentBinary {
        AgentBinary::download("https://example.invalid/skyx-agent", &"ab".repeat(32)).unwrap()
    }

    fn boot<'a>(agent: &'a AgentBinary, address: Address) -> Boot<'a> {
        Boot {
            name: "gcp:us-east1#0",
            token: "00ff",
            gateway_cert: "TUlJQw==",
            agent,
            address,
            store_identity: None,
        }
    }

    #[test]
    fn every_placeholder_is_filled_for_every_cloud() {
        let agent = agent();
        for address in [
            Address::Ec2Metadata,
            Address::GceMetadata,
            Address::Given("203.0.113.9".parse().unwrap()),
        ] {
            let b = boot(&agent, address);
            for text in [cloud_init(&b).unwrap(), startup_script(&b).unwrap()] {
                assert!(!text.contains('@'), "{text}");
            }
            assert!(!bootstrap(&b).unwrap().contains('@'));
        }
        let given = bootstrap(&boot(
            &agent,
            Address::Given("203.0.113.9".parse().unwrap()),
        ));
        assert!(given.unwrap().contains("ADDRESS='203.0.113.9'"));
        let gce = bootstrap(&boot(&agent, Address::GceMetadata)).unwrap();
        assert!(
            gce.contains("CLOUD='gcp'") && gce.contains("ADDRESS=''"),
            "{gce}"
        );
    }

    #[test]
    fn what_a_shell_would_read_is_refused() {
        let agent = agent();
        let mut b = boot(&agent, Address::GceMetadata);
        b.name = "x'; reboot; '";
        assert!(matches!(startup_script(&b), Err(BootError::Name(_))));
        let mut b = boot(&agent, Address::GceMetadata);
        b.token = "ab'cd";
        assert!(matches!(startup_script(&b), Err(BootError::Secret)));
        let bad = AgentBinary {
            url: Some("https://x.invalid/a b".into()),
            sha256: Some("ab".repeat(32)),
        };
        let b = boot(&bad, Address::Ec2Metadata);
        assert!(matches!(cloud_init(&b), Err(BootError::Binary(_))));
        let mut b = boot(&agent, Address::Ec2Metadata);
        b.store_identity = Some("/subscriptions/x/resourceGroups/g'; reboot; '");
        assert!(matches!(cloud_init(&b), Err(BootError::Identity(_))));
    }

    #[test]
    fn an_azure_vms_identity_is_what_its_agent_reaches_azure_stores_as() {
        let agent = agent();
        let id = "/subscriptions/5b7e4c1a-0d2f-4e6b-9a8c-3f1e2d4c5b6a/resourceGroups/data(eu)\
                  /providers/Microsoft.ManagedIdentity/userAssignedIdentities/skyx-agents";
        let mut b = boot(&agent, Address::Given("203.0.113.9".parse().unwrap()));
        b.store_identity = Some(id);
        let script = bootstrap(&b).unwrap();
        assert!(
            script.contains(&format!(
                "printf 'SKYX_AZURE_MANAGED_IDENTITY=%s\\n' '{id}' >>/etc/skyx/agent.env"
            )),
            "{script}"
        );
        // Without one, the line writes nothing.
        let none = bootstrap(&boot(&agent, Address::GceMetadata)).unwrap();
        assert!(none.contains("[ -z '' ] ||"), "{none}");
    }
}
