//! Login throttling: failed attempts counted per (realm, user) and per source address in a
//! fixed window, and a bound on password hashing — argon2 runs on `max_hashing` threads of its
//! own (19 MiB each, kept by those threads only), at most `max_waiting` logins queued behind
//! them — so a flood of logins can exhaust neither memory nor CPU. A refused attempt costs no
//! hash and gets `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many failures are allowed, how long a window lasts, and how much hashing at once.
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// Failed logins per (realm, user) in one window. Default 5.
    pub per_user: u32,
    /// Failed logins per source address in one window. Default 20.
    pub per_address: u32,
    /// Window length. Default 60 s.
    pub window_secs: u64,
    /// Password hashes computed at once. Default: the CPU count (at least 2).
    pub max_hashing: usize,
    /// Logins waiting for a hash slot before new ones are refused. Default 32.
    pub max_waiting: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_user: 5,
            per_address: 20,
            window_secs: 60,
            max_hashing: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
                .max(2),
            max_waiting: 32,
        }
    }
}

/// The most windows kept; beyond it expired ones are dropped, then the oldest.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: u64,
    failures: u32,
}

pub(crate) struct Throttle {
    limits: LoginLimits,
    windows: Mutex<HashMap<String, Window>>,
    /// The hashing threads' queue (bounded by `max_waiting`).
    hashers: std::sync::mpsc::SyncSender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// `threads` threads taking jobs from one queue of `capacity`; they end with the queue.
fn hashing_threads(threads: usize, capacity: usize) -> std::sync::mpsc::SyncSender<Job> {
    let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(capacity);
    let jobs = Arc::new(Mutex::new(jobs));
    for i in 0..threads.max(1) {
        let jobs = jobs.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("password-hash-{i}"))
            .spawn(move || {
                loop {
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password hashing thread");
        }
    }
    queue
}

/// The keys one attempt counts against.
pub(crate) struct Attempt {
    user: String,
    address: Option<String>,
}

impl Attempt {
    pub(crate) fn new(realm: &str, username: &str, address: Option<IpAddr>) -> Self {
        Self {
            user: format!("u\u{0}{realm}\u{0}{username}"),
            address: address.map(|a| format!("a\u{0}{a}")),
        }
    }
}

impl Throttle {
    pub(crate) fn new(limits: LoginLimits) -> Self {
        Self {
            hashers: hashing_threads(limits.max_hashing, limits.max_waiting),
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` while the user or the address has used up its failures in this window.
    pub(crate) fn check(&self, attempt: &Attempt, now: u64) -> Result<(), u64> {
        let Ok(windows) = self.windows.lock() else {
            return Err(1);
        };
        let mut wait = 0;
        for (key, limit) in self.keys(attempt) {
            if let Some(w) = windows.get(key)
                && now < w.started + self.limits.window_secs
                && w.failures >= limit
            {
                wait = wait.max(w.started + self.limits.window_secs - now);
            }
        }
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    pub(crate) fn failed(&self, attempt: &Attempt, now: u64) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if windows.len() >= MAX_KEYS {
            let window = self.limits.window_secs;
            windows.retain(|_, w| now < w.started + window);
            while windows.len() >= MAX_KEYS {
                let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                windows.remove(&oldest);
            }
        }
        for (key, _) in self.keys(attempt) {
            let w = windows.entry(key.to_owned()).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now >= w.started + self.limits.window_secs {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures += 1;
        }
    }

    /// A successful login clears the user's failures (not the address's).
    pub(crate) fn succeeded(&self, attempt: &Attempt) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.remove(&attempt.user);
        }
    }

    fn keys<'a>(&self, attempt: &'a Attempt) -> impl Iterator<Item = (&'a str, u32)> {
        std::iter::once((attempt.user.as_str(), self.limits.per_user)).chain(
            attempt
                .address
                .as_deref()
                .map(|a| (a, self.limits.per_address)),
        )
    }

    /// Runs `verify` on a hashing thread; `Err(seconds)` when too many logins already wait.
    pub(crate) async fn hash<F>(&self, verify: F) -> Result<bool, u64>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(verify());
        });
        match self.hashers.try_send(job) {
            Ok(()) => result.await.map_err(|_| 1),
            Err(_) => Err(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            per_user: 3,
            per_address: 5,
            window_secs: 60,
            max_hashing: 1,
            max_waiting: 2,
        }
    }

    #[test]
    fn failures_per_user_and_address_lock_until_the_window_ends() {
        let t = Throttle::new(limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let alice = Attempt::new("acme", "alice", Some(ip));
        for _ in 0..3 {
            assert!(t.check(&alice, 100).is_ok());
            t.failed(&alice, 100);
        }
        assert_eq!(t.check(&alice, 110), Err(50));
        // The same user in another realm, and another user, are not locked by alice's user key.
        assert!(t.check(&Attempt::new("globex", "alice", None), 110).is_ok());
        let bob = Attempt::new("acme", "bob", Some(ip));
        assert!(t.check(&bob, 110).is_ok());
        t.failed(&bob, 110);
        t.failed(&bob, 110);
        // Five failures from the address lock it for everyone.
        let carol = Attempt::new("acme", "carol", Some(ip));
        assert!(t.check(&carol, 111).is_err());
        assert!(t.check(&Attempt::new("acme", "carol", None), 111).is_ok());
        // After the window, alice may try again.
        assert!(t.check(&alice, 160).is_ok());
    }

    #[test]
    fn success_clears_the_users_failures() {
        let t = Throttle::new(limits());
        let a = Attempt::new("acme", "alice", None);
        t.failed(&a, 1);
        t.failed(&a, 1);
        t.succeeded(&a);
        t.failed(&a, 1);
        t.failed(&a, 1);
        assert!(t.check(&a, 1).is_ok());
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread")]
    async fn hashing_is_bounded_and_the_overflow_refused() {
        let t = std::sync::Arc::new(Throttle::new(limits()));
        let running = std::sync::Arc::new(AtomicUsize::new(0));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (t, running, peak) = (t.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                t.hash(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    running.fetch_sub(1, Ordering::SeqCst);
                    true
                })
                .await
            }));
        }
        let mut refused = 0;
        for task in tasks {
            if task.await.unwrap().is_err() {
                refused += 1;
            }
        }
        assert_eq!(peak.load(Ordering::SeqCst), 1, "one hash at a time");
        assert!(
            refused >= 17,
            "at most one running and two waiting: {refused} refused"
        );
    }
}
