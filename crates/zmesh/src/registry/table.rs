//! The sans-IO heart of the registry: one socket's peers, driven by [`LinkEvent`]s.
//!
//! No clocks, no sockets: the caller passes the time and the socket's traffic
//! counters in, and gets back the state changes to publish. Everything here is a
//! plain deterministic unit test.
//!
//! Invariants:
//! - a dialed endpoint has exactly one entry for the socket's life, whatever
//!   its reconnects; an accepted connection has one entry per connection id;
//! - at most `closed_kept_max` closed accepted entries are kept (oldest go first),
//!   so a socket that sees a million short connections stays small;
//! - traffic is attributed to a peer only while it is the socket's sole active
//!   peer (`traffic_exact`); once links share the socket the engine cannot tell
//!   whose message is whose, so attributed counts freeze and the socket totals
//!   carry on.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::event::{CloseReason, Direction, LinkEvent, PeerState, Traffic};
use super::peer::{PeerKey, PeerSnapshot, StateChange};

#[derive(Clone, Debug)]
struct PeerRecord {
    snap: PeerSnapshot,
    /// Socket traffic when this peer became the sole active link.
    baseline: Option<Traffic>,
    ever_active: bool,
}

impl PeerRecord {
    /// Stop attributing socket traffic to this peer, keeping what it had.
    fn freeze(&mut self, traffic: &Traffic) {
        if let Some(base) = self.baseline.take() {
            accumulate(&mut self.snap.traffic, &traffic.since(&base));
        }
    }
}

/// One socket's peers. See the module docs for the invariants.
#[derive(Debug)]
pub struct SocketTable {
    peers: BTreeMap<PeerKey, PeerRecord>,
    closed_accepted: VecDeque<u64>,
    closed_kept_max: usize,
    bound: Vec<String>,
    /// Refusals whose connection the table has not seen yet: (remote, reason).
    pending_refusals: VecDeque<(Option<String>, String)>,
}

/// Refusals remembered until their connection shows up.
const PENDING_REFUSALS_MAX: usize = 64;

impl Default for SocketTable {
    fn default() -> Self {
        Self::new(64)
    }
}

/// The IP part of `ip:port` (or the string itself).
fn ip_of(addr: &str) -> &str {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(_) => addr
            .rsplit_once(':')
            .map(|(ip, _)| ip.trim_matches(|c| c == '[' || c == ']'))
            .unwrap_or(addr),
        Err(_) => addr,
    }
}

