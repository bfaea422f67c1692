//! What a sky is, computed without touching the machine: which regions, their namespaces and
//! addresses, every shaped link, every VM egress cap, and the `ip`/`tc` commands that build
//! it. Pure, so the shaping arithmetic and the command list are tested without root.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use skyx_catalog::{Catalog, Cloud, Gbps, LinkThroughput, RegionId, ThroughputGrid};

use crate::SkyError;

/// Eight regions across the three clouds whose measured grid has many pairs where a relay
/// beats the direct path by more than 1.5x (26 of 56 ordered pairs in the 2022-11 grid), among
/// them the grid's slowest path: aws:us-east-1 → gcp:asia-southeast1-a at 0.11 Gbps, against
/// 4.23 Gbps through gcp:europe-west1-b.
pub const DEFAULT_REGIONS: [&str; 8] = [
    "aws:us-east-1",
    "aws:sa-east-1",
    "aws:ap-east-1",
    "gcp:europe-west1-b",
    "gcp:asia-southeast1-a",
    "azure:eastus",
    "azure:southafricanorth",
    "azure:brazilsouth",
];

/// The default scale: links run at 1/50 of their measured throughput, so the whole sky fits in
/// one 2-core machine's loopback and CPU.
pub const DEFAULT_SCALE: f64 = 0.02;

/// The default delay scale: round trips as measured. Bandwidth is scaled down to fit one
/// machine, delay is not: control round trips, per-object requests and TCP's slow start see
/// the real path's delay (so the bandwidth-delay product is `scale` × the real one).
pub const DEFAULT_RTT_SCALE: f64 = 1.0;

/// Bytes on the wire per byte of TCP payload on a 1500-byte-MTU veth: `tbf` counts whole
/// Ethernet frames (1514 bytes) while iperf3, which measured the grid, counts payload (a
/// 1448-byte MSS with timestamps). Links are shaped so that *goodput* equals the target.
pub const FRAME_OVERHEAD: f64 = 1514.0 / 1448.0;

/// The store server a region runs, by its cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// An S3-compatible server (s3s-fs) for AWS regions.
    S3,
    /// Azurite for Azure regions.
    Azurite,
    /// The GCS emulator for GCP regions.
    Gcs,
}

impl StoreKind {
    pub fn of(cloud: Cloud) -> Self {
        match cloud {
            Cloud::Aws => StoreKind::S3,
            Cloud::Azure => StoreKind::Azurite,
            Cloud::Gcp => StoreKind::Gcs,
        }
    }

    /// The port the server listens on inside its namespace (each region has its own address,
    /// so every region can use the cloud's usual emulator port).
    pub fn port(self) -> u16 {
        match self {
            StoreKind::S3 => 9000,
            StoreKind::Azurite => 10000,
            StoreKind::Gcs => 9023,
        }
    }

    /// The URL scheme of the store.
    pub fn scheme(self) -> &'static str {
        match self {
            StoreKind::S3 => "s3",
            StoreKind::Azurite => "az",
            StoreKind::Gcs => "gs",
        }
    }
}

/// How to build a sky.
#[derive(Debug, Clone)]
pub struct SkyOptions {
    /// Prefix of every namespace and interface the sky creates (letters and digits, ≤ 8).
    pub name: String,
    pub regions: Vec<String>,
    /// Link throughput = measured × scale.
    pub scale: f64,
    /// Second octet of the sky's private network (10.N.0.0/16).
    pub subnet: u8,
    /// Link delay = the catalog's measured round trip × this factor, half each way (0: none).
    pub rtt_scale: f64,
    /// The region the gateway (this machine's root namespace) sits in: its control path to
    /// each region has that pair's delay. `None`: the first region.
    pub gateway_at: Option<String>,
}

impl Default for SkyOptions {
    fn default() -> Self {
        SkyOptions {
            name: "skyx".into(),
            regions: DEFAULT_REGIONS.iter().map(|r| r.to_string()).collect(),
            scale: DEFAULT_SCALE,
            subnet: 77,
            rtt_scale: DEFAULT_RTT_SCALE,
            gateway_at: None,
        }
    }
}

