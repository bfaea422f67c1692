//! Which AMI an agent VM boots: an id given per region, or the one a public SSM parameter
//! names in the region (AMI ids differ per region and change with every release; the
//! distributions publish their latest under fixed parameter names).

use std::collections::BTreeMap;

/// Debian 12's latest amd64 AMI in each region, as Debian publishes it. Debian, because the
/// agent binary is built on Debian 12 and needs its glibc or newer (Amazon Linux 2023's is
/// older); its cloud images carry cloud-init, systemd, curl and sha256sum, all the bootstrap
/// needs.
pub const DEFAULT_IMAGE_PARAMETER: &str = "/aws/service/debian/release/12/latest/amd64";

/// The image of one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// This AMI (`ami-0abc…`; ids are per region).
    Ami(String),
    /// The AMI the SSM parameter of this name holds in the region (`/aws/service/…`).
    Parameter(String),
}

impl Image {
    /// `ami-…` or `ssm:/parameter/name`.
    pub fn parse(text: &str) -> Result<Image, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("ssm:") {
            if name.starts_with('/') && name.len() > 1 && !name.contains(char::is_whitespace) {
                return Ok(Image::Parameter(name.to_string()));
            }
            return Err(format!(
                "'{text}': an SSM parameter name starts with /, e.g. ssm:{DEFAULT_IMAGE_PARAMETER}"
            ));
        }
        if text.starts_with("ami-")
            && text.len() > 4
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Ok(Image::Ami(text.to_string()));
        }
        Err(format!(
            "'{text}': expected an AMI id (ami-0abc1234) or an SSM parameter (ssm:/aws/service/...)"
        ))
    }
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Image::Ami(id) => f.write_str(id),
            Image::Parameter(name) => write!(f, "ssm:{name}"),
        }
    }
}

/// The image of every region: named ones, and one for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub per_region: BTreeMap<String, Image>,
    pub otherwise: Image,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            per_region: BTreeMap::new(),
            otherwise: Image::Parameter(DEFAULT_IMAGE_PARAMETER.into()),
        }
    }
}

impl Images {
    /// The image of `region` (`us-east-1`).
    pub fn of(&self, region: &str) -> &Image {
        self.per_region.get(region).unwrap_or(&self.otherwise)
    }
}

/// The AMI `image` names in the region `ssm` serves.
pub async fn resolve(ssm: &aws_sdk_ssm::Client, image: &Image) -> Result<String, String> {
    let name = match image {
        Image::Ami(id) => return Ok(id.clone()),
        Image::Parameter(name) => name,
    };
    let out = ssm
        .get_parameter()
        .name(name)
        .send()
        .await
        .map_err(|e| {
            format!(
                "looking up the image in SSM parameter {name}: {} (name an AMI with --ec2-image REGION=ami-...)",
                aws_sdk_ssm::error::DisplayErrorContext(e)
            )
        })?;
    let value = out
        .parameter()
        .and_then(|p| p.value())
        .unwrap_or_default()
        .trim();
    match Image::parse(value) {
        Ok(Image::Ami(id)) => Ok(id),
        _ => Err(format!(
            "SSM parameter {name} holds '{value}', not an AMI id"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_ami_ids_or_ssm_parameters() {
        assert_eq!(
            Image::parse("ami-0abc12").unwrap(),
            Image::Ami("ami-0abc12".into())
        );
        assert_eq!(
            Image::parse("ssm:/aws/service/x").unwrap(),
            Image::Parameter("/aws/service/x".into())
        );
        for bad in ["ami-", "abc", "ssm:aws/x", "ssm:/a b", "ami-0a;rm"] {
            assert!(Image::parse(bad).is_err(), "{bad}");
        }
        let images = Images {
            per_region: [("eu-west-1".to_string(), Image::Ami("ami-1".into()))].into(),
            ..Images::default()
        };
        assert_eq!(images.of("eu-west-1"), &Image::Ami("ami-1".into()));
        assert_eq!(
            images.of("us-east-1"),
            &Image::Parameter(DEFAULT_IMAGE_PARAMETER.into())
        );
    }
}
