//! Region identifiers (`cloud:region[-zone]`) and where each region is on the map.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CatalogError;

/// A public cloud provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Azure,
    Gcp,
}

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Azure, Cloud::Gcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
            Cloud::Gcp => "gcp",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cloud {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "aws" => Ok(Cloud::Aws),
            "azure" | "az" => Ok(Cloud::Azure),
            "gcp" | "gcs" | "google" => Ok(Cloud::Gcp),
            _ => Err(CatalogError::UnknownCloud(s.to_string())),
        }
    }
}

/// A region id exactly as the measurement grids spell it: `aws:us-east-1`, `azure:westeurope`,
/// `gcp:us-central1-a` (GCP ids carry the zone the VM ran in).
///
/// Parsing checks the syntax only; whether the catalog knows the region is the catalog's question
/// (`Catalog::resolve_region`), because users may bring grids with regions we have never seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId {
    cloud: Cloud,
    name: String,
}

impl RegionId {
    pub fn new(cloud: Cloud, name: &str) -> Result<Self, CatalogError> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(CatalogError::BadRegionId {
                id: format!("{cloud}:{name}"),
                why: "the region part may only hold lowercase letters, digits and '-'".into(),
            });
        }
        Ok(RegionId {
            cloud,
            name: name.to_string(),
        })
    }

    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    /// The region (or GCP zone) name without the cloud prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region without a GCP zone suffix: `gcp:us-central1-a` → `us-central1`. AWS and Azure
    /// ids are regions already.
    pub fn region_name(&self) -> &str {
        if self.cloud == Cloud::Gcp
            && let Some((region, zone)) = self.name.rsplit_once('-')
        {
            // GCP zones are one or two lowercase letters (`a`, `ai1b` is a rare exception).
            if region.ends_with(|c: char| c.is_ascii_digit())
                && zone.starts_with(|c: char| c.is_ascii_lowercase())
            {
                return region;
            }
        }
        &self.name
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.cloud, self.name)
    }
}

impl FromStr for RegionId {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some((cloud, name)) = s.split_once(':') else {
            return Err(CatalogError::BadRegionId {
                id: s.to_string(),
                why: "expected CLOUD:REGION, e.g. aws:us-east-1, azure:westeurope or \
                      gcp:us-central1-a"
                    .into(),
            });
        };
        let cloud = cloud
            .parse::<Cloud>()
            .map_err(|_| CatalogError::BadRegionId {
                id: s.to_string(),
                why: format!("unknown cloud '{cloud}' (expected aws, azure or gcp)"),
            })?;
        RegionId::new(cloud, name)
    }
}

impl Serialize for RegionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RegionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Continents as used in data-residency rules. The Middle East is counted in Asia.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Continent {
    Africa,
    Asia,
    Europe,
    NorthAmerica,
    Oceania,
    SouthAmerica,
}

impl Continent {
    pub const ALL: [Continent; 6] = [
        Continent::Africa,
        Continent::Asia,
        Continent::Europe,
        Continent::NorthAmerica,
        Continent::Oceania,
        Continent::SouthAmerica,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Continent::Africa => "africa",
            Continent::Asia => "asia",
            Continent::Europe => "europe",
            Continent::NorthAmerica => "north-america",
            Continent::Oceania => "oceania",
            Continent::SouthAmerica => "south-america",
        }
    }
}

impl fmt::Display for Continent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Continent {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Continent::ALL
            .into_iter()
            .find(|c| c.as_str() == norm)
            .ok_or_else(|| CatalogError::UnknownContinent(s.to_string()))
    }
}

/// Where a region's data centres are: an ISO 3166-1 alpha-2 country code and a continent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub country: &'static str,
    pub continent: Continent,
    /// The city or metro the provider names for the region.
    pub city: &'static str,
}

/// Member states of the European Union (ISO codes), for `--only-country eu`.
pub const EU_COUNTRIES: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];

use Continent::*;