/// One region of the sky.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkyRegion {
    pub region: RegionId,
    pub namespace: String,
    /// The region's address: its store, agents and tools bind here.
    pub addr: Ipv4Addr,
    pub store: StoreKind,
    /// The per-VM egress cap after scaling, in Gbps of goodput (None: no cap in the catalog).
    pub egress_cap_gbps: Option<f64>,
    /// Round trip of the control path between the gateway and this region, in ms.
    #[serde(default)]
    pub control_rtt_ms: f64,
}

/// One shaped direction between two regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapedLink {
    pub src: RegionId,
    pub dst: RegionId,
    /// What the catalog measured.
    pub measured_gbps: f64,
    /// Goodput this direction is shaped to (measured × scale).
    pub shaped_gbps: f64,
    /// Round trip between the two regions, in ms (measured × the delay scale): each direction
    /// delays its packets by half.
    #[serde(default)]
    pub rtt_ms: f64,
}

/// One end of a delayed link: a TUN device, in a region's namespace or (`None`) the root one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunEnd {
    pub namespace: Option<String>,
    pub dev: String,
}

/// A link the delay line carries: every packet one end's stack sends reaches the other end's
/// stack `one_way_ms` later, both ways.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayedLink {
    pub a: TunEnd,
    pub b: TunEnd,
    pub one_way_ms: f64,
}

/// A sky, fully worked out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkySpec {
    pub name: String,
    pub scale: f64,
    pub subnet: u8,
    #[serde(default)]
    pub rtt_scale: f64,
    /// Where the gateway sits (see [`SkyOptions::gateway_at`]).
    #[serde(default)]
    pub gateway_at: Option<RegionId>,
    pub regions: Vec<SkyRegion>,
    pub links: Vec<ShapedLink>,
}

/// The round trip between two regions as the catalog measured it (ping from either side; the
/// mean of both where both were measured).
fn pair_rtt_ms(catalog: &Catalog, a: &RegionId, b: &RegionId) -> Option<f64> {
    let both: Vec<f64> = [catalog.rtt(a, b), catalog.rtt(b, a)]
        .into_iter()
        .flatten()
        .map(|m| m.0)
        .collect();
    (!both.is_empty()).then(|| both.iter().sum::<f64>() / both.len() as f64)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 8 && name.chars().all(|c| c.is_ascii_alphanumeric())
}

