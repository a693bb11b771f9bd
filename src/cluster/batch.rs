//! Coalesced Redis calls: while one EVALSHA is in flight, the calls that arrive queue, and the
//! next EVALSHA carries all of them (up to [`MAX_BATCH`]), one key each, decided in arrival
//! order by one script. A request makes at most one round trip and usually shares it; Redis
//! pays its per-call cost (parsing, the script call, `TIME`, the reply's syscall) once per
//! batch instead of once per request, and the gateway one encode, one write and one wake-up.
//!
//! Measured on http-2k with the route's limiter on Redis (bench/README.md, 2026-12-05,
//! evening): one EVALSHA per request cost the gateway and redis-server together about twice the
//! local limiter's CPU per request.
//!
//! Rate-limit checks and replay claims, markings and releases of different requests share the
//! same batches. Each caller keeps its own deadline: past it, it decides locally and the batch's
//! late answer for it is dropped.

use std::sync::{Arc, LazyLock};

use redis::Script;
use tokio::sync::{mpsc, oneshot};

/// Keys per EVALSHA: bounds the time one script holds Redis (a GCRA step is about a
/// microsecond of Lua).
pub const MAX_BATCH: usize = 256;

/// One script for every operation: `KEYS[i]` with `ARGV[3i-2..3i]` = operation, two arguments;
/// the answer is two integers per key, in order. One `TIME` for the whole batch: the clock of
/// every GCRA step in it (the batch runs atomically, so that is also their true order).
/// - `l interval_us burst`: GCRA (see `rate_limit.rs`): `{1, remaining}` or `{0, wait_us}`.
///   A bucket is read once per batch and written once at its end, however many of the batch's
///   checks it takes (with `key: route` that is all of them): Redis's cost per check is then a
///   few Lua operations, not a GET and a SET.
/// - `c owner ttl_ms`: claim (see `replay.rs`): `{0}` fresh, `{1}` delivered, `{2}` in flight.
/// - `d owner window_ms`: mark delivered unless another instance holds the claim: `{1}` done.
/// - `r owner -`: release our own claim: `{1}` done.
const BATCH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local tats, dirty, order = {}, {}, {}
for i, key in ipairs(KEYS) do
  local op, a, b = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local r1, r2 = 0, 0
  if op == 'l' then
    local interval = tonumber(a)
    local burst = tonumber(b)
    local tat = tats[key]
    if tat == nil then
      tat = tonumber(redis.call('GET', key))
      if tat == nil or tat < now then tat = now end
      tats[key] = tat
    end
    local new_tat = tat + interval
    local allow_at = new_tat - interval * burst
    if allow_at > now then
      r2 = allow_at - now
    else
      if not dirty[key] then
        dirty[key] = true
        order[#order + 1] = key
      end
      tats[key] = new_tat
      r1 = 1
      r2 = math.floor((now - allow_at) / interval)
    end
  elseif op == 'c' then
    if not redis.call('SET', key, a, 'NX', 'PX', b) then
      if redis.call('GET', key) == 'd' then r1 = 1 else r1 = 2 end
    end
  elseif op == 'd' then
    local v = redis.call('GET', key)
    if v == a or v == false then
      redis.call('SET', key, 'd', 'PX', b)
      r1 = 1
    end
  elseif op == 'r' then
    if redis.call('GET', key) == a then r1 = redis.call('DEL', key) end
  end
  out[2 * i - 1] = r1
  out[2 * i] = r2
end
for _, key in ipairs(order) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1)
end
return out
"#;

static BATCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BATCH));

pub fn batch_script() -> &'static Script {
    &BATCH_SCRIPT
}

/// One operation on one key.
#[derive(Debug, Clone)]
pub enum Op {
    /// A GCRA step of a rate-limit bucket.
    Limit { interval_us: u64, burst: u64 },
    /// Claim a delivery id for `owner` unless it is claimed or delivered.
    Claim { owner: Arc<str>, ttl_ms: u64 },
    /// Mark a delivery id delivered, unless another owner holds its claim.
    Delivered { owner: Arc<str>, window_ms: u64 },
    /// Release `owner`'s claim.
    Release { owner: Arc<str> },
}