/// Region locations as the providers publish them. Keyed by (cloud, region without zone).
/// Covers every region in the shipped grids and price lists; a region missing here has an
/// unknown location, which no country or continent allow-list admits.
const LOCATIONS: &[(Cloud, &str, &str, Continent, &str)] = &[
    (Cloud::Aws, "af-south-1", "ZA", Africa, "Cape Town"),
    (Cloud::Aws, "ap-east-1", "HK", Asia, "Hong Kong"),
    (Cloud::Aws, "ap-northeast-1", "JP", Asia, "Tokyo"),
    (Cloud::Aws, "ap-northeast-2", "KR", Asia, "Seoul"),
    (Cloud::Aws, "ap-northeast-3", "JP", Asia, "Osaka"),
    (Cloud::Aws, "ap-south-1", "IN", Asia, "Mumbai"),
    (Cloud::Aws, "ap-south-2", "IN", Asia, "Hyderabad"),
    (Cloud::Aws, "ap-southeast-1", "SG", Asia, "Singapore"),
    (Cloud::Aws, "ap-southeast-2", "AU", Oceania, "Sydney"),
    (Cloud::Aws, "ap-southeast-3", "ID", Asia, "Jakarta"),
    (Cloud::Aws, "ap-southeast-4", "AU", Oceania, "Melbourne"),
    (Cloud::Aws, "ca-central-1", "CA", NorthAmerica, "Montreal"),
    (Cloud::Aws, "ca-west-1", "CA", NorthAmerica, "Calgary"),
    (Cloud::Aws, "eu-central-1", "DE", Europe, "Frankfurt"),
    (Cloud::Aws, "eu-central-2", "CH", Europe, "Zurich"),
    (Cloud::Aws, "eu-north-1", "SE", Europe, "Stockholm"),
    (Cloud::Aws, "eu-south-1", "IT", Europe, "Milan"),
    (Cloud::Aws, "eu-south-2", "ES", Europe, "Aragon"),
    (Cloud::Aws, "eu-west-1", "IE", Europe, "Dublin"),
    (Cloud::Aws, "eu-west-2", "GB", Europe, "London"),
    (Cloud::Aws, "eu-west-3", "FR", Europe, "Paris"),
    (Cloud::Aws, "il-central-1", "IL", Asia, "Tel Aviv"),
    (Cloud::Aws, "me-central-1", "AE", Asia, "UAE"),
    (Cloud::Aws, "me-south-1", "BH", Asia, "Bahrain"),
    (Cloud::Aws, "sa-east-1", "BR", SouthAmerica, "Sao Paulo"),
    (Cloud::Aws, "us-east-1", "US", NorthAmerica, "N. Virginia"),
    (Cloud::Aws, "us-east-2", "US", NorthAmerica, "Ohio"),
    (Cloud::Aws, "us-west-1", "US", NorthAmerica, "N. California"),
    (Cloud::Aws, "us-west-2", "US", NorthAmerica, "Oregon"),
    (
        Cloud::Aws,
        "us-gov-east-1",
        "US",
        NorthAmerica,
        "GovCloud (US-East)",
    ),
    (
        Cloud::Aws,
        "us-gov-west-1",
        "US",
        NorthAmerica,
        "GovCloud (US-West)",
    ),
    (
        Cloud::Azure,
        "australiaeast",
        "AU",
        Oceania,
        "New South Wales",
    ),
    (
        Cloud::Azure,
        "brazilsouth",
        "BR",
        SouthAmerica,
        "Sao Paulo State",
    ),
    (Cloud::Azure, "canadacentral", "CA", NorthAmerica, "Toronto"),
    (Cloud::Azure, "centralindia", "IN", Asia, "Pune"),
    (Cloud::Azure, "centralus", "US", NorthAmerica, "Iowa"),
    (Cloud::Azure, "eastasia", "HK", Asia, "Hong Kong"),
    (Cloud::Azure, "eastus", "US", NorthAmerica, "Virginia"),
    (Cloud::Azure, "eastus2", "US", NorthAmerica, "Virginia"),
    (Cloud::Azure, "francecentral", "FR", Europe, "Paris"),
    (
        Cloud::Azure,
        "germanywestcentral",
        "DE",
        Europe,
        "Frankfurt",
    ),
    (Cloud::Azure, "japaneast", "JP", Asia, "Tokyo"),
    (Cloud::Azure, "koreacentral", "KR", Asia, "Seoul"),
    (
        Cloud::Azure,
        "northcentralus",
        "US",
        NorthAmerica,
        "Illinois",
    ),
    (Cloud::Azure, "northeurope", "IE", Europe, "Dublin"),
    (Cloud::Azure, "norwayeast", "NO", Europe, "Oslo"),
    (Cloud::Azure, "qatarcentral", "QA", Asia, "Doha"),
    (
        Cloud::Azure,
        "southafricanorth",
        "ZA",
        Africa,
        "Johannesburg",
    ),
    (Cloud::Azure, "southcentralus", "US", NorthAmerica, "Texas"),
    (Cloud::Azure, "swedencentral", "SE", Europe, "Gavle"),
    (Cloud::Azure, "switzerlandnorth", "CH", Europe, "Zurich"),
    (Cloud::Azure, "uaenorth", "AE", Asia, "Dubai"),
    (Cloud::Azure, "uksouth", "GB", Europe, "London"),
    (Cloud::Azure, "westcentralus", "US", NorthAmerica, "Wyoming"),
    (Cloud::Azure, "westeurope", "NL", Europe, "Amsterdam"),
    (Cloud::Azure, "westus", "US", NorthAmerica, "California"),
    (Cloud::Azure, "westus2", "US", NorthAmerica, "Washington"),
    (Cloud::Azure, "westus3", "US", NorthAmerica, "Arizona"),
    (Cloud::Gcp, "africa-south1", "ZA", Africa, "Johannesburg"),
    (Cloud::Gcp, "asia-east1", "TW", Asia, "Changhua County"),
    (Cloud::Gcp, "asia-east2", "HK", Asia, "Hong Kong"),
    (Cloud::Gcp, "asia-northeast1", "JP", Asia, "Tokyo"),
    (Cloud::Gcp, "asia-northeast2", "JP", Asia, "Osaka"),
    (Cloud::Gcp, "asia-northeast3", "KR", Asia, "Seoul"),
    (Cloud::Gcp, "asia-south1", "IN", Asia, "Mumbai"),
    (Cloud::Gcp, "asia-south2", "IN", Asia, "Delhi"),
    (Cloud::Gcp, "asia-southeast1", "SG", Asia, "Singapore"),
    (Cloud::Gcp, "asia-southeast2", "ID", Asia, "Jakarta"),
    (Cloud::Gcp, "australia-southeast1", "AU", Oceania, "Sydney"),
    (
        Cloud::Gcp,
        "australia-southeast2",
        "AU",
        Oceania,
        "Melbourne",
    ),
    (Cloud::Gcp, "europe-central2", "PL", Europe, "Warsaw"),
    (Cloud::Gcp, "europe-north1", "FI", Europe, "Hamina"),
    (Cloud::Gcp, "europe-southwest1", "ES", Europe, "Madrid"),
    (Cloud::Gcp, "europe-west1", "BE", Europe, "St. Ghislain"),
    (Cloud::Gcp, "europe-west10", "DE", Europe, "Berlin"),
    (Cloud::Gcp, "europe-west12", "IT", Europe, "Turin"),
    (Cloud::Gcp, "europe-west2", "GB", Europe, "London"),
    (Cloud::Gcp, "europe-west3", "DE", Europe, "Frankfurt"),
    (Cloud::Gcp, "europe-west4", "NL", Europe, "Eemshaven"),
    (Cloud::Gcp, "europe-west6", "CH", Europe, "Zurich"),
    (Cloud::Gcp, "europe-west8", "IT", Europe, "Milan"),
    (Cloud::Gcp, "europe-west9", "FR", Europe, "Paris"),
    (Cloud::Gcp, "me-central1", "QA", Asia, "Doha"),
    (Cloud::Gcp, "me-central2", "SA", Asia, "Dammam"),
    (Cloud::Gcp, "me-west1", "IL", Asia, "Tel Aviv"),
    (
        Cloud::Gcp,
        "northamerica-northeast1",
        "CA",
        NorthAmerica,
        "Montreal",
    ),
    (
        Cloud::Gcp,
        "northamerica-northeast2",
        "CA",
        NorthAmerica,
        "Toronto",
    ),
    (
        Cloud::Gcp,
        "southamerica-east1",
        "BR",
        SouthAmerica,
        "Sao Paulo",
    ),
    (
        Cloud::Gcp,
        "southamerica-west1",
        "CL",
        SouthAmerica,
        "Santiago",
    ),
    (Cloud::Gcp, "us-central1", "US", NorthAmerica, "Iowa"),
    (Cloud::Gcp, "us-east1", "US", NorthAmerica, "South Carolina"),
    (Cloud::Gcp, "us-east4", "US", NorthAmerica, "N. Virginia"),
    (Cloud::Gcp, "us-east5", "US", NorthAmerica, "Columbus"),
    (Cloud::Gcp, "us-south1", "US", NorthAmerica, "Dallas"),
    (Cloud::Gcp, "us-west1", "US", NorthAmerica, "Oregon"),
    (Cloud::Gcp, "us-west2", "US", NorthAmerica, "Los Angeles"),
    (Cloud::Gcp, "us-west3", "US", NorthAmerica, "Salt Lake City"),
    (Cloud::Gcp, "us-west4", "US", NorthAmerica, "Las Vegas"),
];

