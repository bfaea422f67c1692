//! Per-pair measurement grids: throughput (Skyplane's iperf3 schema), RTT and egress prices.
//!
//! Each grid is parsed by column name, so files with extra or reordered columns load. A pair that
//! a grid does not list is absent (`None`), never invented: the planner treats such a link as
//! unusable and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use crate::CatalogError;
use crate::region::RegionId;
use crate::units::{Gbps, Millis, UsdPerGb};

/// One measured directed link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkThroughput {
    /// Throughput achieved between one VM at each end with `connections` parallel TCP streams.
    pub gbps: Gbps,
    /// How many parallel connections the measurement used (64 in Skyplane's grids).
    pub connections: u32,
    /// How many grid rows were averaged into this figure.
    pub samples: u32,
}

/// A grid of measured throughput between ordered region pairs.
#[derive(Debug, Clone, Default)]
pub struct ThroughputGrid {
    links: BTreeMap<(RegionId, RegionId), LinkThroughput>,
}

/// The receiver-side column, in both spellings Skyplane's files use.
const RECEIVED_COLUMNS: [&str; 2] = ["throughput_received", "throughput_recieved"];
const SENT_COLUMNS: [&str; 1] = ["throughput_sent"];

/// Which side of an iperf3 measurement a throughput grid believes.
///
/// Skyplane's overlay solver and Cloudcast read `throughput_sent`; skyx reads the receiver side
/// by default, because what arrives is what a copy can count on. In a 5 s iperf3 run the sender
/// also counts bytes still queued in socket buffers, so on long paths the two differ a lot: on
/// the Nov-2022 grid received/sent has median 0.75, 10th percentile 0.55. Choosing `Sent`
/// reproduces plans comparable with Skyplane's and Cloudcast's published results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GridColumn {
    /// `throughput_received` (goodput at the receiver).
    #[default]
    Received,
    /// `throughput_sent` (what the sender pushed), as Skyplane's solver and Cloudcast read it.
    Sent,
}

impl GridColumn {
    fn names(self) -> &'static [&'static str] {
        match self {
            GridColumn::Received => &RECEIVED_COLUMNS,
            GridColumn::Sent => &SENT_COLUMNS,
        }
    }

    /// The column's name as provenance and errors print it.
    pub fn label(self) -> &'static str {
        match self {
            GridColumn::Received => "throughput_received",
            GridColumn::Sent => "throughput_sent",
        }
    }
}

fn header_index(
    headers: &csv::StringRecord,
    names: &[&str],
    file: &str,
) -> Result<usize, CatalogError> {
    headers
        .iter()
        .position(|h| names.contains(&h.trim()))
        .ok_or_else(|| CatalogError::BadFile {
            file: file.to_string(),
            line: 1,
            why: format!("missing column {}", names.join(" or ")),
        })
}

fn optional_index(headers: &csv::StringRecord, name: &str) -> Option<usize> {
    headers.iter().position(|h| h.trim() == name)
}

fn parse_region(
    value: &str,
    file: &str,
    line: u64,
    column: &str,
) -> Result<RegionId, CatalogError> {
    value.parse().map_err(|e| CatalogError::BadFile {
        file: file.to_string(),
        line,
        why: format!("column {column}: {e}"),
    })
}

fn parse_number(value: &str, file: &str, line: u64, column: &str) -> Result<f64, CatalogError> {
    let v: f64 = value.trim().parse().map_err(|_| CatalogError::BadFile {
        file: file.to_string(),
        line,
        why: format!("column {column}: '{value}' is not a number"),
    })?;
    if !v.is_finite() || v < 0.0 {
        return Err(CatalogError::BadFile {
            file: file.to_string(),
            line,
            why: format!("column {column}: '{value}' must be a finite number ≥ 0"),
        });
    }
    Ok(v)
}

/// True unless a tier column says something other than PREMIUM: GCP's STANDARD tier is a
/// different, slower product and must not be averaged with PREMIUM measurements.
fn is_premium(record: &csv::StringRecord, tier_column: Option<usize>) -> bool {
    tier_column
        .and_then(|i| record.get(i))
        .is_none_or(|t| t.trim().is_empty() || t.trim().eq_ignore_ascii_case("PREMIUM"))
}

fn line_of(record: &csv::StringRecord) -> u64 {
    record.position().map(|p| p.line()).unwrap_or(0)
}

impl ThroughputGrid {
    /// Reads a grid in the schema of Skyplane's `throughput.csv` (bits/s), believing the
    /// receiver side (see [`GridColumn`]).
    pub fn from_csv(reader: impl Read, file: &str) -> Result<Self, CatalogError> {
        Self::from_csv_column(reader, file, GridColumn::default())
    }

