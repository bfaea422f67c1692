//! `skyx bench paths`: the throughput and RTT of every ordered pair of regions, measured by
//! real agents (one per region, launched through a [`Provider`]) with iperf3-like probes, and
//! written in the catalog's schemas so the planner can use what was measured instead of what
//! was published.

use std::time::Duration;

use skyx_agent_api::wire::{ProbeListen, ProbeRequest, ProbeResult};
use skyx_agent_api::{AgentClient, ClientError};
use skyx_catalog::{Gbps, LinkThroughput, RegionId, ThroughputGrid};

use skyx_provision::{AgentSession, LaunchRequest, LaunchedAgent, Provider, SessionError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathsError {
    #[error("bench paths: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Launch(#[from] SessionError),
    #[error("the gateway's control identity: {0}")]
    Identity(#[from] skyx_agent_api::TlsError),
    #[error("probing {src} → {dst}: {source}")]
    Probe {
        src: String,
        dst: String,
        source: ClientError,
    },
}

/// How to probe.
#[derive(Debug, Clone)]
pub struct PathOptions {
    /// Parallel TCP connections per probe (iperf3 -P).
    pub connections: u32,
    /// Seconds each ordered pair is measured.
    pub seconds: f64,
}

/// One ordered pair, measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathMeasurement {
    pub src: String,
    pub dst: String,
    #[serde(flatten)]
    pub result: ProbeResult,
}

/// Launches one agent per region and probes every ordered pair in turn (one at a time, so no
/// probe shares a region's egress with another). Every agent is terminated before returning,
/// on success or failure. `on_pair` sees each measurement as it completes.
pub async fn measure_paths(
    provider: &dyn Provider,
    regions: &[String],
    options: &PathOptions,
    on_pair: &mut (dyn FnMut(&PathMeasurement) + Send),
) -> Result<Vec<PathMeasurement>, PathsError> {
    if regions.len() < 2 {
        return Err(PathsError::BadRequest(format!(
            "need at least two regions, got {}",
            regions.len()
        )));
    }
    for (i, r) in regions.iter().enumerate() {
        if regions[..i].contains(r) {
            return Err(PathsError::BadRequest(format!(
                "region {r} is listed twice"
            )));
        }
    }
    if !(options.seconds > 0.0 && options.seconds <= 600.0) {
        return Err(PathsError::BadRequest(format!(
            "--seconds {}: must be in (0, 600]",
            options.seconds
        )));
    }
    if options.connections == 0 || options.connections > 256 {
        return Err(PathsError::BadRequest(format!(
            "--connections {}: must be 1 to 256",
            options.connections
        )));
    }
    let gateway = std::sync::Arc::new(skyx_agent_api::GatewayIdentity::generate()?);
    let launches = regions.iter().map(|region| {
        AgentSession::launch(
            provider,
            LaunchRequest {
                name: format!("{region}#probe"),
                instance: None,
                job: "paths".into(),
                region: region.clone(),
                token: skyx_agent_api::control_tls::launch_token(),
                gateway: gateway.clone(),
            },
        )
    });
    let mut agents: Vec<AgentSession> = Vec::new();
    let mut first_error = None;
    for launched in futures::future::join_all(launches).await {
        match launched {
            Ok(a) => agents.push(a),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let result = match first_error {
        Some(e) => Err(PathsError::Launch(e)),
        None => probe_all(&agents, options, on_pair).await,
    };
    for a in &mut agents {
        a.agent.handle.terminate().await;
    }
    result
}

async fn probe_all(
    sessions: &[AgentSession],
    options: &PathOptions,
    on_pair: &mut (dyn FnMut(&PathMeasurement) + Send),
) -> Result<Vec<PathMeasurement>, PathsError> {
    let clients: Vec<&AgentClient> = sessions.iter().map(|s| &s.client).collect();
    let agents: Vec<&LaunchedAgent> = sessions.iter().map(|s| &s.agent).collect();
    let mut out = Vec::new();
    for (i, src) in agents.iter().enumerate() {
        for (j, dst) in agents.iter().enumerate() {
            if i == j {
                continue;
            }
            let fail = |source| PathsError::Probe {
                src: src.region.clone(),
                dst: dst.region.clone(),
                source,
            };
            let listener = clients[j]
                .probe_listen(&ProbeListen {
                    accept_for_s: options.seconds + 30.0,
                })
                .await
                .map_err(fail)?;
            let result = clients[i]
                .probe_send(&ProbeRequest {
                    addr: listener.addr,
                    connections: options.connections,
                    seconds: options.seconds,
                })
                .await
                .map_err(fail)?;
            let m = PathMeasurement {
                src: src.region.clone(),
                dst: dst.region.clone(),
                result,
            };
            on_pair(&m);
            out.push(m);
            // Let the queues of the last probe drain before the next one starts.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(out)
}

/// The measurements as a throughput grid (catalog schema). Pairs whose regions are not catalog
/// ids (e.g. `local`) are left out.
pub fn to_grid(measurements: &[PathMeasurement]) -> ThroughputGrid {
    let mut grid = ThroughputGrid::default();
    for m in measurements {
        if let (Ok(src), Ok(dst)) = (m.src.parse::<RegionId>(), m.dst.parse::<RegionId>()) {
            grid.insert(
                src,
                dst,
                LinkThroughput {
                    gbps: Gbps(m.result.gbps),
                    connections: m.result.connections,
                    samples: 1,
                },
            );
        }
    }
    grid
}

/// The RTTs in Skyplane's latency.csv schema (`min_rtt`, and `avg_rtt` as the median of the
/// probe's pings, in ms), catalog regions only.
pub fn to_rtt_csv(measurements: &[PathMeasurement]) -> String {
    let mut out = String::from("src_region,dst_region,min_rtt,avg_rtt\n");
    for m in measurements {
        if m.src.parse::<RegionId>().is_ok() && m.dst.parse::<RegionId>().is_ok() {
            out.push_str(&format!(
                "{},{},{:.3},{:.3}\n",
                m.src, m.dst, m.result.rtt_ms_min, m.result.rtt_ms_median
            ));
        }
    }
    out
}