impl SkySpec {
    pub fn new(catalog: &Catalog, opts: &SkyOptions) -> Result<SkySpec, SkyError> {
        if !valid_name(&opts.name) {
            return Err(SkyError::BadOptions(format!(
                "sky name {:?}: use 1 to 8 letters or digits (it prefixes interface names, which \
                 Linux limits to 15 characters)",
                opts.name
            )));
        }
        if !(opts.scale > 0.0 && opts.scale <= 1.0) {
            return Err(SkyError::BadOptions(format!(
                "scale {}: must be in (0, 1] (0.02 runs links at 1/50 of their measured speed)",
                opts.scale
            )));
        }
        if !(opts.rtt_scale >= 0.0 && opts.rtt_scale <= 10.0) {
            return Err(SkyError::BadOptions(format!(
                "rtt scale {}: must be in [0, 10] (1 delays links by their measured round trip, 0 not at all)",
                opts.rtt_scale
            )));
        }
        if opts.subnet == 0 || opts.subnet == 255 {
            return Err(SkyError::BadOptions(
                "subnet: the second octet must be 1 to 254".into(),
            ));
        }
        if opts.regions.len() < 2 || opts.regions.len() > 32 {
            return Err(SkyError::BadOptions(format!(
                "{} regions: a sky needs 2 to 32",
                opts.regions.len()
            )));
        }
        let mut regions: Vec<SkyRegion> = Vec::new();
        for (i, text) in opts.regions.iter().enumerate() {
            let region = catalog
                .resolve_region(text.trim())
                .map_err(|e| SkyError::BadOptions(format!("region {text:?}: {e}")))?;
            if regions.iter().any(|r| r.region == region) {
                return Err(SkyError::BadOptions(format!(
                    "region {region} is listed twice"
                )));
            }
            let cap = catalog
                .gateway_vm(&region)
                .map(|vm| vm.egress_cap.0 * opts.scale);
            regions.push(SkyRegion {
                namespace: format!("{}-{}", opts.name, region.to_string().replace(':', "-")),
                addr: Ipv4Addr::new(10, opts.subnet, 0, i as u8 + 1),
                store: StoreKind::of(region.cloud()),
                egress_cap_gbps: cap,
                control_rtt_ms: 0.0,
                region,
            });
        }
        let gateway_at = match &opts.gateway_at {
            None => regions[0].region.clone(),
            Some(text) => {
                let at = catalog
                    .resolve_region(text.trim())
                    .map_err(|e| SkyError::BadOptions(format!("gateway region {text:?}: {e}")))?;
                if !regions.iter().any(|r| r.region == at) {
                    return Err(SkyError::BadOptions(format!(
                        "the gateway's region {at} is not one of the sky's regions"
                    )));
                }
                at
            }
        };
        let mut no_rtt = Vec::new();
        let mut rtt = |a: &RegionId, b: &RegionId| -> f64 {
            if a == b || opts.rtt_scale == 0.0 {
                return 0.0;
            }
            match pair_rtt_ms(catalog, a, b) {
                Some(ms) => ms * opts.rtt_scale,
                None => {
                    no_rtt.push(format!("{a} ↔ {b}"));
                    0.0
                }
            }
        };
        for r in &mut regions {
            r.control_rtt_ms = rtt(&gateway_at, &r.region);
        }
        let mut links = Vec::new();
        let mut missing = Vec::new();
        for a in &regions {
            for b in &regions {
                if a.region == b.region {
                    continue;
                }
                match catalog.throughput(&a.region, &b.region) {
                    Some(t) => links.push(ShapedLink {
                        src: a.region.clone(),
                        dst: b.region.clone(),
                        measured_gbps: t.gbps.0,
                        shaped_gbps: t.gbps.0 * opts.scale,
                        rtt_ms: rtt(&a.region, &b.region),
                    }),
                    None => missing.push(format!("{} → {}", a.region, b.region)),
                }
            }
        }
        if !missing.is_empty() {
            return Err(SkyError::BadOptions(format!(
                "the throughput grid has no measurement for {}: pick regions it measured",
                missing.join(", ")
            )));
        }
        no_rtt.sort();
        no_rtt.dedup();
        if !no_rtt.is_empty() {
            return Err(SkyError::BadOptions(format!(
                "the round-trip grid has no measurement for {}: pick regions it measured, or --rtt-scale 0 for links without delay",
                no_rtt.join(", ")
            )));
        }
        Ok(SkySpec {
            name: opts.name.clone(),
            scale: opts.scale,
            subnet: opts.subnet,
            rtt_scale: opts.rtt_scale,
            gateway_at: Some(gateway_at),
            regions,
            links,
        })
    }

    pub fn region(&self, id: &RegionId) -> Option<&SkyRegion> {
        self.regions.iter().find(|r| &r.region == id)
    }