    /// Reads a grid in the schema of Skyplane's `throughput.csv` (bits/s) from `column`.
    ///
    /// Rows with `success` false are skipped. Where a GCP row names a network tier, only
    /// PREMIUM-to-PREMIUM rows are used (STANDARD tier is a different, slower product). Repeated
    /// measurements of a pair are averaged.
    pub fn from_csv_column(
        reader: impl Read,
        file: &str,
        column: GridColumn,
    ) -> Result<Self, CatalogError> {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers = rdr
            .headers()
            .map_err(|e| CatalogError::csv(file, e))?
            .clone();
        let src_i = header_index(&headers, &["src_region", "src"], file)?;
        let dst_i = header_index(&headers, &["dst_region", "dst", "dest"], file)?;
        let tput_i = header_index(&headers, column.names(), file)?;
        let conn_i = optional_index(&headers, "iperf3_connections");
        let success_i = optional_index(&headers, "success");
        let src_tier_i = optional_index(&headers, "src_tier");
        let dst_tier_i = optional_index(&headers, "dst_tier");

        let mut sums: BTreeMap<(RegionId, RegionId), (f64, u32, u32)> = BTreeMap::new();
        for record in rdr.records() {
            let record = record.map_err(|e| CatalogError::csv(file, e))?;
            let line = line_of(&record);
            let field = |i: usize| record.get(i).unwrap_or("").trim();
            if let Some(i) = success_i
                && field(i).eq_ignore_ascii_case("false")
            {
                continue;
            }
            if !is_premium(&record, src_tier_i) || !is_premium(&record, dst_tier_i) {
                continue;
            }
            let src = parse_region(field(src_i), file, line, "src_region")?;
            let dst = parse_region(field(dst_i), file, line, "dst_region")?;
            let bits = parse_number(field(tput_i), file, line, column.label())?;
            let connections = match conn_i.map(field) {
                Some(c) if !c.is_empty() => parse_number(c, file, line, "iperf3_connections")?,
                _ => 64.0,
            };
            if connections < 1.0 {
                return Err(CatalogError::BadFile {
                    file: file.to_string(),
                    line,
                    why: "column iperf3_connections: must be at least 1".into(),
                });
            }
            if src == dst {
                continue;
            }
            let entry = sums.entry((src, dst)).or_insert((0.0, 0, 0));
            entry.0 += bits;
            entry.1 = entry.1.max(connections as u32);
            entry.2 += 1;
        }
        let links = sums
            .into_iter()
            .map(|(pair, (bits, connections, samples))| {
                let gbps = Gbps(bits / f64::from(samples) / 1e9);
                (
                    pair,
                    LinkThroughput {
                        gbps,
                        connections,
                        samples,
                    },
                )
            })
            .collect();
        Ok(ThroughputGrid { links })
    }

    pub fn get(&self, src: &RegionId, dst: &RegionId) -> Option<LinkThroughput> {
        self.links.get(&(src.clone(), dst.clone())).copied()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn regions(&self) -> BTreeSet<RegionId> {
        self.links
            .keys()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RegionId, &RegionId, LinkThroughput)> {
        self.links.iter().map(|((a, b), l)| (a, b, *l))
    }

    /// Adds or replaces one link; used by measurement refreshes and tests.
    pub fn insert(&mut self, src: RegionId, dst: RegionId, link: LinkThroughput) {
        self.links.insert((src, dst), link);
    }

    /// Writes the grid back in Skyplane's schema (bits/s), so measured grids round-trip.
    pub fn to_csv(&self, tag: &str) -> String {
        let mut out = String::from(
            "src_region,src_tier,src_instance_class,dst_region,dst_tier,dst_instance_class,\
             iperf3_connections,iperf3_runtime,tag,stdout_path,stderr_path,throughput_sent,\
             throughput_received,cpu_utilization,success\n",
        );
        for ((src, dst), link) in &self.links {
            let bits = link.gbps.0 * 1e9;
            out.push_str(&format!(
                "{src},PREMIUM,,{dst},PREMIUM,,{},,{tag},,,{bits},{bits},,True\n",
                link.connections
            ));
        }
        out
    }
}

/// Egress prices per ordered pair (USD per GB leaving `src` for `dst`).
#[derive(Debug, Clone, Default)]
pub struct EgressPriceGrid {
    prices: BTreeMap<(RegionId, RegionId), UsdPerGb>,
}

impl EgressPriceGrid {
    /// Reads `src,dest[,src_tier,dest_tier],cost` (Skyplane's `cost.csv` and the broadcast
    /// variant). Tiered files keep PREMIUM rows only.
    pub fn from_csv(reader: impl Read, file: &str) -> Result<Self, CatalogError> {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers = rdr
            .headers()
            .map_err(|e| CatalogError::csv(file, e))?
            .clone();
        let src_i = header_index(&headers, &["src", "src_region"], file)?;
        let dst_i = header_index(&headers, &["dest", "dst", "dst_region"], file)?;
        let cost_i = header_index(&headers, &["cost", "usd_per_gb"], file)?;
        let src_tier_i = optional_index(&headers, "src_tier");
        let dst_tier_i = optional_index(&headers, "dest_tier");
        let mut prices = BTreeMap::new();
        for record in rdr.records() {
            let record = record.map_err(|e| CatalogError::csv(file, e))?;
            let line = line_of(&record);
            let field = |i: usize| record.get(i).unwrap_or("").trim();
            if !is_premium(&record, src_tier_i) || !is_premium(&record, dst_tier_i) {
                continue;
            }
            let src = parse_region(field(src_i), file, line, "src")?;
            let dst = parse_region(field(dst_i), file, line, "dest")?;
            let cost = parse_number(field(cost_i), file, line, "cost")?;
            prices.insert((src, dst), UsdPerGb(cost));
        }
        Ok(EgressPriceGrid { prices })
    }

