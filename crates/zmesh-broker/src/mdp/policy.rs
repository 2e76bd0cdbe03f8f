//! Per-service policies: idempotency, weighted routes, request-rate limits.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How the broker treats one service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicePolicy {
    /// A request held by a worker that dies is given to another worker (safe only
    /// if running it twice is harmless). Otherwise the client gets an error.
    #[serde(default)]
    pub idempotent: bool,
    /// Most requests per second accepted; beyond, clients get a "429" error.
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
}

/// A weighted choice between versions of a service, e.g. `orders` ->
/// `orders@v1` 95, `orders@v2` 5.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Target service.
    pub target: String,
    /// Relative weight.
    pub weight: u32,
}

/// Parse `target:weight,target:weight` (the CLI's form).
///
/// ```
/// let r = zmesh_broker::mdp::parse_routes("orders@v1:95,orders@v2:5").unwrap();
/// assert_eq!(r[1].target, "orders@v2");
/// ```
pub fn parse_routes(s: &str) -> Result<Vec<Route>, String> {
    let routes: Vec<Route> = s
        .split(',')
        .map(|part| {
            let (target, weight) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("{part:?}: expected target:weight"))?;
            let weight = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: weight is not a whole number"))?;
            Ok(Route {
                target: target.trim().to_owned(),
                weight,
            })
        })
        .collect::<Result<_, String>>()?;
    validate_routes(&routes)?;
    Ok(routes)
}

/// Routes must name services and carry some weight.
pub fn validate_routes(routes: &[Route]) -> Result<(), String> {
    if routes.is_empty() || routes.iter().map(|r| u64::from(r.weight)).sum::<u64>() == 0 {
        return Err("routes need at least one target with a weight above zero".into());
    }
    if routes
        .iter()
        .any(|r| r.target.is_empty() || r.target.starts_with("mmi."))
    {
        return Err("route targets must be service names outside mmi.".into());
    }
    Ok(())
}

/// Pick a target with probability proportional to its weight; `roll` is uniform in [0, 1).
pub fn pick(routes: &[Route], roll: f64) -> &str {
    let total: u64 = routes.iter().map(|r| u64::from(r.weight)).sum();
    let mut point = (roll * total as f64) as u64;
    for r in routes {
        if point < u64::from(r.weight) {
            return &r.target;
        }
        point -= u64::from(r.weight);
    }
    &routes[routes.len() - 1].target
}

/// A token bucket: `rate` tokens per second, up to one second's worth banked.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(rate_per_s: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate_per_s),
            tokens: f64::from(rate_per_s),
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + self.rate * elapsed.as_secs_f64()).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