/// Where a region is, if the location table knows it.
pub fn location_of(region: &RegionId) -> Option<Location> {
    let name = region.region_name();
    LOCATIONS
        .iter()
        .find(|(cloud, n, ..)| *cloud == region.cloud() && *n == name)
        .map(|&(_, _, country, continent, city)| Location {
            country,
            continent,
            city,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_grid_spelling() {
        for id in ["aws:us-east-1", "azure:westeurope", "gcp:us-central1-a"] {
            let parsed: RegionId = id.parse().unwrap();
            assert_eq!(parsed.to_string(), id);
        }
    }

    #[test]
    fn gcp_zone_is_stripped_for_the_region_name() {
        let z: RegionId = "gcp:europe-west1-b".parse().unwrap();
        assert_eq!(z.region_name(), "europe-west1");
        let r: RegionId = "gcp:europe-west1".parse().unwrap();
        assert_eq!(r.region_name(), "europe-west1");
        let aws: RegionId = "aws:eu-west-1".parse().unwrap();
        assert_eq!(aws.region_name(), "eu-west-1");
    }

    #[test]
    fn malformed_ids_name_the_wrong_part() {
        let err = "useast1".parse::<RegionId>().unwrap_err().to_string();
        assert!(err.contains("CLOUD:REGION"), "{err}");
        let err = "ibm:us-south".parse::<RegionId>().unwrap_err().to_string();
        assert!(err.contains("unknown cloud 'ibm'"), "{err}");
        let err = "aws:US_EAST".parse::<RegionId>().unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }

    #[test]
    fn locations_cover_eu_and_non_eu_europe() {
        let frankfurt = location_of(&"aws:eu-central-1".parse().unwrap()).unwrap();
        assert_eq!((frankfurt.country, frankfurt.continent), ("DE", Europe));
        let london = location_of(&"gcp:europe-west2-a".parse().unwrap()).unwrap();
        assert_eq!(london.continent, Europe);
        assert!(!EU_COUNTRIES.contains(&london.country));
        assert!(location_of(&"aws:xx-nowhere-9".parse().unwrap()).is_none());
    }
}