    /// The price of moving a GB from `src` to `dst`. Staying inside one region is free.
    pub fn get(&self, src: &RegionId, dst: &RegionId) -> Option<UsdPerGb> {
        if src == dst {
            return Some(UsdPerGb(0.0));
        }
        self.prices.get(&(src.clone(), dst.clone())).copied()
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    pub fn insert(&mut self, src: RegionId, dst: RegionId, price: UsdPerGb) {
        self.prices.insert((src, dst), price);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RegionId, &RegionId, UsdPerGb)> {
        self.prices.iter().map(|((a, b), p)| (a, b, *p))
    }

    /// Adds `other`'s prices for the pairs this grid does not price.
    pub fn fill_missing_from(&mut self, other: &EgressPriceGrid) {
        for (pair, price) in &other.prices {
            self.prices.entry(pair.clone()).or_insert(*price);
        }
    }
}

/// Average round-trip times per ordered pair, from `ping` between VMs.
#[derive(Debug, Clone, Default)]
pub struct RttGrid {
    rtts: BTreeMap<(RegionId, RegionId), Millis>,
}

impl RttGrid {
    /// Reads Skyplane's `latency.csv` schema (`src_region,…,dst_region,…,avg_rtt`, ms).
    pub fn from_csv(reader: impl Read, file: &str) -> Result<Self, CatalogError> {
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let headers = rdr
            .headers()
            .map_err(|e| CatalogError::csv(file, e))?
            .clone();
        let src_i = header_index(&headers, &["src_region", "src"], file)?;
        let dst_i = header_index(&headers, &["dst_region", "dst"], file)?;
        let rtt_i = header_index(&headers, &["avg_rtt", "rtt_ms"], file)?;
        let src_tier_i = optional_index(&headers, "src_tier");
        let dst_tier_i = optional_index(&headers, "dst_tier");
        let mut sums: BTreeMap<(RegionId, RegionId), (f64, u32)> = BTreeMap::new();
        for record in rdr.records() {
            let record = record.map_err(|e| CatalogError::csv(file, e))?;
            let line = line_of(&record);
            let field = |i: usize| record.get(i).unwrap_or("").trim();
            if !is_premium(&record, src_tier_i) || !is_premium(&record, dst_tier_i) {
                continue;
            }
            let src = parse_region(field(src_i), file, line, "src_region")?;
            let dst = parse_region(field(dst_i), file, line, "dst_region")?;
            let rtt = parse_number(field(rtt_i), file, line, "avg_rtt")?;
            let e = sums.entry((src, dst)).or_insert((0.0, 0));
            e.0 += rtt;
            e.1 += 1;
        }
        let rtts = sums
            .into_iter()
            .map(|(k, (sum, n))| (k, Millis(sum / f64::from(n))))
            .collect();
        Ok(RttGrid { rtts })
    }

    pub fn get(&self, src: &RegionId, dst: &RegionId) -> Option<Millis> {
        self.rtts.get(&(src.clone(), dst.clone())).copied()
    }

