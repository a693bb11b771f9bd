//! The connections to the shared Redis: one multiplexed connection (redis-rs) and one batcher
//! per worker thread (a *lane*), plus one for every other thread, each replaced by a background
//! task when it fails. A request's call, its batch, the socket write, the reply and the wake-up
//! all stay on the request's own thread: with one connection for the whole process, waking the
//! thread that owned it and being woken back cost the gateway more than half of its extra CPU
//! per request (bench/README.md, 2026-12-05). Calls are coalesced into batches (`batch.rs`), one
//! EVALSHA in flight per lane at a time. A call never waits for a reconnect: while its lane has
//! no connection it fails at once, and the caller decides locally. Every call has the
//! configured deadline, and so has every batch. A lane that loses its connection drops every
//! lane's (Redis is one server: the others' are as likely broken), so up and down are one state
//! for the whole process, logged once per transition and exported as `hookgate_redis_up`;
//! failures count in `hookgate_redis_errors_total{op}`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::batch::{self, Job, Op};
use crate::config::RedisConfig;
use crate::observe::event;
use crate::observe::metrics::{Metrics, RedisOpLabels};

/// The longest a background connection attempt may take (connect, handshake, script load).
const CONNECT_DEADLINE: Duration = Duration::from_secs(1);
/// Pause after a failed attempt, doubling up to [`RETRY_MAX`]: a restarted Redis is found
/// again within a quarter of a second.
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(250);

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

thread_local! {
    /// The lane this thread's calls use, when it is a worker of the request path.
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes the calling thread use lane `index` of every [`RedisHandle`] (the server's worker
/// threads call it once, at start, with the index of their runtime in the handles given to
/// [`RedisHandle::start`]). Threads that never call it share the last lane.
pub fn bind_lane(index: usize) {
    LANE.set(Some(index));
}

/// A handle on the shared Redis. Cheap to share (`Arc`); dropping the last one stops the
/// reconnect tasks and the batchers, and so closes the connections.
pub struct RedisHandle {
    inner: Arc<Inner>,
    /// Where each lane's calls go; index as in `Inner::lanes`.
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    tasks: Vec<JoinHandle<()>>,
}

/// One lane's connection, made and used on one runtime only.
#[derive(Default)]
struct Lane {
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Wakes the lane's reconnect task after its connection was dropped.
    wake: Notify,
}

struct Inner {
    config: RedisConfig,
    /// One per worker runtime, then one for every other thread.
    lanes: Vec<Lane>,
    state: AtomicU8,
    errors: Family<RedisOpLabels, Counter>,
    up: Gauge,
    fallback: Counter,
    /// The password in the URL, if any, to take out of error texts.
    password: Option<String>,
}

impl RedisHandle {
    /// Starts connecting in the background and returns at once: one lane on each of the
    /// `workers` runtimes, and one on the current runtime (must run inside tokio) for every
    /// other thread.
    pub fn start(config: RedisConfig, metrics: &Metrics, workers: &[Handle]) -> Arc<RedisHandle> {
        let password = password_of(&config.url);
        let inner = Arc::new(Inner {
            config,
            lanes: (0..=workers.len()).map(|_| Lane::default()).collect(),
            state: AtomicU8::new(UNKNOWN),
            errors: metrics.redis_errors.clone(),
            up: metrics.redis_up.clone(),
            fallback: metrics.rate_limit_fallback.clone(),
            password,
        });
        inner.up.set(0);
        let client = match client(&inner.config) {
            Ok(client) => Some(client),
            Err(e) => {
                // Validation parsed this URL already; should it fail anyway, stay local.
                inner.count_error("connect");
                inner.transition(DOWN, &inner.describe(&e));
                None
            }
        };
        let current = Handle::current();
        let (mut jobs, mut tasks) = (Vec::new(), Vec::new());
        for index in 0..inner.lanes.len() {
            let runtime = workers.get(index).unwrap_or(&current);
            if let Some(client) = &client {
                tasks.push(runtime.spawn(keep_connected(
                    Arc::clone(&inner),
                    index,
                    client.clone(),
                )));
            }
            let (sender, queued) = mpsc::unbounded_channel();
            let inner = Arc::clone(&inner);
            tasks.push(runtime.spawn(batch::run(queued, move |invocation, n| {
                let inner = Arc::clone(&inner);
                async move { inner.send_batch(index, invocation, n).await }
            })));
            jobs.push(sender);
        }
        Arc::new(RedisHandle { inner, jobs, tasks })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    pub fn key_prefix(&self) -> &str {
        &self.inner.config.key_prefix
    }

    /// True while every lane has a connection (the last call on each did not fail).
    pub fn is_up(&self) -> bool {
        self.inner.all_connected()
    }

    /// Counts a rate-limit check decided locally.
    pub fn count_fallback(&self) {
        self.inner.fallback.inc();
    }

    /// Runs `op` on `key` in the next batch of this thread's lane, within the deadline: the
    /// two integers of the answer (see `batch.rs`). `None` when Redis is down, slow or failed:
    /// the caller decides locally. Counted in `hookgate_redis_errors_total{op}` then.
    pub async fn call(&self, op: Op, key: String) -> Option<(i64, i64)> {
        let inner = &self.inner;
        let name = op.name();
        let last = inner.lanes.len() - 1;
        let lane = LANE.get().filter(|&i| i < last).unwrap_or(last);
        if inner.lanes[lane].conn.load().is_none() {
            inner.count_error(name);
            return None;
        }
        let (reply, answer) = oneshot::channel();
        if self.jobs[lane].send(Job { op, key, reply }).is_err() {
            inner.count_error(name);
            return None;
        }
        match tokio::time::timeout(inner.config.timeout, answer).await {
            Ok(Ok(Some(answer))) => Some(answer),
            // The batch failed (and said why), or this caller's deadline passed first.
            _ => {
                inner.count_error(name);
                None
            }
        }
    }
}

impl Drop for RedisHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// One batch of `n` calls on lane `lane`: the flat answer (two integers per call), or
    /// `None` after an error or a missed deadline (the connections are then dropped and made
    /// again).
    async fn send_batch(
        &self,
        lane: usize,
        invocation: redis::ScriptInvocation<'static>,
        n: usize,
    ) -> Option<Vec<i64>> {
        let used = self.lanes[lane].conn.load_full()?;
        let mut conn = MultiplexedConnection::clone(&used);
        let answer: Result<Vec<i64>, RedisError> =
            match tokio::time::timeout(self.config.timeout, invocation.invoke_async(&mut conn))
                .await
            {
                Ok(answer) => answer,
                Err(_) => {
                    self.lost(
                        lane,
                        &used,
                        &format!(
                            "no answer within {}",
                            humantime::format_duration(self.config.timeout)
                        ),
                    );
                    return None;
                }
            };
        match answer {
            Ok(values) if values.len() == 2 * n => Some(values),
            Ok(values) => {
                event(
                    "warn",
                    "redis call failed",
                    serde_json::json!({"error": format!("{} answers for {n} calls", values.len() / 2)}),
                );
                None
            }
            Err(e) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout()
                {
                    self.lost(lane, &used, &self.describe(&e));
                } else {
                    event(
                        "warn",
                        "redis call failed",
                        serde_json::json!({"error": self.describe(&e)}),
                    );
                }
                None
            }
        }
    }

    fn count_error(&self, op: &'static str) {
        self.errors.get_or_create(&RedisOpLabels { op }).inc();
    }

    fn all_connected(&self) -> bool {
        self.lanes.iter().all(|lane| lane.conn.load().is_some())
    }

    /// An error text with the password taken out.
    fn describe(&self, e: &RedisError) -> String {
        let text = e.to_string();
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text,
        }
    }

    /// Lane `lane`'s connection `failed` failed or missed a deadline: drop every lane's (later
    /// calls fall back at once) and let the background tasks make new ones. A late failure of
    /// a connection already replaced changes nothing.
    fn lost(&self, lane: usize, failed: &Arc<MultiplexedConnection>, why: &str) {
        let current = self.lanes[lane].conn.load();
        if !current
            .as_ref()
            .is_some_and(|conn| Arc::ptr_eq(conn, failed))
        {
            return;
        }
        drop(current);
        for lane in &self.lanes {
            if lane.conn.swap(None).is_some() {
                lane.wake.notify_one();
            }
        }
        self.transition(DOWN, why);
    }

    fn transition(&self, to: u8, why: &str) {
        let from = self.state.swap(to, Ordering::AcqRel);
        if from == to {
            return;
        }
        self.up.set(i64::from(to == UP));
        let url = self.config.redacted_url();
        if to == UP {
            event(
                "info",
                "redis up: rate limits and replay memory are shared",
                serde_json::json!({"redis": url}),
            );
        } else {
            event(
                "warn",
                "redis down: rate limits and replay memory are local until it is back",
                serde_json::json!({"redis": url, "error": why}),
            );
        }
    }
}

