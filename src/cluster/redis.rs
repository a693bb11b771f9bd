//! The connection to the shared Redis: one multiplexed connection (redis-rs), replaced by a
//! background task when it fails. Calls are coalesced into batches (`batch.rs`), one EVALSHA in
//! flight at a time. A call never waits for a reconnect: while there is no connection it fails
//! at once, and the caller decides locally. Every call has the configured deadline, and so has
//! every batch. The state (up or down) is logged once per transition and exported as
//! `hookgate_redis_up`; failures count in `hookgate_redis_errors_total{op}`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
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

/// A handle on the shared Redis. Cheap to share (`Arc`); dropping the last one stops the
/// reconnect task and closes the connection.
pub struct RedisHandle {
    inner: Arc<Inner>,
    jobs: mpsc::UnboundedSender<Job>,
    task: JoinHandle<()>,
    batcher: JoinHandle<()>,
}

struct Inner {
    config: RedisConfig,
    conn: ArcSwapOption<MultiplexedConnection>,
    state: AtomicU8,
    /// Wakes the reconnect task after a connection was dropped.
    wake: Notify,
    errors: Family<RedisOpLabels, Counter>,
    up: Gauge,
    fallback: Counter,
    /// The password in the URL, if any, to take out of error texts.
    password: Option<String>,
}

impl RedisHandle {
    /// Starts connecting in the background and returns at once. Must run inside tokio.
    pub fn start(config: RedisConfig, metrics: &Metrics) -> Arc<RedisHandle> {
        let password = password_of(&config.url);
        let inner = Arc::new(Inner {
            config,
            conn: ArcSwapOption::empty(),
            state: AtomicU8::new(UNKNOWN),
            wake: Notify::new(),
            errors: metrics.redis_errors.clone(),
            up: metrics.redis_up.clone(),
            fallback: metrics.rate_limit_fallback.clone(),
            password,
        });
        inner.up.set(0);
        let task = tokio::spawn(keep_connected(Arc::clone(&inner)));
        let (jobs, queued) = mpsc::unbounded_channel();
        let batcher = tokio::spawn({
            let inner = Arc::clone(&inner);
            batch::run(queued, move |invocation, n| {
                let inner = Arc::clone(&inner);
                async move { inner.send_batch(invocation, n).await }
            })
        });
        Arc::new(RedisHandle {
            inner,
            jobs,
            task,
            batcher,
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    pub fn key_prefix(&self) -> &str {
        &self.inner.config.key_prefix
    }

    /// True while a connection is established (the last call on it did not fail).
    pub fn is_up(&self) -> bool {
        self.inner.conn.load().is_some()
    }

    /// Counts a rate-limit check decided locally.
    pub fn count_fallback(&self) {
        self.inner.fallback.inc();
    }

    /// Runs `op` on `key` in the next batch, within the deadline: the two integers of the
    /// answer (see `batch.rs`). `None` when Redis is down, slow or failed: the caller decides
    /// locally. Counted in `hookgate_redis_errors_total{op}` then.
    pub async fn call(&self, op: Op, key: String) -> Option<(i64, i64)> {
        let inner = &self.inner;
        let name = op.name();
        if inner.conn.load().is_none() {
            inner.count_error(name);
            return None;
        }
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job { op, key, reply }).is_err() {
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
        self.task.abort();
        self.batcher.abort();
    }
}

impl Inner {
    /// One batch of `n` calls: the flat answer (two integers per call), or `None` after an
    /// error or a missed deadline (the connection is then dropped and made again).
    async fn send_batch(
        &self,
        invocation: redis::ScriptInvocation<'static>,
        n: usize,
    ) -> Option<Vec<i64>> {
        let conn = self.conn.load_full()?;
        let mut conn = MultiplexedConnection::clone(&conn);
        let answer: Result<Vec<i64>, RedisError> =
            match tokio::time::timeout(self.config.timeout, invocation.invoke_async(&mut conn))
                .await
            {
                Ok(answer) => answer,
                Err(_) => {
                    self.lost(&format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.timeout)
                    ));
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
                    self.lost(&self.describe(&e));
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

    /// An error text with the password taken out.
    fn describe(&self, e: &RedisError) -> String {
        let text = e.to_string();
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text,
        }
    }

    /// The connection failed or missed a deadline: drop it (later calls fall back at once) and
    /// let the background task make a new one.
    fn lost(&self, why: &str) {
        if self.conn.swap(None).is_some() {
            self.wake.notify_one();
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

/// Keeps one connection: makes it when there is none, then sleeps until a caller drops it.
async fn keep_connected(inner: Arc<Inner>) {
    let client = match client(&inner.config) {
        Ok(client) => client,
        Err(e) => {
            // Validation parsed this URL already; should it fail anyway, stay local.
            inner.count_error("connect");
            inner.transition(DOWN, &inner.describe(&e));
            return;
        }
    };
    let mut pause = RETRY_MIN;
    loop {
        if inner.conn.load().is_none() {
            match tokio::time::timeout(CONNECT_DEADLINE, connect(&client)).await {
                Ok(Ok(conn)) => {
                    inner.conn.store(Some(Arc::new(conn)));
                    inner.transition(UP, "");
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
        inner.wake.notified().await;
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