    /// The address in the root namespace that the gateway's traffic into the sky comes from.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 255, 254)
    }

    /// The root-namespace end of region `i`'s control link.
    fn control_iface(&self, i: usize) -> String {
        format!("{}c{i}", self.name)
    }

    /// Every link the delay line carries: each pair of regions (half the pair's round trip
    /// each way) and each region's control path to the gateway.
    pub fn delay_lines(&self) -> Vec<DelayedLink> {
        let mut out = Vec::new();
        for (i, r) in self.regions.iter().enumerate() {
            out.push(DelayedLink {
                a: TunEnd {
                    namespace: None,
                    dev: self.control_iface(i),
                },
                b: TunEnd {
                    namespace: Some(r.namespace.clone()),
                    dev: "ctl".into(),
                },
                one_way_ms: r.control_rtt_ms / 2.0,
            });
        }
        for (i, a) in self.regions.iter().enumerate() {
            for (j, b) in self.regions.iter().enumerate().skip(i + 1) {
                let rtt = self
                    .links
                    .iter()
                    .find(|l| l.src == a.region && l.dst == b.region)
                    .map_or(0.0, |l| l.rtt_ms);
                out.push(DelayedLink {
                    a: TunEnd {
                        namespace: Some(a.namespace.clone()),
                        dev: format!("to{j}"),
                    },
                    b: TunEnd {
                        namespace: Some(b.namespace.clone()),
                        dev: format!("to{i}"),
                    },
                    one_way_ms: rtt / 2.0,
                });
            }
        }
        out
    }

    /// What one flow from `src` to `dst` should achieve: the link's shaping or the source's
    /// VM egress cap, whichever is lower.
    pub fn expected_gbps(&self, src: &RegionId, dst: &RegionId) -> Option<f64> {
        let link = self.links.iter().find(|l| &l.src == src && &l.dst == dst)?;
        let cap = self.region(src)?.egress_cap_gbps.unwrap_or(f64::INFINITY);
        Some(link.shaped_gbps.min(cap))
    }

    /// The sky's own throughput grid, in the catalog's schema: what the planner should believe
    /// about this sky (a measured grid from `skyx bench paths` is better still).
    pub fn expected_grid(&self) -> ThroughputGrid {
        let mut grid = ThroughputGrid::default();
        for l in &self.links {
            let gbps = self
                .expected_gbps(&l.src, &l.dst)
                .expect("link of this sky");
            grid.insert(
                l.src.clone(),
                l.dst.clone(),
                LinkThroughput {
                    gbps: Gbps(gbps),
                    connections: 64,
                    samples: 1,
                },
            );
        }
        grid
    }

    /// Whether region `i`'s VM egress cap can bind: below the sum of its outgoing links.
    fn cap_binds(&self, i: usize) -> Option<f64> {
        let r = &self.regions[i];
        let cap = r.egress_cap_gbps?;
        let out: f64 = self
            .links
            .iter()
            .filter(|l| l.src == r.region)
            .map(|l| l.shaped_gbps)
            .sum();
        (cap < out).then_some(cap)
    }

    /// Every command that builds the sky's network, in order (argv vectors for `ip` and `tc`).
    ///
    /// - Each region is a namespace with its address on `lo`.
    /// - Each pair of regions has a TUN device in each (`to<j>` in region i, `to<i>` in region
    ///   j) with a host route to the other region's address; the delay line
    ///   ([`crate::delay_line`]) carries packets between the two after the link's delay. Each
    ///   direction has a `tbf` on its sending end at the link's goodput × [`FRAME_OVERHEAD`].
    /// - Where a region's VM egress cap can bind, every mesh link's egress is redirected
    ///   through an `ifb` (`egress`) shaped to the cap, then leaves through the link's own tbf.
    /// - A control link (a TUN device each side, carried by the delay line with the delay
    ///   between the gateway's region and this one) joins each namespace to the root
    ///   namespace, unshaped: the gateway's API calls and store listings never share a shaped
    ///   link with data.
    pub fn network_commands(&self) -> Vec<Vec<String>> {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        let mut cmd = |parts: &[&str]| cmds.push(parts.iter().map(|s| s.to_string()).collect());
        let host = self.host_addr().to_string();
        for (i, r) in self.regions.iter().enumerate() {
            let ns = r.namespace.as_str();
            let addr = format!("{}/32", r.addr);
            cmd(&["ip", "netns", "add", ns]);
            cmd(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            cmd(&["ip", "-n", ns, "addr", "add", &addr, "dev", "lo"]);
            let ctl = self.control_iface(i);
            cmd(&["ip", "tuntap", "add", "dev", &ctl, "mode", "tun"]);
            cmd(&["ip", "-n", ns, "tuntap", "add", "dev", "ctl", "mode", "tun"]);
            cmd(&["ip", "link", "set", &ctl, "up"]);
            cmd(&["ip", "addr", "add", &format!("{host}/32"), "dev", &ctl]);
            cmd(&["ip", "route", "add", &addr, "dev", &ctl, "src", &host]);
            cmd(&["ip", "-n", ns, "link", "set", "ctl", "up"]);
            cmd(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                &format!("{host}/32"),
                "dev",
                "ctl",
                "src",
                &r.addr.to_string(),
            ]);
        }
        for (i, a) in self.regions.iter().enumerate() {
            for (j, b) in self.regions.iter().enumerate().skip(i + 1) {
                let (to_b, to_a) = (format!("to{j}"), format!("to{i}"));
                cmd(&[
                    "ip",
                    "-n",
                    &a.namespace,
                    "tuntap",
                    "add",
                    "dev",
                    &to_b,
                    "mode",
                    "tun",
                ]);
                cmd(&[
                    "ip",
                    "-n",
                    &b.namespace,
                    "tuntap",
                    "add",
                    "dev",
                    &to_a,
                    "mode",
                    "tun",
                ]);
                for (ns, dev, peer, own) in [
                    (&a.namespace, &to_b, b.addr, a.addr),
                    (&b.namespace, &to_a, a.addr, b.addr),
                ] {
                    cmd(&["ip", "-n", ns, "link", "set", dev, "up"]);
                    cmd(&[
                        "ip",
                        "-n",
                        ns,
                        "route",
                        "add",
                        &format!("{peer}/32"),
                        "dev",
                        dev,
                        "src",
                        &own.to_string(),
                    ]);
                }
            }
        }
        for l in &self.links {
            let (_, a) = self.index(&l.src);
            let (j, _) = self.index(&l.dst);
            let dev = format!("to{j}");
            let tbf = tbf_args(l.shaped_gbps, l.rtt_ms);
            let mut argv = vec![
                "ip",
                "netns",
                "exec",
                &a.namespace,
                "tc",
                "qdisc",
                "add",
                "dev",
                &dev,
                "root",
                "tbf",
            ];
            argv.extend(tbf.iter().map(String::as_str));
            cmd(&argv);
        }
        for (i, r) in self.regions.iter().enumerate() {
            let Some(cap) = self.cap_binds(i) else {
                continue;
            };
            let ns = r.namespace.as_str();
            cmd(&["ip", "link", "add", "egress", "netns", ns, "type", "ifb"]);
            cmd(&["ip", "-n", ns, "link", "set", "egress", "up"]);
            // Every link out of the region queues here: a queue for the longest round trip.
            let rtt = self
                .links
                .iter()
                .filter(|l| l.src == r.region)
                .map(|l| l.rtt_ms)
                .fold(0.0, f64::max);
            let tbf = tbf_args(cap, rtt);
            let mut argv = vec![
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "egress", "root", "tbf",
            ];
            argv.extend(tbf.iter().map(String::as_str));
            cmd(&argv);
            for (j, _) in self.regions.iter().enumerate().filter(|(j, _)| *j != i) {
                let dev = format!("to{j}");
                cmd(&[
                    "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", &dev, "clsact",
                ]);
                cmd(&[
                    "ip", "netns", "exec", ns, "tc", "filter", "add", "dev", &dev, "egress",
                    "protocol", "all", "u32", "match", "u32", "0", "0", "action", "mirred",
                    "egress", "redirect", "dev", "egress",
                ]);
            }
        }
        cmds
    }

    fn index(&self, id: &RegionId) -> (usize, &SkyRegion) {
        self.regions
            .iter()
            .enumerate()
            .find(|(_, r)| &r.region == id)
            .expect("link endpoints are regions of the sky")
    }
}

