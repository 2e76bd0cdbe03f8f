//! The workers' side of the broker core: registration, heartbeats, replies,
//! dispatch to free slots, drain and removal (with what becomes of the
//! requests a removed worker held).

use std::time::Instant;

use bytes::Bytes;

use super::state::{Service, Worker};
use super::{Action, Broker, LATENCIES_MAX, handle_bytes, handle_of, status};
use zmesh_wire::mdp::{self, ClientProto, ReplyKind, WorkerMsg, WorkerVersion};

impl Broker {
    pub(super) fn worker_message(
        &mut self,
        now: Instant,
        from: &Bytes,
        v: WorkerVersion,
        msg: WorkerMsg,
        out: &mut Vec<Action>,
    ) {
        let known = self.workers.contains_key(from);
        match msg {
            WorkerMsg::Ready { service, credit } => {
                let name = String::from_utf8_lossy(&service);
                if known
                    || name.starts_with("mmi.")
                    || name.starts_with("zmesh.")
                    || self.workers.len() >= self.cfg.workers_max
                    || self.slots >= self.cfg.slots_max
                {
                    // A second READY, a reserved name, or no room: not allowed.
                    if known {
                        self.delete_worker(from, "sent READY twice", out);
                    }
                    out.push(Action::Send {
                        to: from.clone(),
                        frames: mdp::worker_disconnect(v),
                    });
                    return;
                }
                let credit = credit.min((self.cfg.slots_max - self.slots) as u32);
                self.register_worker(now, from, v, service, credit, out);
            }
            WorkerMsg::Disconnect => {
                if known {
                    self.delete_worker(from, "said DISCONNECT", out);
                }
            }
            _ if !known => {
                // A valid but unexpected command (e.g. from before a broker restart).
                out.push(Action::Send {
                    to: from.clone(),
                    frames: mdp::worker_disconnect(v),
                });
            }
            WorkerMsg::Heartbeat => self.touch_worker(now, from),
            WorkerMsg::Drain => {
                self.touch_worker(now, from);
                if let Some(w) = self.workers.get_mut(from) {
                    w.draining = true;
                    if let Some(s) = self.services.get_mut(&w.service) {
                        s.free.withdraw(from, w);
                    }
                }
                // After this, nothing more is sent to it but heartbeats.
                out.push(Action::Send {
                    to: from.clone(),
                    frames: mdp::worker_drained(),
                });
            }
            WorkerMsg::Reply {
                address,
                last,
                body,
            } => {
                self.touch_worker(now, from);
                self.forward_reply(now, from, address, last, body, out);
            }
        }
    }

    pub(super) fn touch_worker(&mut self, now: Instant, id: &Bytes) {
        let expiry = now + self.cfg.heartbeat_interval * self.cfg.heartbeat_liveness;
        if let Some(w) = self.workers.get_mut(id) {
            w.expiry = expiry;
        }
    }

    pub(super) fn register_worker(
        &mut self,
        now: Instant,
        id: &Bytes,
        v: WorkerVersion,
        service: Bytes,
        credit: u32,
        out: &mut Vec<Action>,
    ) {
        let w = Worker {
            version: v,
            service: service.clone(),
            expiry: now + self.cfg.heartbeat_interval * self.cfg.heartbeat_liveness,
            next_heartbeat: now + self.cfg.heartbeat_interval,
            busy: Vec::new(),
            credit,
            busy_since: now,
            draining: false,
            congested: self.congested.contains(id),
            listed: None,
        };
        self.slots += credit as usize;
        let w = self.workers.entry(id.clone()).insert_entry(w).into_mut();
        let s = self
            .services
            .entry(service.clone())
            .or_insert_with(|| Service::new(now));
        s.workers += 1;
        s.last_active = now;
        self.slot_seq += 1;
        s.free.offer(id, w, self.slot_seq);
        tracing::info!(service = %String::from_utf8_lossy(&service), "worker registered");
        self.dispatch_requests(&service, out);
    }

