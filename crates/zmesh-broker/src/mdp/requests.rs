//! A client's request: routed, queued or refused; and the services the
//! broker answers itself (8/MMI and zmesh's own).

use super::*;

impl Broker {
    pub(super) fn reply_error(
        &mut self,
        to: &Bytes,
        proto: &ClientProto,
        service: &Bytes,
        code: &str,
        reason: &str,
        out: &mut Vec<Action>,
    ) {
        if let Some(s) = self.services.get_mut(service) {
            s.errors += 1;
        }
        out.push(Action::Send {
            to: to.clone(),
            frames: mdp::client_error(proto, service, code, reason),
        });
    }

    pub(super) fn client_request(
        &mut self,
        now: Instant,
        client: &Bytes,
        proto: ClientProto,
        requested: Bytes,
        body: Vec<Bytes>,
        out: &mut Vec<Action>,
    ) {
        // Borrowed unless the name is not UTF-8: no allocation per request.
        let requested_name = requested.clone();
        let name = String::from_utf8_lossy(&requested_name);
        if name.starts_with("mmi.") || name.starts_with("zmesh.") {
            let reply = self.internal_service(&name, &body);
            out.push(Action::Send {
                to: client.clone(),
                frames: mdp::client_reply(&proto, ReplyKind::Final, &requested, &reply),
            });
            return;
        }
        if self.draining {
            // Shutting down: what is in flight finishes; nothing new starts.
            return self.reply_error(
                client,
                &proto,
                &requested,
                "503",
                "broker shutting down",
                out,
            );
        }
        let target = match self.cfg.routes.get(name.as_ref()).cloned() {
            Some(routes) => {
                let roll = self.roll();
                Bytes::from(pick(&routes, roll).to_owned())
            }
            None => requested.clone(),
        };
        if let Some(rate) = self.policy(&name).rate_limit_per_s {
            let limiter = self
                .limiters
                .entry(requested.clone())
                .or_insert_with(|| RateLimiter::new(rate, now));
            if !limiter.try_take(now) {
                let why = format!("rate limit of {rate} requests/s for {name} exceeded");
                return self.reply_error(client, &proto, &requested, status::TOO_MANY, &why, out);
            }
        }
        let queue_max = self.cfg.queue_max;
        if !self.services.contains_key(&target)
            && self.services.len() >= self.cfg.services_max
            && !self.forget_a_service()
        {
            let why = format!(
                "the broker knows {} services, its limit, all in use; {name} is not one of them",
                self.services.len()
            );
            return self.reply_error(client, &proto, &requested, status::UNAVAILABLE, &why, out);
        }
        let service = self
            .services
            .entry(target.clone())
            .or_insert_with(|| Service::new(now));
        service.requests += 1;
        service.last_active = now;
        if service.waiting.len() >= queue_max || self.requests.len() >= self.cfg.requests_max {
            let why = format!("{name}: queue full ({queue_max} waiting)");
            return self.reply_error(client, &proto, &requested, status::UNAVAILABLE, &why, out);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.requests.insert(
            handle,
            Request {
                client: client.clone(),
                proto,
                requested,
                service: target.clone(),
                body,
                deadline: now + self.cfg.request_timeout,
                received: now,
                worker: None,
            },
        );
        service.waiting.push_back(handle);
        self.dispatch_requests(&target, out);
    }

    /// Make room in a full service table: forget the unused service idle
    /// longest (made-up names go first, real ones keep their place while
    /// they have workers or requests). False if every service is in use.
    pub(super) fn forget_a_service(&mut self) -> bool {
        let oldest = self
            .services
            .iter()
            .filter(|(_, s)| s.unused())
            .min_by_key(|(_, s)| s.last_active)
            .map(|(name, _)| name.clone());
        oldest.is_some_and(|name| self.services.remove(&name).is_some())
    }

    /// MMI (8/MMI) and zmesh's own services, answered by the broker itself.
    pub(super) fn internal_service(&mut self, name: &str, body: &[Bytes]) -> Vec<Bytes> {
        let arg = body
            .first()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let s = |x: &str| Bytes::from(x.to_owned());
        match name {
            "mmi.service" => {
                let known = self
                    .services
                    .get(arg.as_bytes())
                    .is_some_and(|s| s.workers > 0)
                    || self.cfg.routes.get(&arg).is_some_and(|r| {
                        r.iter().any(|t| {
                            self.services
                                .get(t.target.as_bytes())
                                .is_some_and(|s| s.workers > 0)
                        })
                    });
                vec![s(if known { status::OK } else { status::NOT_FOUND })]
            }
            "zmesh.services" => {
                let json = serde_json::json!({ "services": self.services(), "stats": self.stats });
                vec![s(status::OK), Bytes::from(json.to_string())]
            }
            "zmesh.routes" => {
                // body: service, then "target:weight,..." (empty removes the routes).
                let spec = body
                    .get(1)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let routes = if spec.is_empty() {
                    Ok(Vec::new())
                } else {
                    parse_routes(&spec)
                };
                match routes.and_then(|r| self.set_routes(&arg, r)) {
                    Ok(()) => {
                        tracing::info!(service = %arg, routes = %spec, "routes changed");
                        vec![s(status::OK)]
                    }
                    Err(e) => vec![s(status::BAD_REQUEST), s(&e)],
                }
            }
            _ => vec![s(status::NOT_IMPLEMENTED)],
        }
    }
}