    pub fn len(&self) -> usize {
        self.rtts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rtts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_accepts_both_spellings_and_averages_repeats() {
        for col in RECEIVED_COLUMNS {
            let csv = format!(
                "src_region,dst_region,iperf3_connections,throughput_sent,{col},success\n\
                 aws:us-east-1,aws:us-west-2,64,1,4000000000,True\n\
                 aws:us-east-1,aws:us-west-2,64,1,6000000000,True\n\
                 aws:us-east-1,gcp:us-central1-a,64,1,9000000000,False\n"
            );
            let grid = ThroughputGrid::from_csv(csv.as_bytes(), "t.csv").unwrap();
            let a = "aws:us-east-1".parse().unwrap();
            let b = "aws:us-west-2".parse().unwrap();
            let link = grid.get(&a, &b).unwrap();
            assert!((link.gbps.0 - 5.0).abs() < 1e-9);
            assert_eq!((link.connections, link.samples), (64, 2));
            assert_eq!(grid.len(), 1, "failed rows are not measurements");
        }
    }

    #[test]
    fn the_sent_column_is_read_when_chosen() {
        let csv = "src_region,dst_region,throughput_sent,throughput_recieved\n\
                   aws:us-east-1,aws:us-west-2,5000000000,4700000000\n";
        let a = "aws:us-east-1".parse().unwrap();
        let b = "aws:us-west-2".parse().unwrap();
        let sent = ThroughputGrid::from_csv_column(csv.as_bytes(), "t.csv", GridColumn::Sent)
            .unwrap()
            .get(&a, &b)
            .unwrap();
        let received = ThroughputGrid::from_csv(csv.as_bytes(), "t.csv")
            .unwrap()
            .get(&a, &b)
            .unwrap();
        assert!((sent.gbps.0 - 5.0).abs() < 1e-9);
        assert!((received.gbps.0 - 4.7).abs() < 1e-9);

        let no_sent = "src_region,dst_region,throughput_received\n";
        let msg = ThroughputGrid::from_csv_column(no_sent.as_bytes(), "r.csv", GridColumn::Sent)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing column throughput_sent"), "{msg}");
    }

    #[test]
    fn standard_tier_rows_are_not_mixed_with_premium() {
        let csv = "src_region,src_tier,dst_region,dst_tier,throughput_received\n\
                   gcp:us-east1-b,STANDARD,aws:us-east-1,PREMIUM,1000000000\n\
                   gcp:us-east1-b,PREMIUM,aws:us-east-1,PREMIUM,7000000000\n";
        let grid = ThroughputGrid::from_csv(csv.as_bytes(), "t.csv").unwrap();
        let link = grid
            .get(
                &"gcp:us-east1-b".parse().unwrap(),
                &"aws:us-east-1".parse().unwrap(),
            )
            .unwrap();
        assert!((link.gbps.0 - 7.0).abs() < 1e-9);
    }

    #[test]
    fn bad_rows_are_reported_with_file_line_and_column() {
        let csv = "src_region,dst_region,throughput_received\n\
                   aws:us-east-1,aws:us-west-2,fast\n";
        let err = ThroughputGrid::from_csv(csv.as_bytes(), "mine.csv").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mine.csv") && msg.contains("line 2"), "{msg}");
        assert!(msg.contains("'fast' is not a number"), "{msg}");

        let missing = "src_region,dst_region,throughput_sent\n";
        let msg = ThroughputGrid::from_csv(missing.as_bytes(), "m.csv")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("throughput_received or throughput_recieved"),
            "{msg}"
        );
    }

    #[test]
    fn throughput_grid_round_trips_through_its_csv() {
        let mut grid = ThroughputGrid::default();
        grid.insert(
            "aws:us-east-1".parse().unwrap(),
            "azure:westus".parse().unwrap(),
            LinkThroughput {
                gbps: Gbps(2.5),
                connections: 32,
                samples: 1,
            },
        );
        let again = ThroughputGrid::from_csv(grid.to_csv("t").as_bytes(), "rt.csv").unwrap();
        let link = again.iter().next().unwrap().2;
        assert!((link.gbps.0 - 2.5).abs() < 1e-9);
        assert_eq!(link.connections, 32);
    }

    #[test]
    fn price_grid_reads_both_skyplane_schemas() {
        let tiered =
            "src,dest,src_tier,dest_tier,cost\naws:us-east-1,gcp:us-east1-b,PREMIUM,PREMIUM,0.09\n";
        let plain = "src,dest,cost\naws:us-east-1,gcp:us-east1-b,0.09\n";
        for text in [tiered, plain] {
            let grid = EgressPriceGrid::from_csv(text.as_bytes(), "c.csv").unwrap();
            let a: RegionId = "aws:us-east-1".parse().unwrap();
            let b: RegionId = "gcp:us-east1-b".parse().unwrap();
            assert_eq!(grid.get(&a, &b), Some(UsdPerGb(0.09)));
            assert_eq!(grid.get(&b, &a), None, "a missing pair is not invented");
            assert_eq!(grid.get(&a, &a), Some(UsdPerGb(0.0)));
        }
    }
}
