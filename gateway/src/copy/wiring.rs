//! The agents and routes of a run: launching and installing agents, wiring routes back to
//! front, watching agents' liveness, replacing dead ones and rebuilding their routes, and
//! tearing everything down.

use skyx_protocol::Dests;
use skyx_store::{StoreConfig, WriteOptions};

use super::*;

/// Link ids from here up name a tree's links (`Run::links`); those below, routes.
const TREE_LINKS: u32 = 1 << 31;

/// Unanswered polls in a row after which an agent is lost.
const LOST_AFTER_POLLS: u32 = 3;

/// Plans made around regions out of capacity before a copy gives up: each launches every
/// agent again.
const CAPACITY_REPLANS: u32 = 3;

/// How soon a live agent answers a hello, however loaded its machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl Run<'_> {
    pub(super) fn identity(&self, name: &str) -> Result<IdentityWire, CopyError> {
        let id = self
            .ca
            .issue(name)
            .map_err(|e| CopyError::Setup(e.to_string()))?;
        Ok(id.to_wire())
    }

    /// Destination `d`'s store (as agents open it), settings and write options.
    fn destination(&self, d: usize) -> (String, Option<StoreConfig>, WriteOptions) {
        let job = self.job;
        match d.checked_sub(1) {
            None => (
                job.dst_store.clone(),
                job.dst_settings.clone(),
                job.dst_write.clone(),
            ),
            Some(i) => {
                let more = &job.broadcast.as_ref().expect("checked").more[i];
                (
                    more.store.clone(),
                    more.settings.clone(),
                    more.write.clone(),
                )
            }
        }
    }

    /// The job as agent `name` is installed with: reading the source when `source`, writing
    /// destination `sink` when it names one.
    pub(super) fn job_spec(
        &self,
        name: &str,
        source: bool,
        sink: Option<usize>,
    ) -> Result<JobSpec, CopyError> {
        // `--tpslimit` is shared by the agents using one store: the sources, or the sinks of
        // one destination.
        let topology = &self.topology;
        let (sources, sinks) = (
            topology.sources().len(),
            sink.map_or(0, |d| {
                let writers = topology.sinks().into_iter();
                writers
                    .filter(|&a| topology.destination_of(a) == Some(d))
                    .count()
            }),
        );
        let (sink_store, sink_settings, sink_write) = match sink {
            Some(d) => {
                let (store, settings, write) = self.destination(d);
                (Some(store), settings, write)
            }
            None => (None, None, Default::default()),
        };
        Ok(JobSpec {
            job: self.job_id.0,
            identity: self.identity(name)?,
            hop_key: self.keys.hop.to_wire(),
            // Only the ends hold it: a relay forwards what it cannot read.
            chunk_key: (source || sink.is_some())
                .then(|| self.keys.chunk.as_ref().map(|k| k.to_wire()))
                .flatten(),
            transport: self.job.options.transport,
            compression: self.job.options.compression,
            source_store: source.then(|| self.job.src_store.clone()),
            sink_store,
            source_settings: source.then(|| self.job.src_settings.clone()).flatten(),
            sink_settings,
            sink_write,
            read_concurrency: self.job.options.read_concurrency,
            write_concurrency: self.job.options.write_concurrency,
            sink_retry_ms: Some(self.job.options.sink_retry.as_millis() as u64),
            requests_per_second: self
                .job
                .options
                .tps_limit
                .map(|t| t / (if source { sources } else { sinks }).max(1) as f64),
            read_bytes_per_second: self
                .job
                .options
                .bw_limit
                .filter(|_| source)
                .map(|b| b as f64 / sources.max(1) as f64),
        })
    }

    /// Takes a launched, installed agent into the run and starts polling it.
    pub(super) fn adopt(
        &mut self,
        slot: AgentSlot,
        session: AgentSession,
        source: bool,
        sink: Option<usize>,
    ) -> usize {
        let idx = self.agents.len();
        let AgentSession {
            agent: launched,
            client,
        } = session;
        let poller = tokio::spawn(poll_agent(idx, client.clone(), self.polls.clone()));
        self.agents.push(AgentRt {
            stands_for: slot.clone(),
            slot,
            source,
            sink,
            client,
            launched,
            alive: true,
            started: Instant::now(),
            ended: None,
            metrics: AgentMetrics::default(),
            poll_failures: 0,
            poller: Some(poller),
            sink_knows: HashSet::new(),
            sink_forget: Vec::new(),
        });
        idx
    }

    /// Launches the agent for `slot`, installs the job on it (as a source and/or sink, or a
    /// relay when neither) and returns its index.
    pub(super) async fn launch(
        &mut self,
        slot: AgentSlot,
        source: bool,
        sink: Option<usize>,
    ) -> Result<usize, CopyError> {
        let spec = self.job_spec(&slot.name(), source, sink)?;
        let launched = launch_and_install(self.provider, &slot, &self.gateway, &spec).await?;
        Ok(self.adopt(slot, launched, source, sink))
    }

    /// Connects a route's agents back to front (each listener must exist before its sender
    /// connects), forking where `shape` branches, and returns its id.
    pub(super) async fn build_route(&mut self, shape: RouteSpec) -> Result<RouteId, CopyError> {
        let route = RouteId(self.routes.len() as u32);
        let n = shape.agents.len();
        let chain = shape.sinks.len() == 1 && (1..n).all(|i| shape.parents[i - 1] == i - 1);
        let links: Vec<u32> = (1..n)
            .map(|_| {
                if chain {
                    return route.0;
                }
                let id = TREE_LINKS + self.links.len() as u32;
                self.links.insert(id, route.0 as usize);
                id
            })
            .collect();
        // A copy to one destination sends every chunk everywhere (no mask).
        let broadcast = self.dsts.len() > 1;
        let dests_below = |node: usize| {
            let below = shape.destinations_below(node);
            match broadcast {
                true => below
                    .into_iter()
                    .fold(Dests::ALL, |m, d| m.with(Dests::one(d))),
                false => Dests::ALL,
            }
        };
        let mut addrs: Vec<Option<std::net::SocketAddr>> = vec![None; n];
        let branches = |node: usize, addrs: &[Option<std::net::SocketAddr>]| -> Vec<Branch> {
            shape
                .children(node)
                .map(|c| Branch {
                    route: links[c - 1],
                    next: NextHop {
                        addr: addrs[c].expect("children are wired first"),
                        connections: shape.connections[c - 1],
                    },
                    dests: dests_below(c).0,
                })
                .collect()
        };
        for node in (1..n).rev() {
            let onward = branches(node, &addrs);
            let addr = self.agents[shape.agents[node]]
                .client
                .listen(&ListenRequest {
                    route: links[node - 1],
                    onward,
                })
                .await?
                .addr;
            addrs[node] = Some(addr);
        }
        let onward = branches(0, &addrs);
        let first = onward.iter().map(|b| b.next.connections).max().unwrap_or(1);
        self.agents[shape.agents[0]]
            .client
            .add_route(&RouteRequest {
                route: route.0,
                onward,
            })
            .await?;
        let window = (first as usize * 4).clamp(32, 512);
        self.routes.push(RouteRt {
            shape,
            links,
            alive: true,
            down_why: None,
            rebuilt: false,
            drained: false,
            window,
        });
        Ok(route)
    }

    /// The route a link id names (a chain's links carry the route's own id).
    pub(super) fn route_of_link(&self, link: u32) -> Option<usize> {
        if link >= TREE_LINKS {
            self.links.get(&link).copied()
        } else {
            Some(link as usize)
        }
    }

    /// Launches every agent of the topology and wires its routes. When regions have no
    /// capacity for some of its agents (the cloud says so), the route is planned again without
    /// them (`plan_around`, at most `CAPACITY_REPLANS` times): what this plan launched is
    /// stopped, having moved no byte, and the new plan is launched instead. An interrupt is
    /// answered once the launches in flight end (a launch dropped halfway could leave a VM no
    /// one tears down): nothing more is launched.
    pub(super) async fn setup(&mut self, cancel: &watch::Receiver<bool>) -> Result<(), CopyError> {
        let mut replans = 0;
        loop {
            // Before each round: Ctrl-C while a plan was made again, or the last one's agents
            // were stopped, launches nothing more.
            self.unless_interrupted(cancel)?;
            let topo = self.topology.clone();
            let sources = topo.sources();
            let mut specs = Vec::with_capacity(topo.agents.len());
            for (i, slot) in topo.agents.iter().enumerate() {
                specs.push(self.job_spec(
                    &slot.name(),
                    sources.contains(&i),
                    topo.destination_of(i),
                )?);
            }
            // Launch and install every agent at once: launching is the slow part on real
            // clouds.
            let (provider, gateway) = (self.provider, self.gateway.clone());
            let launched = futures::future::join_all(
                topo.agents
                    .iter()
                    .zip(&specs)
                    .map(|(slot, spec)| launch_and_install(provider, slot, &gateway, spec)),
            )
            .await;
            let (mut index, mut full, mut first_error) = (HashMap::new(), Vec::new(), None);
            for (i, res) in launched.into_iter().enumerate() {
                match res {
                    Ok(l) => {
                        let roles = (sources.contains(&i), topo.destination_of(i));
                        index.insert(i, self.adopt(topo.agents[i].clone(), l, roles.0, roles.1));
                    }
                    Err(e) => {
                        match e.out_of_capacity() {
                            Some(f) if !full.contains(&f) => full.push(f),
                            Some(_) => {}
                            None => tracing::warn!(error = %e, "a launch failed"),
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
            // What launched is adopted, so the teardown reaches it.
            self.unless_interrupted(cancel)?;
            if !full.is_empty() && self.job.options.capacity_replan.is_some() {
                let planned = if replans < CAPACITY_REPLANS {
                    self.plan_around(&full).await
                } else {
                    None
                };
                let Some(new) = planned else {
                    let regions: Vec<String> =
                        full.iter().map(|(r, why)| format!("{r} ({why})")).collect();
                    return Err(CopyError::Setup(format!(
                        "no capacity in {}, and no plan avoids it (an end's own region, a \
                         route pinned through it, or {CAPACITY_REPLANS} plans made around \
                         regions already)",
                        regions.join("; ")
                    )));
                };
                replans += 1;
                tracing::warn!(plan = %new.summary, "no capacity; planned again");
                self.retire(index.into_values().collect()).await;
                self.topology = new.topology;
                continue;
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            for r in &topo.routes {
                let agents = r.agents.iter().map(|a| index[a]).collect();
                self.build_route(RouteSpec {
                    agents,
                    ..r.clone()
                })
                .await?;
            }
            return Ok(());
        }
    }

    /// `Interrupted` once the user asked to stop.
    fn unless_interrupted(&self, cancel: &watch::Receiver<bool>) -> Result<(), CopyError> {
        match *cancel.borrow() {
            true => Err(CopyError::Interrupted {
                resume: self.resume_hint(),
            }),
            false => Ok(()),
        }
    }

    /// Marks agents that died (process gone, or unreachable for a while); returns them.
    pub(super) fn find_dead_agents(&mut self) -> Vec<usize> {
        let mut died = Vec::new();
        for (i, rt) in self.agents.iter_mut().enumerate() {
            // Three polls in a row unanswered (each allowed its wait and a grace of seconds) is
            // a frozen or unreachable agent. Slow data links do not delay the answers: polls
            // travel on their own connection and heavy work runs on the blocking pool.
            if rt.alive && (!rt.launched.handle.is_alive() || rt.poll_failures >= LOST_AFTER_POLLS)
            {
                tracing::warn!(agent = %rt.slot.name(), id = %rt.launched.handle.id(), "agent lost");
                rt.alive = false;
                rt.ended = Some(Instant::now());
                if let Some(p) = rt.poller.take() {
                    p.abort();
                }
                died.push(i);
            }
        }
        died
    }

    /// Gives up the routes of agents that died and replaces them.
    pub(super) async fn check_agents(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        if self.fail_routes_of_dead_agents(tracker) == 0 {
            return Ok(());
        }
        self.repair(tracker).await
    }

    /// Finds agents that died and gives up every live route through them; how many died.
    fn fail_routes_of_dead_agents(&mut self, tracker: &mut Tracker) -> usize {
        let died = self.find_dead_agents();
        let mut resent = Vec::new();
        for (r, route) in self.routes.iter_mut().enumerate() {
            if route.alive && route.shape.agents.iter().any(|a| died.contains(a)) {
                route.alive = false;
                resent.extend(tracker.handle_route_failed(RouteId(r as u32)));
            }
        }
        self.note_resent(&resent, || "an agent of its route died".into());
        died.len()
    }

    /// Rebuilds every dead route whose agents can be replaced: dead agents are relaunched
    /// in their region (once each) and the route is wired anew under a new id.
    pub(super) async fn repair(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        let mut replacement: HashMap<usize, usize> = HashMap::new();
        // What ended the last route that could not be rebuilt, for the final error.
        let mut last_failure = None;
        // Each dead route is rebuilt once; an agent found dead while rebuilding fails the
        // other routes through it, which are rebuilt in the next round.
        loop {
            // (A drained route is not rebuilt: the plan moved off it.)
            let dead_routes: Vec<usize> = (0..self.routes.len())
                .filter(|&r| {
                    let route = &self.routes[r];
                    !route.alive && !route.rebuilt && !route.drained
                })
                .collect();
            if dead_routes.is_empty() {
                break;
            }
            for r in dead_routes {
                if let Err(e) = self.rebuild(r, &mut replacement, tracker).await {
                    last_failure = Some(match &self.routes[r].down_why {
                        Some(down) => format!("{down}; rebuilding the route failed: {e}"),
                        None => format!("rebuilding a route failed: {e}"),
                    });
                }
            }
        }
        if !self.routes.iter().any(RouteRt::taking) {
            // Routes a refined plan drained still run: better the old route than none.
            let mut undrained = 0;
            for route in self.routes.iter_mut().filter(|r| r.alive && r.drained) {
                route.drained = false;
                undrained += 1;
            }
            if undrained > 0 {
                tracing::warn!(
                    undrained,
                    "no planned route is left; the drained ones take chunks again"
                );
                return Ok(());
            }
        }
        if !self.routes.iter().any(|r| r.alive) {
            return Err(CopyError::NoRoutes {
                why: last_failure.unwrap_or_else(|| "no route could be rebuilt".into()),
                resume: self.resume_hint(),
            });
        }
        Ok(())
    }

    /// Rebuilds dead route `r` under a new id, replacing its dead agents; why it could not.
    async fn rebuild(
        &mut self,
        r: usize,
        replacement: &mut HashMap<usize, usize>,
        tracker: &mut Tracker,
    ) -> Result<(), String> {
        self.routes[r].rebuilt = true;
        let shape = self.routes[r].shape.clone();
        let old = shape.agents.clone();
        // A route that stalled may have a frozen agent on it: find out now, before wiring
        // through it again would wait out a control call.
        self.confirm_alive(&old).await;
        let mut failure = String::new();
        // A route may die before its agent's death is noticed (the next hop's connections
        // reset first), and wiring may find another agent gone: look again and retry.
        for _attempt in 0..3 {
            self.fail_routes_of_dead_agents(tracker);
            let agents = self.replace_dead(&old, replacement).await?;
            match self
                .build_route(RouteSpec {
                    agents,
                    ..shape.clone()
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding a route failed");
                    failure = e.to_string();
                    // Give a dying process a moment to be seen as dead.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        Err(failure)
    }

    /// Asks each live agent of `agents` whether it still answers, all at once; one that does
    /// not within [`ANSWER_WITHIN`] is counted as lost (its polls would say so in a few more
    /// seconds), so the route is rebuilt around it rather than through it.
    async fn confirm_alive(&mut self, agents: &[usize]) {
        let asks = agents.iter().filter(|&&a| self.agents[a].alive).map(|&a| {
            let client = self.agents[a].client.clone();
            async move {
                (
                    a,
                    tokio::time::timeout(ANSWER_WITHIN, client.metrics()).await,
                )
            }
        });
        for (a, answer) in futures::future::join_all(asks).await {
            if !matches!(answer, Ok(Ok(_))) {
                tracing::warn!(agent = %self.agents[a].slot.name(), "agent does not answer");
                self.agents[a].poll_failures = LOST_AFTER_POLLS;
            }
        }
    }

    /// What a user can do after a run that ended early.
    pub(super) fn resume_hint(&self) -> String {
        match &self.journal {
            Some(_) => "what landed is journaled: run the same command with --resume to continue (without it, objects this run completed are copied again; the parts of unfinished ones are kept either way)".to_string(),
            None => "nothing was journaled; run the copy again".to_string(),
        }
    }

    /// The route `old` with its dead agents replaced (each dead agent once, shared through
    /// `replacement`); why not when the replacement budget is spent or a launch fails.
    pub(super) async fn replace_dead(
        &mut self,
        old: &[usize],
        replacement: &mut HashMap<usize, usize>,
    ) -> Result<Vec<usize>, String> {
        let mut agents = Vec::with_capacity(old.len());
        for &a in old {
            if self.agents[a].alive {
                agents.push(a);
                continue;
            }
            if let Some(&n) = replacement.get(&a)
                && self.agents[n].alive
            {
                agents.push(n);
                continue;
            }
            if self.replaced >= self.job.options.max_replacements {
                return Err(format!(
                    "{} agent(s) replaced already (--max-replacements {})",
                    self.replaced, self.job.options.max_replacements
                ));
            }
            self.replaced += 1;
            let mut slot = self.agents[a].slot.clone();
            slot.index += 100 * self.replaced;
            tracing::warn!(agent = %slot.name(), "launching a replacement agent");
            // In the roles of the agent it replaces (a destination that relays is one agent
            // on two nodes).
            let (source, sink) = (self.agents[a].source, self.agents[a].sink);
            match self.launch(slot, source, sink).await {
                Ok(n) => {
                    self.agents[n].stands_for = self.agents[a].stands_for.clone();
                    replacement.insert(a, n);
                    agents.push(n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replacement failed");
                    return Err(format!("launching a replacement agent failed: {e}"));
                }
            }
        }
        Ok(agents)
    }

    /// Stops `agents` for good (the plan they were launched for was given up); their time
    /// is metered as any agent's.
    async fn retire(&mut self, agents: Vec<usize>) {
        let stops = (self.agents.iter_mut().enumerate())
            .filter(|(i, _)| agents.contains(i))
            .map(|(_, rt)| async move {
                if let Some(p) = rt.poller.take() {
                    p.abort();
                }
                let _ = rt.client.shutdown().await;
                rt.launched.handle.terminate().await;
                rt.ended = Some(Instant::now());
                rt.alive = false;
            });
        futures::future::join_all(stops).await;
    }

    pub(super) async fn teardown(&mut self) {
        let stops = self.agents.iter_mut().map(|rt| async move {
            if let Some(p) = rt.poller.take() {
                p.abort();
            }
            if rt.alive {
                let _ = rt.client.shutdown().await;
            }
            rt.launched.handle.terminate().await;
            rt.ended.get_or_insert_with(Instant::now);
            rt.alive = false;
        });
        futures::future::join_all(stops).await;
    }
}

/// Launches one agent and installs `spec` on it; an agent that cannot be installed is
/// terminated, never left running.
pub(super) async fn launch_and_install(
    provider: &dyn Provider,
    slot: &AgentSlot,
    gateway: &Arc<GatewayIdentity>,
    spec: &JobSpec,
) -> Result<AgentSession, CopyError> {
    let session = AgentSession::launch(
        provider,
        LaunchRequest {
            name: slot.name(),
            instance: None,
            job: format!("{:016x}", spec.job),
            region: slot.region.clone(),
            token: skyx_agent_api::control_tls::launch_token(),
            gateway: gateway.clone(),
        },
    )
    .await?;
    let session = session
        .then(async |client: &AgentClient| client.install(spec).await)
        .await?;
    Ok(session)
}

/// Long-polls one agent's events for the run loop until aborted.
pub(super) async fn poll_agent(
    idx: usize,
    client: AgentClient,
    out: mpsc::UnboundedSender<PollResult>,
) {
    let mut after = 0;
    loop {
        let res = client.events(after, Duration::from_millis(500)).await;
        let failed = res.is_err();
        if let Ok(r) = &res {
            after = r.next;
        }
        if out.send((idx, res)).is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
