//! The run loop: keeping every live route's window of chunks full (uploads opened first),
//! folding agents' events into the tracker (journaled first), and failing objects.

use super::*;
use skyx_protocol::Dests;

use crate::journal::{ObjectRecord, PartRecord};

/// Where a chunk order's id carries its attempt. A chunk dispatched again goes out under a new
/// wire id: a relay that took (and acknowledged upstream) an earlier attempt, whose next hop
/// then gave it up, would otherwise take the new one for a duplicate of a chunk it already
/// forwarded, acknowledge it and send it nowhere. Agents echo the wire id in their events.
const ATTEMPT_SHIFT: u32 = 48;

/// The id chunk `chunk` travels under on its `attempt`th dispatch.
fn wire_id(chunk: ChunkId, attempt: u32) -> u64 {
    assert!(chunk.0 < 1 << ATTEMPT_SHIFT, "chunk ids stay under 2^48");
    chunk.0 | (u64::from(attempt & 0xFFFF) << ATTEMPT_SHIFT)
}

/// The chunk an agent's event names, whatever attempt it reports.
fn chunk_of(wire: u64) -> ChunkId {
    ChunkId(wire & ((1 << ATTEMPT_SHIFT) - 1))
}

impl<'a> Run<'a> {
    pub(super) async fn drive(
        &mut self,
        tracker: &mut Tracker,
        polls: &mut mpsc::UnboundedReceiver<PollResult>,
        progress: &mut (dyn FnMut(&ProgressSnapshot) + Send),
        started: Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), CopyError> {
        let mut finalizing: JoinSet<(u32, Result<Vec<Verification>, String>)> = JoinSet::new();
        let mut ready: VecDeque<u32> = VecDeque::new();
        let mut last_progress = Instant::now() - Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.admit_ready(tracker).await?;
            self.fill_windows(tracker).await?;
            // Objects written whole and checked by their sinks are done as they land: no
            // request, so no task; the rest are completed and verified on tasks.
            let mut checked = Vec::new();
            while let Some(e) = tracker.poll_event() {
                match e {
                    TrackerEvent::ObjectComplete { object } => {
                        let by_sinks: Option<Vec<Verification>> = self
                            .active
                            .get(&object)
                            .and_then(|a| a.at.iter().map(|d| d.sink_verified).collect());
                        match by_sinks {
                            Some(v) => checked.push((object, Ok(v))),
                            None => ready.push_back(object),
                        }
                    }
                    TrackerEvent::ObjectFailed {
                        object,
                        chunk,
                        attempts,
                    } => {
                        let why = self.attempts_spent(chunk.0, attempts);
                        self.object_failed(object, why, tracker).await?;
                    }
                }
            }
            if !checked.is_empty() {
                self.finalized(checked, tracker).await?;
            }
            while finalizing.len() < self.job.options.finalize_concurrency.max(1) {
                let Some(object) = ready.pop_front() else {
                    break;
                };
                finalizing.spawn(self.finalize(object));
            }
            if last_progress.elapsed() >= Duration::from_millis(100) {
                progress(&self.snapshot(tracker, started));
                last_progress = Instant::now();
            }
            if self.feed.ended() && tracker.is_done() && ready.is_empty() && finalizing.is_empty() {
                progress(&self.snapshot(tracker, started));
                return Ok(());
            }
            let wants_items = self.wants_items(tracker, 0, 0);
            tokio::select! {
                Some((agent, res)) = polls.recv() => {
                    let mut batch = vec![(agent, res)];
                    while let Ok(more) = polls.try_recv() {
                        batch.push(more);
                    }
                    self.handle_polls(batch, tracker).await?;
                }
                item = self.feed.next(), if wants_items => {
                    self.admit_arrived(item, tracker).await?;
                }
                Some(done) = finalizing.join_next(), if !finalizing.is_empty() => {
                    let mut finished = vec![done.expect("finalize does not panic")];
                    while let Some(done) = finalizing.try_join_next() {
                        finished.push(done.expect("finalize does not panic"));
                    }
                    self.finalized(finished, tracker).await?;
                }
                launched = Run::launches(&mut self.refining), if self.refining.is_some() => {
                    self.launched(launched).await;
                }
                _ = tick.tick() => {
                    let late = tracker.handle_tick(Instant::now());
                    let waited = self.job.options.tracker.landing_timeout.as_secs();
                    self.note_resent(&late, || format!("not landed within {waited} s"));
                    self.check_agents(tracker).await?;
                    self.refine(tracker).await;
                }
                _ = cancel.changed() => {
                    if *cancel.borrow() {
                        return Err(CopyError::Interrupted { resume: self.resume_hint() });
                    }
                }
            }
        }
    }

    /// Objects whose completion and verification ended (at every destination): the verified
    /// are journaled complete (one transaction for all) and let go; the others fail.
    async fn finalized(
        &mut self,
        finished: Vec<(u32, Result<Vec<Verification>, String>)>,
        tracker: &mut Tracker,
    ) -> Result<(), CopyError> {
        let mut batch = JournalBatch::default();
        let mut verified = Vec::new();
        let mut failed = Vec::new();
        for (object, res) in finished {
            match res {
                Ok(checks) => {
                    for v in checks {
                        *self
                            .verified
                            .entry(format!("{v:?}").to_lowercase())
                            .or_default() += 1;
                    }
                    if let Some(a) = self.active.get(&object) {
                        let record = ObjectRecord {
                            upload: None,
                            complete: true,
                            ..a.record.clone()
                        };
                        batch.objects.push((a.item.src_key.clone(), record));
                    }
                    verified.push(object);
                }
                Err(why) => failed.push((object, why)),
            }
        }
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        for object in verified {
            self.release(object, tracker);
        }
        for (object, why) in failed {
            tracker.handle_object_failed_after_landing(object);
            self.object_failed(object, why, tracker).await?;
        }
        Ok(())
    }

    /// Keeps every live route's window of chunks full, spreading chunks over the routes in
    /// small batches (round robin) so that every route gets work even when there is little.
    pub(super) async fn fill_windows(&mut self, tracker: &mut Tracker) -> Result<(), CopyError> {
        let now = Instant::now();
        let n = self.routes.len();
        if n == 0 {
            return Ok(());
        }
        let start = self.next_route % n;
        self.next_route = self.next_route.wrapping_add(1);
        let mut orders: Vec<Vec<ChunkSpec>> = vec![Vec::new(); n];
        loop {
            let mut progressed = false;
            for k in 0..n {
                let r = (start + k) % n;
                let route = &self.routes[r];
                if !route.taking() {
                    continue;
                }
                let in_flight = tracker.in_flight_on(RouteId(r as u32)) + orders[r].len();
                let room = route.window.saturating_sub(in_flight);
                // Top up in batches, not chunk by chunk, unless the route is idle.
                if room == 0
                    || (orders[r].is_empty() && in_flight > 0 && room < (route.window / 4).min(16))
                {
                    continue;
                }
                // Two at a time per round: fine-grained round robin (a route's chunks of all
                // rounds still go out in one dispatch call).
                let batch = tracker.poll_dispatch(RouteId(r as u32), room.min(2), now);
                if !batch.is_empty() {
                    progressed = true;
                    orders[r].extend(batch);
                }
            }
            if !progressed {
                break;
            }
        }
        for (r, batch) in orders.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            self.open_uploads(&batch).await?;
            // An object whose upload could not be opened fails alone: its chunks go nowhere.
            let batch: Vec<ChunkSpec> = batch
                .into_iter()
                .filter(|s| {
                    let refused = self
                        .active
                        .get(&s.object)
                        .is_none_or(|a| a.at.iter().any(|d| d.refused_upload));
                    if refused {
                        tracker.handle_chunk_failed(s.id);
                    }
                    !refused
                })
                .collect();
            let batch: Vec<(ChunkSpec, Dests, u64)> = batch
                .into_iter()
                .map(|s| {
                    let attempt = tracker.attempt(s.id).unwrap_or(1);
                    (s, tracker.dests_of(s.id), wire_id(s.id, attempt))
                })
                .collect();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = self.send_to_route(r, &batch).await {
                tracing::warn!(route = r, error = %e, "dispatch failed; the route is given up");
                self.routes[r].alive = false;
                let resent = tracker.handle_route_failed(RouteId(r as u32));
                self.note_resent(&resent, || format!("its route could not be sent to: {e}"));
            }
        }
        Ok(())
    }

    /// Tells route `r`'s sinks of the objects of `batch` they do not know yet (and of those
    /// to forget), then hands `batch` to the route's source with its objects, each chunk
    /// naming the destinations it is for.
    async fn send_to_route(
        &mut self,
        r: usize,
        batch: &[(ChunkSpec, Dests, u64)],
    ) -> Result<(), ClientError> {
        let mut objects: Vec<u32> = batch.iter().map(|(s, ..)| s.object).collect();
        objects.dedup();
        let shape = &self.routes[r].shape;
        let sinks: Vec<(usize, usize)> = shape
            .sinks
            .iter()
            .map(|&(node, d)| (shape.agents[node], d))
            .collect();
        for (sink, d) in sinks {
            self.register_at_sink(sink, d, &objects).await?;
        }
        let source = self.routes[r].shape.agents[0];
        let dispatch = Dispatch {
            route: r as u32,
            objects: objects
                .iter()
                .filter_map(|o| self.active.get(o).map(|a| a.source_object(*o)))
                .collect(),
            chunks: batch
                .iter()
                .map(|(s, dests, wire)| ChunkOrder {
                    chunk: *wire,
                    object: s.object,
                    offset: s.offset,
                    len: s.len,
                    dests: dests.0,
                })
                .collect(),
        };
        self.agents[source].client.dispatch(&dispatch).await
    }

    /// Tells `sink` (writing destination `d`) of the `objects` it does not know yet, and of
    /// those to forget.
    async fn register_at_sink(
        &mut self,
        sink: usize,
        d: usize,
        objects: &[u32],
    ) -> Result<(), ClientError> {
        let mut register = SinkObjects::default();
        for &o in objects {
            if !self.agents[sink].sink_knows.contains(&o)
                && let Some(a) = self.active.get(&o)
            {
                register.add.push(a.sink_object(o, d));
            }
        }
        register.forget = std::mem::take(&mut self.agents[sink].sink_forget);
        if register.add.is_empty() && register.forget.is_empty() {
            return Ok(());
        }
        // What the sink knows changes only once it has answered.
        if let Err(e) = self.agents[sink].client.sink_objects(&register).await {
            self.agents[sink].sink_forget = register.forget;
            return Err(e);
        }
        for o in register.add {
            if let Some(a) = self.active.get_mut(&o.object) {
                a.at_sinks.push(sink);
            }
            self.agents[sink].sink_knows.insert(o.object);
        }
        Ok(())
    }

    /// Opens the uploads, at every destination, of multipart objects in `batch` that have none
    /// there yet, and journals them (sinks learn of them with the objects).
    pub(super) async fn open_uploads(&mut self, batch: &[ChunkSpec]) -> Result<(), CopyError> {
        let mut need: Vec<(u32, usize, String, Properties)> = Vec::new();
        for s in batch {
            let Some(a) = self.active.get(&s.object) else {
                continue;
            };
            if s.whole_object || need.iter().any(|(o, ..)| *o == s.object) {
                continue;
            }
            for (d, at) in a.at.iter().enumerate() {
                if at.upload.is_none() && !at.refused_upload {
                    need.push((s.object, d, at.key.clone(), a.item.properties.clone()));
                }
            }
        }
        if need.is_empty() {
            return Ok(());
        }
        let dsts = self.dsts.clone();
        type Opened = Result<(u32, usize, MultipartUpload), (u32, usize, StoreError)>;
        let opened: Vec<Opened> =
            futures::stream::iter(need.into_iter().map(|(o, d, key, properties)| {
                let dst = dsts[d].clone();
                async move {
                    let up = dst
                        .create_multipart_with(&key, &properties)
                        .await
                        .map_err(|e| (o, d, e))?;
                    Ok((o, d, up))
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        let mut batch = JournalBatch::default();
        for r in opened {
            match r {
                Ok((o, d, up)) => {
                    let a = self.active.get_mut(&o).expect("an object being dispatched");
                    a.at[d].upload = Some(up.upload_id);
                    // The journal follows destination 0 (a broadcast keeps none).
                    if d == 0 {
                        a.recorded = true;
                        batch
                            .objects
                            .push((a.item.src_key.clone(), a.journal_record()));
                    }
                }
                // That object fails, named with why; the others go on.
                Err((o, d, e)) => {
                    if let Some(a) = self.active.get_mut(&o) {
                        a.at[d].refused_upload = true;
                    }
                    let at = self.destination_name(d);
                    self.note_failure(o, format!("opening its upload at {at}: {e}"));
                }
            }
        }
        // Journal before any part can land, so a crash never leaves an unknown upload.
        if let Some(j) = &self.journal {
            j.record(&batch)?;
        }
        Ok(())
    }

    /// How messages name destination `d`: "the destination" for a copy to one.
    pub(super) fn destination_name(&self, d: usize) -> String {
        match &self.job.broadcast {
            None => "the destination".into(),
            Some(b) if d == 0 => format!("destination {}", b.first),
            Some(b) => format!("destination {}", b.more[d - 1].url),
        }
    }

    pub(super) async fn handle_polls(
        &mut self,
        batch: Vec<PollResult>,
        tracker: &mut Tracker,
    ) -> Result<(), CopyError> {
        let mut journal = JournalBatch::default();
        let mut landed = Vec::new();
        let mut lost = Vec::new();
        let mut unreadable = Vec::new();
        let mut refused = Vec::new();
        let mut down = Vec::new();
        for (agent, res) in batch {
            let rt = &mut self.agents[agent];
            if !rt.alive {
                continue;
            }
            let resp = match res {
                Ok(r) => r,
                Err(e) => {
                    rt.poll_failures += 1;
                    tracing::debug!(agent = %rt.slot.name(), error = %e, "poll failed");
                    continue;
                }
            };
            rt.poll_failures = 0;
            rt.metrics = resp.metrics;
            for e in resp.events {
                match e {
                    AgentEvent::Landed {
                        chunk,
                        object,
                        part,
                        raw_len,
                        raw_crc32c,
                        verified,
                    } => {
                        let chunk = chunk_of(chunk).0;
                        // Which destination: the one this agent writes.
                        let Some(d) = self.agents[agent].sink else {
                            continue;
                        };
                        if !tracker.awaits_landing_at(ChunkId(chunk), d) {
                            continue;
                        }
                        let Some(a) = self.active.get_mut(&object) else {
                            continue;
                        };
                        let index = (chunk - a.chunks.start) as usize;
                        let part_number = index as u32 + 1;
                        if d == 0 {
                            if !std::mem::replace(&mut a.recorded, true) {
                                journal
                                    .objects
                                    .push((a.item.src_key.clone(), a.journal_record()));
                            }
                            journal.parts.push((
                                a.item.src_key.clone(),
                                part_number,
                                PartRecord {
                                    etag: part.as_ref().map(|p| p.etag.clone()),
                                    raw_len,
                                    raw_crc32c,
                                },
                            ));
                        }
                        if let Some(p) = part {
                            a.at[d].receipts.insert(p.part_number, p.etag);
                        }
                        if let Some(slot) = a.crcs.get_mut(index) {
                            *slot = Some((raw_crc32c, raw_len));
                        }
                        if verified.is_some() {
                            a.at[d].sink_verified = verified;
                        }
                        landed.push((ChunkId(chunk), d));
                    }
                    AgentEvent::Lost { chunk, route, why } => {
                        let chunk = chunk_of(chunk).0;
                        tracing::debug!(chunk, route, why, "chunk lost; sending it again");
                        if let Some(r) = self.route_of_link(route) {
                            lost.push((ChunkId(chunk), RouteId(r as u32), why));
                        }
                    }
                    AgentEvent::Unreadable {
                        chunk,
                        why,
                        changed,
                        ..
                    } => {
                        let chunk = chunk_of(chunk).0;
                        let why = if changed {
                            format!(
                                "changed at the source during the copy ({why}); nothing was written"
                            )
                        } else {
                            format!("unreadable at the source: {why}")
                        };
                        unreadable.push((ChunkId(chunk), why));
                    }
                    AgentEvent::WriteFailed {
                        chunk,
                        route,
                        permanent,
                        why,
                        ..
                    } => {
                        let chunk = chunk_of(chunk).0;
                        if let Some(r) = self.route_of_link(route) {
                            refused.push((ChunkId(chunk), RouteId(r as u32), permanent, why));
                        }
                    }
                    AgentEvent::RouteDown { route, why } => {
                        let why = format!("{} says {why}", self.agents[agent].slot.name());
                        tracing::warn!(route, "route down: {why}");
                        if let Some(r) = self.route_of_link(route) {
                            down.push((r as u32, why));
                        }
                    }
                    AgentEvent::Warning { message } => {
                        tracing::warn!(agent = %self.agents[agent].slot.name(), "{message}");
                    }
                }
            }
        }
        // Durable first: a landing acted on is a landing journaled.
        if let Some(j) = &self.journal {
            j.record(&journal)?;
        }
        self.landed_this_run += landed.len() as u64;
        // Once, when the count first reaches the threshold.
        let before = self.landed_this_run - landed.len() as u64;
        if let Some(fault) = &self.job.options.crash_after_landed
            && before < fault.after
            && self.landed_this_run >= fault.after
        {
            tracing::error!(
                "fault injection: crashing after {} landed chunks",
                fault.after
            );
            (fault.crash)();
        }
        for (c, d) in landed {
            tracker.handle_landed_at(c, d);
        }
        for (c, r, why) in lost {
            // A report about an earlier dispatch of the chunk is stale (the tracker ignores it).
            if tracker.is_in_flight_on(c, r) {
                self.note_resent(&[c], || why);
                tracker.handle_chunk_lost(c, r);
            }
        }
        for (c, why) in unreadable {
            if let Some(spec) = tracker.spec(c) {
                tracker.handle_chunk_failed(c);
                self.note_failure(spec.object, why);
            }
        }
        for (c, route, permanent, why) in refused {
            // A report about an earlier dispatch of the chunk (it landed since, or went out
            // again elsewhere) is stale: the current one decides.
            if tracker.is_in_flight_on(c, route) {
                self.write_refused(tracker, c, permanent, why);
            } else {
                tracing::debug!(chunk = c.0, why, "a stale write failure report; ignored");
            }
        }
        for (r, why) in down {
            if let Some(route) = self.routes.get_mut(r as usize) {
                route.alive = false;
                let resent = tracker.handle_route_failed(RouteId(r));
                let note = format!("its route went down: {why}");
                route.down_why.get_or_insert(why);
                self.note_resent(&resent, || note);
            }
        }
        if !self.routes.iter().any(RouteRt::taking) {
            self.repair(tracker).await?;
        }
        Ok(())
    }

    /// A sink's store refused chunk `c` (after the sink's own retries, unless `permanent`). A
    /// permanent refusal fails the object at once with its cause; a passing one sends the chunk
    /// again (across the paid hops: the sink held it as long as it was worth holding) until
    /// `max_write_failures`.
    fn write_refused(&mut self, tracker: &mut Tracker, c: ChunkId, permanent: bool, why: String) {
        let Some(object) = tracker.spec(c).map(|s| s.object) else {
            return;
        };
        let Some(key) = self.active.get(&object).map(|a| a.item.dst_key.clone()) else {
            return;
        };
        let trouble = self.troubles.entry(c.0).or_default();
        trouble.write_failures += 1;
        let failures = trouble.write_failures;
        trouble.last = Some((format!("the destination refused it: {why}"), true));
        if !permanent {
            self.last_refusal = Some((Instant::now(), why.clone()));
        }
        if permanent || failures >= self.job.options.max_write_failures {
            tracing::error!(
                key,
                why,
                permanent,
                "the destination refused a write; the object fails"
            );
            let why = if permanent {
                format!("the destination refused it: {why}")
            } else {
                format!(
                    "the destination refused it {failures} times, each after {} s of retries at the sink: {why}",
                    self.job.options.sink_retry.as_secs()
                )
            };
            self.note_failure(object, why);
            tracker.handle_chunk_failed(c);
        } else {
            tracing::warn!(
                key,
                why,
                "the destination refused a write after the sink's retries; sending the chunk again"
            );
            tracker.handle_write_failed(c);
        }
    }

    /// Why an object fails when one of its chunks was sent `attempts` times without landing:
    /// the chunk's latest trouble, and the destination's latest refusal when that trouble was
    /// elsewhere (a next hop too busy to take it while the sink retried the destination).
    fn attempts_spent(&self, chunk: u64, attempts: u32) -> String {
        let mut why = format!("a chunk could not be delivered in {attempts} attempts");
        let last = self.troubles.get(&chunk).and_then(|t| t.last.as_ref());
        if let Some((last, _)) = last {
            why.push_str(&format!("; the last time: {last}"));
        }
        // Recent enough to be the trouble behind the hop: within a landing timeout.
        let recent = self.job.options.tracker.landing_timeout;
        if let Some((at, refusal)) = &self.last_refusal
            && !last.is_some_and(|&(_, refused)| refused)
            && at.elapsed() <= recent
        {
            why.push_str(&format!(
                "; meanwhile the destination refused a write: {refusal}"
            ));
        }
        why
    }

    /// Notes why `chunks` went out again, for the message if their attempts run out.
    pub(super) fn note_resent(&mut self, chunks: &[ChunkId], why: impl FnOnce() -> String) {
        if chunks.is_empty() {
            return;
        }
        let why = why();
        for c in chunks {
            self.troubles.entry(c.0).or_default().last = Some((why.clone(), false));
        }
    }

    pub(super) fn note_failure(&mut self, object: u32, why: String) {
        let Some(key) = self.active.get(&object).map(|a| a.item.src_key.clone()) else {
            return;
        };
        if self.failed_keys.insert(key.clone()) {
            self.failed.push(FailedObject { key, why });
        }
    }

    /// Gives an object up: its upload is aborted and the journal forgets it (a later run
    /// starts it over), and the run lets it go.
    pub(super) async fn object_failed(
        &mut self,
        object: u32,
        why: String,
        tracker: &mut Tracker,
    ) -> Result<(), CopyError> {
        self.note_failure(object, why);
        let Some(a) = self.active.get_mut(&object) else {
            return Ok(());
        };
        let src_key = a.item.src_key.clone();
        let uploads: Vec<(usize, String, String)> =
            a.at.iter_mut()
                .enumerate()
                .filter_map(|(d, at)| Some((d, at.key.clone(), at.upload.take()?)))
                .collect();
        for (d, key, id) in uploads {
            self.abort_upload(d, &key, &id).await?;
        }
        if let Some(j) = &self.journal {
            j.record(&JournalBatch {
                forget: vec![src_key],
                ..Default::default()
            })?;
        }
        self.release(object, tracker);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_of_a_chunk_travels_under_its_own_wire_id_and_maps_back() {
        let c = ChunkId(123_456_789);
        let ids: Vec<u64> = (1..=5).map(|a| wire_id(c, a)).collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{ids:?}");
        assert!(ids.iter().all(|&w| chunk_of(w) == c));
        assert_eq!(chunk_of(c.0), c, "an id without an attempt is the chunk");
    }
}