/// `tbf` parameters for a goodput of `gbps` on a path of round trip `rtt_ms`: the rate in
/// bits/s with frame overhead, a burst of 2 ms at that rate (at least 32 KiB so a GSO segment
/// train passes), and a queue of the round trip (at least 100 ms) at that rate, but at least
/// 256 KiB. A queue of one bandwidth-delay product is what lets TCP fill a bottleneck (measured
/// on a 350 Mbit/s, 200 ms link: 83% with a 100 ms queue, losses at every flight's peak); a slow
/// link with a queue smaller than the initial windows of a few dozen connections drops their
/// first flights and idles through retransmission timeouts (measured: 78% of a 2.2 Mbit/s link
/// with a 100 ms queue and 8 connections, 100% with 256 KiB).
pub fn tbf_args(gbps: f64, rtt_ms: f64) -> Vec<String> {
    let rate_bits = (gbps * 1e9 * FRAME_OVERHEAD).round().max(8_000.0) as u64;
    let burst = ((rate_bits / 8) / 500).max(32 * 1024);
    let queue_s = (rtt_ms / 1e3).max(0.1);
    let limit = ((rate_bits as f64 / 8.0 * queue_s) as u64).max(256 * 1024);
    vec![
        "rate".into(),
        format!("{rate_bits}bit"),
        "burst".into(),
        burst.to_string(),
        "limit".into(),
        limit.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> SkySpec {
        let opts = SkyOptions {
            name: "t".into(),
            regions: vec![
                "aws:us-east-1".into(),
                "gcp:europe-west1-b".into(),
                "gcp:asia-southeast1-a".into(),
            ],
            scale: 0.02,
            subnet: 77,
            rtt_scale: 1.0,
            gateway_at: None,
        };
        SkySpec::new(&Catalog::builtin(), &opts).unwrap()
    }

    #[test]
    fn links_are_the_catalog_scaled_and_flows_are_capped_by_the_source_vm() {
        let cat = Catalog::builtin();
        let sky = three();
        assert_eq!(sky.links.len(), 6);
        let (a, c) = (&sky.regions[0].region, &sky.regions[2].region);
        let measured = cat.throughput(a, c).unwrap().gbps.0;
        let l = sky
            .links
            .iter()
            .find(|l| &l.src == a && &l.dst == c)
            .unwrap();
        assert_eq!(l.measured_gbps, measured);
        assert!((l.shaped_gbps - measured * 0.02).abs() < 1e-12);
        // gcp:europe-west1-b → gcp:asia-southeast1-a measured 17.9 Gbps, above the 7 Gbps GCP
        // VM cap: a flow gets the cap.
        let (b, c) = (&sky.regions[1].region, &sky.regions[2].region);
        assert!(cat.throughput(b, c).unwrap().gbps.0 > 7.0);
        assert!((sky.expected_gbps(b, c).unwrap() - 7.0 * 0.02).abs() < 1e-12);
        assert_eq!(sky.expected_grid().len(), 6);
    }

    #[test]
    fn every_direction_gets_its_own_tbf_and_binding_caps_an_ifb() {
        let sky = three();
        let cmds = sky.network_commands();
        let tbfs: Vec<_> = cmds
            .iter()
            .filter(|c| c.contains(&"tbf".to_string()))
            .collect();
        // Six directions, plus an ifb for each region whose cap is below its outgoing sum.
        let ifbs = (0..3).filter(|&i| sky.cap_binds(i).is_some()).count();
        assert!(ifbs >= 1, "gcp:europe-west1-b's cap binds");
        assert_eq!(tbfs.len(), 6 + ifbs);
        // Each link has a TUN device at each end (three pairs, and a control link per
        // region), and the delay line joins them.
        let tuns = cmds
            .iter()
            .filter(|c| c.contains(&"tuntap".to_string()))
            .count();
        assert_eq!(tuns, 3 * 2 + 3 * 2);
        assert_eq!(sky.delay_lines().len(), 3 + 3);
        for r in &sky.regions {
            assert!(
                cmds.iter()
                    .any(|c| c == &["ip", "netns", "add", &r.namespace])
            );
        }
    }

    #[test]
    fn links_and_control_paths_get_half_the_measured_round_trip_each_way() {
        let cat = Catalog::builtin();
        let sky = three();
        let (us, asia) = (&sky.regions[0], &sky.regions[2]);
        let measured = pair_rtt_ms(&cat, &us.region, &asia.region).unwrap();
        assert!(
            measured > 150.0,
            "us-east-1 ↔ asia-southeast1 is far: {measured}"
        );
        let lines = sky.delay_lines();
        let mesh = lines
            .iter()
            .find(|l| l.a.namespace.as_deref() == Some(us.namespace.as_str()) && l.a.dev == "to2")
            .unwrap();
        assert!((mesh.one_way_ms - measured / 2.0).abs() < 1e-9);
        assert_eq!(mesh.b.dev, "to0");
        // The gateway sits in the first region: no delay to it, the pair's to the others.
        let control = |r: &SkyRegion| {
            lines
                .iter()
                .find(|l| {
                    l.b.namespace.as_deref() == Some(r.namespace.as_str()) && l.b.dev == "ctl"
                })
                .unwrap()
                .one_way_ms
        };
        assert_eq!(control(us), 0.0);
        assert!((control(asia) - measured / 2.0).abs() < 1e-9);
        // Halved round trips, or none at all.
        let opts = |rtt_scale| SkyOptions {
            regions: sky.regions.iter().map(|r| r.region.to_string()).collect(),
            rtt_scale,
            gateway_at: Some("gcp:asia-southeast1-a".into()),
            ..SkyOptions::default()
        };
        let half = SkySpec::new(&cat, &opts(0.5)).unwrap();
        assert!((half.regions[0].control_rtt_ms - measured / 2.0).abs() < 1e-9);
        assert_eq!(half.regions[2].control_rtt_ms, 0.0);
        let none = SkySpec::new(&cat, &opts(0.0)).unwrap();
        assert!(none.delay_lines().iter().all(|l| l.one_way_ms == 0.0));
    }

    #[test]
    fn tbf_rates_include_frame_overhead_so_goodput_hits_the_target() {
        let args = tbf_args(0.1, 0.0);
        let rate: f64 = args[1].trim_end_matches("bit").parse().unwrap();
        assert!((rate / 1e8 - FRAME_OVERHEAD).abs() < 1e-6);
        // The queue holds a round trip at the rate (100 ms at least).
        let limit = |rtt| tbf_args(0.1, rtt)[5].parse::<f64>().unwrap();
        assert!((limit(0.0) / (rate / 8.0 * 0.1) - 1.0).abs() < 1e-3);
        assert!((limit(250.0) / (rate / 8.0 * 0.25) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn bad_options_name_what_is_wrong() {
        let cat = Catalog::builtin();
        let err = |o: SkyOptions| SkySpec::new(&cat, &o).unwrap_err().to_string();
        let base = SkyOptions::default();
        assert!(
            err(SkyOptions {
                name: "has-dash".into(),
                ..base.clone()
            })
            .contains("sky name")
        );
        assert!(
            err(SkyOptions {
                scale: 0.0,
                ..base.clone()
            })
            .contains("scale")
        );
        assert!(
            err(SkyOptions {
                regions: vec!["aws:us-east-1".into()],
                ..base.clone()
            })
            .contains("2 to 32")
        );
        assert!(
            err(SkyOptions {
                regions: vec!["aws:us-east-1".into(), "aws:nowhere-1".into()],
                ..base.clone()
            })
            .contains("aws:nowhere-1")
        );
        assert!(
            err(SkyOptions {
                regions: vec!["aws:us-east-1".into(), "aws:us-east-1".into()],
                ..base.clone()
            })
            .contains("twice")
        );
        assert!(
            err(SkyOptions {
                rtt_scale: -1.0,
                ..base.clone()
            })
            .contains("rtt scale")
        );
        assert!(
            err(SkyOptions {
                gateway_at: Some("aws:eu-west-1".into()),
                ..base
            })
            .contains("not one of the sky's regions")
        );
    }

    #[test]
    fn the_default_sky_is_buildable_from_the_builtin_catalog() {
        let sky = SkySpec::new(&Catalog::builtin(), &SkyOptions::default()).unwrap();
        assert_eq!(sky.regions.len(), 8);
        assert_eq!(sky.links.len(), 56);
        let clouds: std::collections::BTreeSet<_> = sky.regions.iter().map(|r| r.store).collect();
        assert_eq!(clouds.len(), 3);
    }
}