/// Keeps lane `index` connected: makes its connection when there is none (on the runtime this
/// task runs on, which also runs the connection's driver), then sleeps until it is dropped.
/// Redis is up again once every lane is.
async fn keep_connected(inner: Arc<Inner>, index: usize, client: redis::Client) {
    let lane = &inner.lanes[index];
    let mut pause = RETRY_MIN;
    loop {
        if lane.conn.load().is_none() {
            match tokio::time::timeout(CONNECT_DEADLINE, connect(&client)).await {
                Ok(Ok(conn)) => {
                    lane.conn.store(Some(Arc::new(conn)));
                    if inner.all_connected() {
                        inner.transition(UP, "");
                    }
                    pause = RETRY_MIN;
                }
                failed => {
                    inner.count_error("connect");
                    let why = match failed {
                        Ok(Err(e)) => inner.describe(&e),
                        _ => "connection attempt timed out".to_string(),
                    };
                    inner.transition(DOWN, &why);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        lane.wake.notified().await;
    }
}

/// A client for the configured URL; with `redis.ca`, trusting that CA instead of the
/// system's roots.
fn client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    match &config.ca {
        None => redis::Client::open(config.url.as_str()),
        Some(pem) => redis::Client::build_with_tls(
            config.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
    }
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_DEADLINE))
        .set_response_timeout(Some(CONNECT_DEADLINE));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    batch::batch_script().load_async(&mut conn).await?;
    Ok(conn)
}

/// The password of `redis://user:password@host`, if any.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_found_and_redacted() {
        assert_eq!(
            password_of("redis://:s3cret@127.0.0.1:6379/0").as_deref(),
            Some("s3cret")
        );
        assert_eq!(password_of("redis://127.0.0.1:6379"), None);
        assert_eq!(
            crate::config::redact_url("rediss://app:s3cret@cache:6380/1"),
            "rediss://app:***@cache:6380/1"
        );
        assert_eq!(
            crate::config::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
