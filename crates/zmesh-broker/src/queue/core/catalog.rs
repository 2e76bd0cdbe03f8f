//! Declaring, deleting and purging queues, and the catalog saved with them.

use super::*;

/// The options a queue is created with: a queue without a dead-letter queue
/// named gets `NAME.dlq` (a dead-letter queue itself gets none).
pub fn options_as_created(name: &str, mut options: QueueOptions) -> QueueOptions {
    if options.dead_letter.is_none() {
        options.dead_letter = Some(if name.ends_with(".dlq") {
            String::new()
        } else {
            format!("{name}.dlq")
        });
    }
    options
}

impl QueueCore {
    pub(super) fn save_catalog(&mut self) {
        self.out
            .push(QueueAction::SaveCatalog(self.catalog.clone()));
    }

    pub(super) fn create_queue(&mut self, name: &str, options: QueueOptions) {
        let options = options_as_created(name, options);
        let spec = QueueSpec {
            id: self.catalog.next_id,
            name: name.to_owned(),
            options,
        };
        self.catalog.next_id += 1;
        self.catalog.queues.push(spec.clone());
        self.names.insert(spec.id, spec.name.clone());
        let mut queue = Queue::new(spec, self.memory.clone());
        queue.serving = !self.config.served_where_led;
        self.queues.insert(queue.spec.name.clone(), queue);
    }

    pub(super) fn declare(
        &mut self,
        from: &Bytes,
        corr: &Bytes,
        name: &str,
        options: Option<QueueOptions>,
    ) {
        if let Some(q) = self.queues.get(name) {
            let same = match &options {
                None => true,
                Some(o) => {
                    let mut o = o.clone();
                    o.dead_letter = o.dead_letter.or_else(|| q.options().dead_letter.clone());
                    &o == q.options()
                }
            };
            let reply = if same {
                proto::ok(
                    corr,
                    Some(serde_json::to_vec(&q.spec).expect("spec").into()),
                )
            } else {
                proto::error(
                    corr,
                    code::CONFLICT,
                    &format!("queue {name:?} exists with other options"),
                )
            };
            return self.send(from, reply);
        }
        if self.queues.len() + 2 > self.config.queues_max {
            return self.send(
                from,
                proto::error(
                    corr,
                    code::UNAVAILABLE,
                    "the broker's queue limit is reached",
                ),
            );
        }
        self.create_queue(name, options.unwrap_or_default());
        let dlq = self.queues[name]
            .options()
            .dead_letter
            .clone()
            .unwrap_or_default();
        if !dlq.is_empty() && !self.queues.contains_key(&dlq) {
            self.create_queue(
                &dlq,
                QueueOptions {
                    dead_letter: Some(String::new()),
                    // Reading dead letters (and giving them back) must not drop them.
                    max_deliveries: u32::MAX,
                    ..QueueOptions::default()
                },
            );
        }
        self.save_catalog();
        tracing::info!(queue = name, "queue declared");
        let spec = serde_json::to_vec(&self.queues[name].spec).expect("spec");
        self.send(from, proto::ok(corr, Some(spec.into())));
    }

    pub(super) fn delete(&mut self, from: &Bytes, corr: &Bytes, name: &str) {
        let Some(q) = self.queues.remove(name) else {
            return self.send(
                from,
                proto::error(corr, code::NOT_FOUND, &format!("no queue {name:?}")),
            );
        };
        self.names.remove(&q.id());
        self.catalog.queues.retain(|s| s.id != q.id());
        self.messages -= q.messages.len() as u64;
        for p in self.peers.values_mut() {
            p.queues.retain(|n| n != name);
        }
        // Its records die with its id; nothing to write to the journal.
        self.save_catalog();
        tracing::info!(queue = name, messages = q.messages.len(), "queue deleted");
        let body = format!(r#"{{"deleted_messages":{}}}"#, q.messages.len());
        self.send(from, proto::ok(corr, Some(body.into())));
    }

    pub(super) fn purge(&mut self, from: &Bytes, corr: &Bytes, name: &str) {
        let Some(q) = self.queues.get_mut(name) else {
            return self.send(
                from,
                proto::error(corr, code::NOT_FOUND, &format!("no queue {name:?}")),
            );
        };
        if !q.serving {
            let served_by = q.served_by.clone();
            return self.send(from, not_served_here(corr, name, served_by.as_deref()));
        }
        // Waiting in line, or being moved by compaction (it would be in line).
        let offsets: Vec<u64> = q
            .messages
            .iter()
            .filter(|(_, m)| m.holder.is_none())
            .map(|(tag, _)| *tag)
            .collect();
        for o in &offsets {
            q.remove(*o);
        }
        let id = q.id();
        self.messages -= offsets.len() as u64;
        let body = format!(r#"{{"purged":{}}}"#, offsets.len());
        self.settle(id, SettleReason::Purged, offsets);
        self.send(from, proto::ok(corr, Some(body.into())));
    }
}