    pub(super) fn forward_reply(
        &mut self,
        now: Instant,
        worker: &Bytes,
        address: Bytes,
        last: bool,
        body: Vec<Bytes>,
        out: &mut Vec<Action>,
    ) {
        let Some(handle) = handle_of(&address) else {
            self.stats.stale_replies += 1;
            return;
        };
        let ours = self
            .workers
            .get(worker)
            .is_some_and(|w| w.busy.contains(&handle));
        let Some(req) = self.requests.get(&handle).filter(|_| ours) else {
            // Late reply for a request already answered, expired or re-dispatched.
            self.stats.stale_replies += 1;
            return;
        };
        let kind = if last {
            ReplyKind::Final
        } else {
            ReplyKind::Partial
        };
        // 7/MDP clients have no partial replies: they get the final one only.
        if last || req.proto != ClientProto::V1 {
            out.push(Action::Send {
                to: req.client.clone(),
                frames: mdp::client_reply(&req.proto, kind, &req.requested, &body),
            });
        }
        if !last {
            return;
        }
        let req = self.requests.remove(&handle).expect("checked above");
        if self.record_latencies && self.latencies.len() >= LATENCIES_MAX {
            self.latencies.pop_front();
        }
        if self.record_latencies {
            let service = String::from_utf8_lossy(&req.service).into_owned();
            self.latencies
                .push_back((service, now.saturating_duration_since(req.received)));
        }
        let s = self
            .services
            .get_mut(&req.service)
            .expect("a busy worker's service exists");
        s.replies += 1;
        s.last_active = now;
        if let Some(w) = self.workers.get_mut(worker) {
            s.free.withdraw(worker, w);
            w.busy.retain(|h| *h != handle);
            self.slot_seq += 1;
            s.free.offer(worker, w, self.slot_seq);
        }
        self.dispatch_requests(&req.service, out);
    }

    /// Give waiting requests to workers with free slots: oldest request to
    /// the least busy worker, longest unchanged first (see [`slots`]).
    pub(super) fn dispatch_requests(&mut self, service: &Bytes, out: &mut Vec<Action>) {
        let Some(s) = self.services.get_mut(service) else {
            return;
        };
        while !s.waiting.is_empty() {
            let Some(wid) = s.free.next() else { break };
            let handle = s.waiting.pop_front().expect("not empty");
            let Some(req) = self.requests.get_mut(&handle) else {
                continue;
            };
            let w = self
                .workers
                .get_mut(&wid)
                .expect("listed workers are registered");
            s.free.withdraw(&wid, w);
            if w.busy.is_empty() {
                w.busy_since = self.now;
            }
            w.busy.push(handle);
            self.slot_seq += 1;
            s.free.offer(&wid, w, self.slot_seq);
            req.worker = Some(wid.clone());
            out.push(Action::Send {
                to: wid,
                frames: mdp::worker_request(w.version, handle_bytes(handle), &req.body),
            });
        }
    }

    /// Remove a worker; its request, if any, goes to another worker (idempotent
    /// services) or back to its client as an error.
    pub(super) fn delete_worker(&mut self, id: &Bytes, why: &str, out: &mut Vec<Action>) {
        let Some(mut w) = self.workers.remove(id) else {
            return;
        };
        self.slots -= w.credit as usize;
        tracing::info!(service = %String::from_utf8_lossy(&w.service), why, "worker removed");
        if let Some(s) = self.services.get_mut(&w.service) {
            s.workers -= 1;
            s.free.withdraw(id, &mut w);
        }
        // Oldest first back to the front of the queue: pushed in reverse.
        for &handle in w.busy.iter().rev() {
            self.release_request(handle, &w.service, why, out);
        }
        self.dispatch_requests(&w.service, out);
    }

    /// A request whose worker is gone: back to the front of its queue
    /// (idempotent services), or an error to its client.
    pub(super) fn release_request(
        &mut self,
        handle: u64,
        service: &Bytes,
        why: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(req) = self.requests.get_mut(&handle) else {
            return;
        };
        req.worker = None;
        let name = String::from_utf8_lossy(&req.requested).into_owned();
        if self.policy(&name).idempotent
            || self.policy(&String::from_utf8_lossy(service)).idempotent
        {
            self.stats.redispatched += 1;
            if let Some(s) = self.services.get_mut(service) {
                s.waiting.push_front(handle);
            }
        } else {
            let req = self.requests.remove(&handle).expect("present");
            let reason = format!(
                "the worker handling the request failed ({why}); {name} is not idempotent, so it was not retried"
            );
            self.reply_error(
                &req.client,
                &req.proto,
                &req.requested,
                status::UNAVAILABLE,
                &reason,
                out,
            );
        }
    }
}