fn printable_identity(id: &Bytes) -> String {
    match std::str::from_utf8(id) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => format!("0x{}", hex_lower(id)),
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SocketTable {
    /// A table keeping at most `closed_kept_max` closed inbound entries.
    pub fn new(closed_kept_max: usize) -> Self {
        Self {
            peers: BTreeMap::new(),
            closed_accepted: VecDeque::new(),
            closed_kept_max,
            bound: Vec::new(),
            pending_refusals: VecDeque::new(),
        }
    }

    /// Endpoints this socket listens on.
    pub fn bound(&self) -> &[String] {
        &self.bound
    }

    /// Number of peers in the given state.
    pub fn count_in(&self, state: PeerState) -> usize {
        self.peers
            .values()
            .filter(|p| p.snap.state == state)
            .count()
    }

    fn active_count(&self) -> usize {
        self.count_in(PeerState::Active)
    }

    fn new_record(
        key: &PeerKey,
        dir: Direction,
        endpoint: &str,
        now_ms: u64,
        state: PeerState,
    ) -> PeerRecord {
        PeerRecord {
            snap: PeerSnapshot {
                key: key.to_string(),
                direction: dir,
                endpoint: endpoint.to_owned(),
                remote_addr: None,
                identity: None,
                mechanism: None,
                user: None,
                zmtp_version: None,
                state,
                since_ms: now_ms,
                connection_id: None,
                reconnects: 0,
                attempt: 0,
                retry_in_ms: None,
                handshake_failures: 0,
                heartbeat_timeouts: 0,
                last_error: None,
                last_seen_ms: None,
                traffic: Traffic::default(),
                traffic_exact: true,
            },
            baseline: None,
            ever_active: false,
        }
    }

    /// Find the entry a connection id belongs to.
    fn key_for_connection(&self, endpoint: &str, connection_id: u64) -> Option<PeerKey> {
        let accepted = PeerKey::Accepted(connection_id);
        if self.peers.contains_key(&accepted) {
            return Some(accepted);
        }
        let dialed = PeerKey::Dialed(endpoint.to_owned());
        self.peers.contains_key(&dialed).then_some(dialed)
    }

    /// Move a peer to `to`, recording the change.
    fn transition(
        &mut self,
        key: &PeerKey,
        to: PeerState,
        now_ms: u64,
        reason: Option<String>,
        traffic: &Traffic,
        out: &mut Vec<StateChange>,
    ) {
        // Leaving Active: freeze attributed traffic.
        let leaving_active = self
            .peers
            .get(key)
            .is_some_and(|p| p.snap.state == PeerState::Active);
        if leaving_active
            && to != PeerState::Active
            && let Some(p) = self.peers.get_mut(key)
        {
            p.freeze(traffic);
        }
        // Entering Active: attribute if sole link; otherwise nobody is exact.
        if to == PeerState::Active && !leaving_active {
            let others_active = self.active_count();
            for p in self
                .peers
                .values_mut()
                .filter(|p| p.snap.state == PeerState::Active)
            {
                p.freeze(traffic);
                p.snap.traffic_exact = false;
            }
            if let Some(p) = self.peers.get_mut(key) {
                if others_active == 0 {
                    p.baseline = Some(*traffic);
                } else {
                    p.snap.traffic_exact = false;
                }
            }
        }
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        let from = p.snap.state;
        if from == to && reason.is_none() {
            return;
        }
        p.snap.state = to;
        p.snap.since_ms = now_ms;
        if to == PeerState::Active {
            p.snap.last_seen_ms = Some(now_ms);
        }
        out.push(StateChange {
            peer: key.clone(),
            endpoint: p.snap.endpoint.clone(),
            from: Some(from),
            to,
            reason,
        });
    }

    /// The entry of a dialed endpoint, created (as Connecting) if new.
    fn ensure_dialed(
        &mut self,
        endpoint: &str,
        now_ms: u64,
        out: &mut Vec<StateChange>,
    ) -> PeerKey {
        let key = PeerKey::Dialed(endpoint.to_owned());
        if !self.peers.contains_key(&key) {
            let rec = Self::new_record(
                &key,
                Direction::Outbound,
                endpoint,
                now_ms,
                PeerState::Connecting,
            );
            self.insert(key.clone(), rec, out);
        }
        key
    }

    fn insert(&mut self, key: PeerKey, rec: PeerRecord, out: &mut Vec<StateChange>) {
        out.push(StateChange {
            peer: key.clone(),
            endpoint: rec.snap.endpoint.clone(),
            from: None,
            to: rec.snap.state,
            reason: None,
        });
        self.peers.insert(key, rec);
    }

    /// Apply one event at `now_ms`, with the socket's traffic counters as they are now.
    pub fn apply(&mut self, now_ms: u64, ev: LinkEvent, traffic: &Traffic) -> Vec<StateChange> {
        let mut out = Vec::new();
        match ev {
            LinkEvent::Listening { endpoint } => {
                if !self.bound.contains(&endpoint) {
                    self.bound.push(endpoint);
                }
            }
            LinkEvent::Dialing { endpoint } => {
                self.ensure_dialed(&endpoint, now_ms, &mut out);
            }
            LinkEvent::Accepted {
                endpoint,
                remote,
                connection_id,
            } => {
                let key = PeerKey::Accepted(connection_id);
                let mut rec = Self::new_record(
                    &key,
                    Direction::Inbound,
                    &endpoint,
                    now_ms,
                    PeerState::Handshaking,
                );
                rec.snap.remote_addr = remote;
                rec.snap.connection_id = Some(connection_id);
                self.insert(key, rec, &mut out);
            }
            LinkEvent::Connected {
                endpoint,
                remote,
                connection_id,
            } => {
                // Usually dialed already; after a lag the registry may not have seen it.
                let key = self.ensure_dialed(&endpoint, now_ms, &mut out);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.snap.remote_addr = remote;
                    p.snap.connection_id = Some(connection_id);
                    p.snap.retry_in_ms = None;
                }
                self.transition(
                    &key,
                    PeerState::Handshaking,
                    now_ms,
                    None,
                    traffic,
                    &mut out,
                );
            }
            LinkEvent::HandshakeSucceeded {
                endpoint,
                connection_id,
                remote,
                identity,
                zmtp_version,
                mechanism,
                user,
            } => {
                let Some(key) = self.key_for_connection(&endpoint, connection_id) else {
                    return out;
                };
                if let Some(p) = self.peers.get_mut(&key) {
                    if remote.is_some() {
                        p.snap.remote_addr = remote;
                    }
                    p.snap.connection_id = Some(connection_id);
                    p.snap.identity = identity.as_ref().map(printable_identity);
                    p.snap.zmtp_version = Some(format!("{}.{}", zmtp_version.0, zmtp_version.1));
                    p.snap.mechanism = mechanism;
                    p.snap.user = user;
                    p.snap.attempt = 0;
                    p.snap.retry_in_ms = None;
                    if p.ever_active {
                        p.snap.reconnects += 1;
                    }
                    p.ever_active = true;
                }
                self.transition(&key, PeerState::Active, now_ms, None, traffic, &mut out);
            }
            LinkEvent::HandshakeFailed {
                endpoint,
                remote,
                reason,
            } => {
                let dialed = PeerKey::Dialed(endpoint.clone());
                let key = if self.peers.contains_key(&dialed) {
                    Some(dialed)
                } else {
                    // Inbound: the handshaking entry from that address.
                    self.handshaking_from(&remote)
                };
                let Some(key) = key else { return out };
                let why = match self.take_refusal(&remote) {
                    Some(refusal) => format!("authentication refused: {refusal}"),
                    None => format!("handshake failed: {reason}"),
                };
                if let Some(p) = self.peers.get_mut(&key) {
                    p.snap.handshake_failures += 1;
                    p.snap.last_error = Some(why.clone());
                }
                self.transition(
                    &key,
                    PeerState::Closed,
                    now_ms,
                    Some(why),
                    traffic,
                    &mut out,
                );
                self.retire_if_accepted(&key);
            }
            LinkEvent::RetryScheduled {
                endpoint,
                retry_in,
                attempt,
            } => {
                let key = PeerKey::Dialed(endpoint);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.snap.attempt = attempt;
                    p.snap.retry_in_ms = Some(retry_in.as_millis() as u64);
                    let why = format!("retry #{attempt} in {} ms", retry_in.as_millis());
                    self.transition(
                        &key,
                        PeerState::BackingOff,
                        now_ms,
                        Some(why),
                        traffic,
                        &mut out,
                    );
                }
            }
            LinkEvent::GaveUp { endpoint, reason } => {
                let key = PeerKey::Dialed(endpoint);
                if let Some(p) = self.peers.get_mut(&key) {
                    p.snap.last_error = Some(reason.to_string());
                    p.snap.retry_in_ms = None;
                }
                self.transition(
                    &key,
                    PeerState::Closed,
                    now_ms,
                    Some(format!("gave up: {reason}")),
                    traffic,
                    &mut out,
                );
            }
            LinkEvent::Disconnected {
                endpoint,
                connection_id,
                reason,
            } => {
                let Some(key) = self.key_for_connection(&endpoint, connection_id) else {
                    return out;
                };
                // A dialed entry's stale connection (already replaced) is ignored.
                if let Some(p) = self.peers.get_mut(&key) {
                    if p.snap.connection_id != Some(connection_id) {
                        return out;
                    }
                    if reason == CloseReason::HeartbeatTimeout {
                        p.snap.heartbeat_timeouts += 1;
                    }
                    if !matches!(reason, CloseReason::LocalClose | CloseReason::PeerClosed) {
                        p.snap.last_error = Some(reason.to_string());
                    }
                }
                self.transition(
                    &key,
                    PeerState::Closed,
                    now_ms,
                    Some(reason.to_string()),
                    traffic,
                    &mut out,
                );
                self.retire_if_accepted(&key);
            }
            LinkEvent::PeerError {
                endpoint,
                connection_id,
                reason,
            } => {
                if let Some(key) = self.key_for_connection(&endpoint, connection_id)
                    && let Some(p) = self.peers.get_mut(&key)
                {
                    p.snap.last_error = Some(format!("peer sent ERROR: {reason}"));
                }
            }
            LinkEvent::SocketClosed => {
                let keys: Vec<PeerKey> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.snap.state != PeerState::Closed)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    self.transition(
                        &k,
                        PeerState::Closed,
                        now_ms,
                        Some("socket closed".into()),
                        traffic,
                        &mut out,
                    );
                }
            }
        }
        out
    }

    /// The handshaking inbound peer at `remote` (ip:port), if any.
    fn handshaking_from(&self, remote: &Option<String>) -> Option<PeerKey> {
        self.peers
            .iter()
            .find(|(k, p)| {
                matches!(k, PeerKey::Accepted(_))
                    && p.snap.state == PeerState::Handshaking
                    && &p.snap.remote_addr == remote
            })
            .map(|(k, _)| k.clone())
    }

    /// The authentication policy refused a peer from `ip`. The engine names
    /// only the IP to the policy, so the reason waits for the handshake
    /// failure of a connection from that IP, which follows the refusal.
    pub fn refuse(&mut self, ip: Option<&str>, reason: &str) {
        self.pending_refusals
            .push_back((ip.map(str::to_owned), reason.to_owned()));
        if self.pending_refusals.len() > PENDING_REFUSALS_MAX {
            self.pending_refusals.pop_front();
        }
    }

    /// The refusal reason waiting for a connection from `remote` (ip:port), if any.
    fn take_refusal(&mut self, remote: &Option<String>) -> Option<String> {
        let ip = remote.as_deref().map(ip_of);
        let i = self
            .pending_refusals
            .iter()
            .position(|(r, _)| r.as_deref() == ip)?;
        self.pending_refusals.remove(i).map(|(_, reason)| reason)
    }

    fn retire_if_accepted(&mut self, key: &PeerKey) {
        if let PeerKey::Accepted(id) = key {
            self.closed_accepted.push_back(*id);
            while self.closed_accepted.len() > self.closed_kept_max {
                if let Some(old) = self.closed_accepted.pop_front() {
                    self.peers.remove(&PeerKey::Accepted(old));
                }
            }
        }
    }

    /// Periodic tick: confirms active links as alive at `now_ms`. Returns
    /// whether an inbound peer has been handshaking for over `stale_ms`: the
    /// engine reports no event when a peer hangs up mid-handshake, so the
    /// caller should [`Self::resync`] against the live connection list.
    pub fn tick(&mut self, now_ms: u64, stale_ms: u64) -> bool {
        let mut stale = false;
        for p in self.peers.values_mut() {
            match p.snap.state {
                PeerState::Active => p.snap.last_seen_ms = Some(now_ms),
                PeerState::Handshaking if p.snap.direction == Direction::Inbound => {
                    stale |= now_ms.saturating_sub(p.snap.since_ms) > stale_ms;
                }
                _ => {}
            }
        }
        stale
    }

    /// Mark every peer whose connection is not in `live` as closed: used after the
    /// event stream lagged, with the engine's authoritative connection list.
    pub fn resync(
        &mut self,
        now_ms: u64,
        live: &[(u64, String, bool)],
        reason: &str,
        traffic: &Traffic,
    ) -> Vec<StateChange> {
        let mut out = Vec::new();
        let stale: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.snap.state == PeerState::Active || p.snap.state == PeerState::Handshaking
            })
            .filter(|(_, p)| {
                !live
                    .iter()
                    .any(|(id, _, _)| Some(*id) == p.snap.connection_id)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.transition(
                &k,
                PeerState::Closed,
                now_ms,
                Some(reason.to_owned()),
                traffic,
                &mut out,
            );
            self.retire_if_accepted(&k);
        }
        out
    }

    /// Every peer as it is now, given the socket's current traffic counters.
    pub fn snapshot(&self, traffic: &Traffic) -> Vec<PeerSnapshot> {
        self.peers
            .values()
            .map(|p| {
                let mut s = p.snap.clone();
                if let Some(base) = &p.baseline {
                    accumulate(&mut s.traffic, &traffic.since(base));
                }
                s
            })
            .collect()
    }
}

fn accumulate(into: &mut Traffic, add: &Traffic) {
    into.msgs_in += add.msgs_in;
    into.bytes_in += add.bytes_in;
    into.msgs_out += add.msgs_out;
    into.bytes_out += add.bytes_out;
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