impl Op {
    /// The `op` label of `hookgate_redis_errors_total`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Limit { .. } => "rate_limit",
            Op::Claim { .. } => "claim",
            Op::Delivered { .. } => "delivered",
            Op::Release { .. } => "release",
        }
    }

    fn add_args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        match self {
            Op::Limit { interval_us, burst } => invocation.arg("l").arg(interval_us).arg(burst),
            Op::Claim { owner, ttl_ms } => invocation.arg("c").arg(&**owner).arg(ttl_ms),
            Op::Delivered { owner, window_ms } => invocation.arg("d").arg(&**owner).arg(window_ms),
            Op::Release { owner } => invocation.arg("r").arg(&**owner).arg("-"),
        };
    }
}

/// A queued call and where its answer goes.
pub struct Job {
    pub op: Op,
    pub key: String,
    pub reply: oneshot::Sender<Option<(i64, i64)>>,
}

/// Sends batches one at a time until every sender is gone: `send` runs one EVALSHA for the
/// jobs given (in order) and returns one answer per job, or `None` when Redis did not answer.
pub async fn run<F, Fut>(mut jobs: mpsc::UnboundedReceiver<Job>, send: F)
where
    F: Fn(redis::ScriptInvocation<'static>, usize) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<i64>>>,
{
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Once more round this thread's event loop first: the requests whose bytes it finds
        // meanwhile reach their checks and join this batch (fewer, larger EVALSHAs).
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A caller past its deadline decided locally already: its step must not count.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut invocation = batch_script().prepare_invoke();
        for job in &batch {
            invocation.key(job.key.as_str());
            job.op.add_args(&mut invocation);
        }
        let answers = send(invocation, batch.len()).await;
        for (i, job) in batch.drain(..).enumerate() {
            let answer = answers
                .as_ref()
                .and_then(|a| Some((*a.get(2 * i)?, *a.get(2 * i + 1)?)));
            // The caller may have given up meanwhile; nothing to do then.
            let _ = job.reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn job(key: &str) -> (Job, oneshot::Receiver<Option<(i64, i64)>>) {
        let (reply, answer) = oneshot::channel();
        let op = Op::Limit {
            interval_us: 1000,
            burst: 1,
        };
        let key = key.to_string();
        (Job { op, key, reply }, answer)
    }

    /// Calls queued while a batch is in flight go together in the next one, in order, each
    /// caller gets its own pair back, and a caller that gave up is left out.
    #[tokio::test]
    async fn queued_calls_share_the_next_batch_and_get_their_own_answers() {
        let (jobs, queued) = mpsc::unbounded_channel();
        let sent: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (first, first_answer) = job("a");
        jobs.send(first).unwrap();
        let (gone, gone_answer) = job("b");
        drop(gone_answer);
        let mut answers = Vec::new();
        for key in ["c", "d", "c"] {
            let (j, answer) = job(key);
            jobs.send(j).unwrap();
            answers.push(answer);
        }
        jobs.send(gone).unwrap();
        drop(jobs);
        let seen = Arc::clone(&sent);
        run(queued, move |_invocation, n| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(n);
                // Answer i: (i, 10 * i), to tell the callers apart.
                Some((0..n as i64).flat_map(|i| [i, 10 * i]).collect())
            }
        })
        .await;
        assert_eq!(
            *sent.lock().unwrap(),
            [4],
            "one batch, the given-up call left out"
        );
        assert_eq!(first_answer.await.unwrap(), Some((0, 0)));
        for (i, answer) in answers.into_iter().enumerate() {
            let i = i as i64 + 1;
            assert_eq!(answer.await.unwrap(), Some((i, 10 * i)));
        }
    }

    #[tokio::test]
    async fn a_failed_or_short_batch_leaves_every_caller_to_decide_locally() {
        for answer in [None, Some(vec![1, 0])] {
            let (jobs, queued) = mpsc::unbounded_channel();
            let (a, a_answer) = job("a");
            let (b, b_answer) = job("b");
            jobs.send(a).unwrap();
            jobs.send(b).unwrap();
            drop(jobs);
            let given = answer.clone();
            run(queued, move |_, _| {
                let given = given.clone();
                async move { given }
            })
            .await;
            let first = a_answer.await.unwrap();
            assert_eq!(b_answer.await.unwrap(), None, "{answer:?}");
            assert_eq!(first, answer.map(|_| (1, 0)));
        }
    }
}
