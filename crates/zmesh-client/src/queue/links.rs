//! The client's connections: a DEALER per broker it talks to. A single
//! broker is one link. In a cluster, requests and publishes go to one node
//! at a time (the current link), which moves on as soon as its connection
//! drops or it falls silent; a queue's consumers and PURGE go to the node a
//! 421 named as serving the queue, learned as the client goes.

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use zmesh::{Socket, SocketType};

use super::*;

/// Most brokers one client keeps a connection to: those it was given and
/// those redirects named.
pub const LINKS_MAX: usize = 16;

/// One broker's connection.
pub(super) struct Link {
    pub endpoint: String,
    pub sock: Socket,
    /// Its connection is ready, as the registry last said.
    pub up: AtomicBool,
    /// When a message from this broker last arrived.
    pub last_heard: Mutex<Instant>,
    /// Set once the engine gives up on this broker (a refused handshake).
    pub gave_up: watch::Receiver<Option<String>>,
}

/// Every link the client has, by index (never removed), and which one
/// requests go to.
pub(super) struct Links {
    all: Mutex<Vec<Arc<Link>>>,
    current: AtomicUsize,
    options: SocketOptions,
    /// One link is made at a time, so two redirects to one broker make one.
    making: tokio::sync::Mutex<()>,
}

impl Links {
    pub fn new(options: SocketOptions) -> Links {
        Links {
            all: Mutex::new(Vec::new()),
            current: AtomicUsize::new(0),
            options,
            making: tokio::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, at: usize) -> Arc<Link> {
        lock(&self.all)[at].clone()
    }

    pub fn all(&self) -> Vec<Arc<Link>> {
        lock(&self.all).clone()
    }

    pub fn len(&self) -> usize {
        lock(&self.all).len()
    }

    /// The link of the socket with registry id `socket_id`.
    pub fn by_socket(&self, socket_id: u64) -> Option<usize> {
        lock(&self.all)
            .iter()
            .position(|l| l.sock.id() == socket_id)
    }

    /// The link requests go to now: the current one, unless its connection
    /// is down and another's is up (that one becomes current).
    pub fn pick(&self) -> usize {
        let all = lock(&self.all);
        let current = self.current.load(Ordering::Relaxed);
        if all[current].up.load(Ordering::Relaxed) {
            return current;
        }
        let up = (1..all.len())
            .map(|step| (current + step) % all.len())
            .find(|at| all[*at].up.load(Ordering::Relaxed));
        match up {
            Some(at) => {
                let _ = self.current.compare_exchange(
                    current,
                    at,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.current.load(Ordering::Relaxed)
            }
            None => current,
        }
    }

    /// Whether a request is worth sending on link `at`: its connection is
    /// up, or no other link's is (then it waits there, as a single
    /// broker's client waits for its restart).
    pub fn usable(&self, at: usize) -> bool {
        let all = lock(&self.all);
        all[at].up.load(Ordering::Relaxed) || !all.iter().any(|l| l.up.load(Ordering::Relaxed))
    }

    /// Moves requests off link `from` (its connection dropped, or it fell
    /// silent) to the next link, one that is up if any; returns where they
    /// go now. Several callers that saw `from` fail move it once.
    pub fn move_off(&self, from: usize) -> usize {
        let all = lock(&self.all);
        let next = (1..all.len())
            .map(|step| (from + step) % all.len())
            .find(|at| all[*at].up.load(Ordering::Relaxed))
            .unwrap_or((from + 1) % all.len());
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
        self.current.load(Ordering::Relaxed)
    }

    /// The link after `from` to ask when `from` knows no answer now: the
    /// next that is up, if any.
    pub fn after(&self, from: usize) -> usize {
        let all = lock(&self.all);
        (1..=all.len())
            .map(|step| (from + step) % all.len())
            .find(|at| all[*at].up.load(Ordering::Relaxed))
            .unwrap_or((from + 1) % all.len())
    }

    /// The link to `endpoint`: an existing one, or a new connection whose
    /// replies `spawn_reader` reads. At most [`LINKS_MAX`].
    pub async fn to(
        &self,
        endpoint: &str,
        spawn_reader: impl FnOnce(Arc<Link>),
    ) -> Result<usize, QueueError> {
        let _making = self.making.lock().await;
        if let Some(at) = lock(&self.all).iter().position(|l| l.endpoint == endpoint) {
            return Ok(at);
        }
        if self.len() >= LINKS_MAX {
            return Err(QueueError::Protocol(format!(
                "brokers named more than {LINKS_MAX} endpoints; not connecting to {endpoint}"
            )));
        }
        let sock = Socket::new(SocketType::Dealer, self.options.clone())?;
        sock.connect(endpoint).await?;
        let link = Arc::new(Link {
            endpoint: endpoint.to_owned(),
            gave_up: sock.gave_up(),
            sock,
            up: AtomicBool::new(false),
            last_heard: Mutex::new(Instant::now()),
        });
        spawn_reader(link.clone());
        let at = {
            let mut all = lock(&self.all);
            all.push(link.clone());
            all.len() - 1
        };
        // A state change before the push was not matched to this link:
        // read the state now (later changes are).
        let active = link
            .sock
            .peers()
            .iter()
            .any(|p| p.state == zmesh::registry::PeerState::Active);
        if active {
            link.up.store(true, Ordering::Relaxed);
        }
        Ok(at)
    }
}

/// The client's background tasks, aborted when the last clone of the
/// client goes (the set is dropped). The client's state holds it weakly,
/// to start tasks for links it learns.
pub(super) struct TaskSet(Mutex<tokio::task::JoinSet<()>>);

impl TaskSet {
    pub fn new() -> Arc<TaskSet> {
        Arc::new(TaskSet(Mutex::new(tokio::task::JoinSet::new())))
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = lock(&self.0);
        // Finished tasks are let go as new ones come.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

/// Starts `task` unless the client is gone.
pub(super) fn spawn_in(tasks: &Weak<TaskSet>, task: impl Future<Output = ()> + Send + 'static) {
    if let Some(tasks) = tasks.upgrade() {
        tasks.spawn(task);
    }
}
