//! The `limits:` block: body, header and connection limits and their defaults.

use super::super::raw::RawLimits;
use super::super::Limits;
use super::{ConfigError, Ctx};

pub(super) fn limits(ctx: &Ctx, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        max_body: ctx.size(&raw.max_body, "limits.max_body", d.max_body)?,
        header_timeout: ctx.duration(
            &raw.header_timeout,
            "limits.header_timeout",
            d.header_timeout,
        )?,
        body_timeout: ctx.duration(&raw.body_timeout, "limits.body_timeout", d.body_timeout)?,
        handshake_timeout: ctx.duration(
            &raw.handshake_timeout,
            "limits.handshake_timeout",
            d.handshake_timeout,
        )?,
        keep_alive_timeout: ctx.duration(
            &raw.keep_alive_timeout,
            "limits.keep_alive_timeout",
            d.keep_alive_timeout,
        )?,
        drain_timeout: ctx.duration(&raw.drain_timeout, "limits.drain_timeout", d.drain_timeout)?,
        idle_timeout: ctx.duration(&raw.idle_timeout, "limits.idle_timeout", d.idle_timeout)?,
        send_timeout: ctx.duration(&raw.send_timeout, "limits.send_timeout", d.send_timeout)?,
        max_unsent: {
            let size = ctx.size(&raw.max_unsent, "limits.max_unsent", d.max_unsent)?;
            match &raw.max_unsent {
                Some(value) if size < (16 << 10) => {
                    return Err(ctx.err(
                        &value.referenced,
                        "limits.max_unsent",
                        "must be at least 16KiB",
                    ));
                }
                _ => size,
            }
        },
        max_connections: ctx.count(
            &raw.max_connections,
            "limits.max_connections",
            d.max_connections as u64,
            1_000_000,
        )? as usize,
        max_headers: ctx.count(
            &raw.max_headers,
            "limits.max_headers",
            d.max_headers as u64,
            1_000,
        )? as usize,
        max_header_size: {
            let size = ctx.size(
                &raw.max_header_size,
                "limits.max_header_size",
                d.max_header_size as u64,
            )?;
            // hyper's read buffer cannot be smaller than 8 KiB; 1 MiB of headers is abuse.
            match &raw.max_header_size {
                Some(value) if !(8192..=(1 << 20)).contains(&size) => {
                    return Err(ctx.err(
                        &value.referenced,
                        "limits.max_header_size",
                        "must be between 8KiB and 1MiB",
                    ));
                }
                _ => size as usize,
            }
        },
        h2_max_concurrent_streams: ctx.count(
            &raw.h2_max_concurrent_streams,
            "limits.h2_max_concurrent_streams",
            d.h2_max_concurrent_streams as u64,
            10_000,
        )? as u32,
        worker_threads: ctx.count(
            &raw.worker_threads,
            "limits.worker_threads",
            d.worker_threads as u64,
            1024,
        )? as usize,
    })
}
