//! State shared by several gateway instances through one Redis (DESIGN.md section 2): the
//! rate-limit buckets and the replay memory. Redis is a help, never a dependency: every call
//! has the configured deadline, and on an error, a missed deadline or a connection that is down
//! the request is decided by the instance's local state instead (the local limiter at the
//! route's limit divided by `redis.instances`, the in-memory replay store). A background task
//! reconnects; no request waits for it.

pub mod batch;
pub mod rate_limit;
pub mod redis;
pub mod replay;

pub use self::redis::RedisHandle;
