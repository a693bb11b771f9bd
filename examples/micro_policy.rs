//! Micro-benchmark: IpTable lookups over 100 000 random CIDRs and a client-IP keyed limiter
//! over 1 000 000 keys (issue 4). Run: cargo run --release --example micro_policy
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Instant;

use hookgate::ipset::{Cidr, IpTable};
use hookgate::pipeline::rate_limit::{LimitKey, Rate, RateLimitSettings, RouteLimiter};
use http::HeaderMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);

    // ---- IpTable: 100 000 random CIDRs, 70 % IPv4 (/16../32), 30 % IPv6 (/32../64) ----
    let n_cidrs = 100_000;
    let cidrs: Vec<Cidr> = (0..n_cidrs)
        .filter_map(|i| {
            let r = rng.next();
            if i % 10 < 7 {
                Cidr::new(
                    IpAddr::V4(Ipv4Addr::from((r >> 32) as u32)),
                    16 + (r % 17) as u8,
                )
                .ok()
            } else {
                let a = (u128::from(rng.next()) << 64) | u128::from(rng.next());
                Cidr::new(IpAddr::V6(Ipv6Addr::from(a)), 32 + (r % 33) as u8).ok()
            }
        })
        .collect();
    let before = rss_kib();
    let t0 = Instant::now();
    let table = IpTable::new(cidrs.iter().copied());
    let build = t0.elapsed();
    let after = rss_kib();
    drop(cidrs);
    let probes: Vec<IpAddr> = (0..1_000_000)
        .map(|i| {
            let r = rng.next();
            if i % 10 < 7 {
                IpAddr::V4(Ipv4Addr::from(r as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    (u128::from(r) << 64) | u128::from(rng.next()),
                ))
            }
        })
        .collect();
    let mut hits = 0u64;
    let rounds = 5;
    let t0 = Instant::now();
    for _ in 0..rounds {
        for p in &probes {
            hits += u64::from(table.contains(black_box(*p)));
        }
    }
    let per = t0.elapsed().as_nanos() as f64 / (rounds * probes.len()) as f64;
    println!(
        "IpTable: {n_cidrs} random CIDRs -> {} merged ranges, build {:?}, RSS +{} KiB; \
         contains(): {per:.1} ns/lookup over {} random probes ({} hits)",
        table.len(),
        build,
        after.saturating_sub(before),
        rounds * probes.len(),
        hits
    );
    drop(probes);

    let none = HeaderMap::new();
    let n_keys: u32 = 1_000_000;
    let keys: Vec<IpAddr> = (0..n_keys)
        .map(|i| IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))))
        .collect();
    // ---- Flood against the default cap (100 000): memory stays bounded ----
    let capped = RouteLimiter::new(
        RateLimitSettings::new(
            Rate::PerSecond(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)),
            NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            LimitKey::ClientIp,
        )
        .expect("settings"),
    );
    let before = rss_kib();
    let t0 = Instant::now();
    let mut refused = 0u64;
    for k in &keys {
        refused += u64::from(capped.check(*k, &none).is_err());
    }
    let per = t0.elapsed().as_nanos() as f64 / f64::from(n_keys);
    println!(
        "flood of {n_keys} distinct keys against the default cap: {} keys kept, RSS +{} KiB, \
         {per:.1} ns/check, {refused} refused (overflow bucket)",
        capped.len(),
        rss_kib().saturating_sub(before)
    );
    // ---- RouteLimiter keyed by client IP, 1 000 000 distinct IPv4 keys ----
    let settings = RateLimitSettings::new(
        Rate::PerSecond(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)),
        NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
        LimitKey::ClientIp,
    )
    .expect("settings")
    .with_max_keys(NonZeroUsize::new(n_keys as usize + 1).expect("nonzero"));
    let limiter = RouteLimiter::new(settings);
    let before = rss_kib();
    let t0 = Instant::now();
    for k in &keys {
        let _ = black_box(limiter.check(*k, &none));
    }
    let insert = t0.elapsed().as_nanos() as f64 / f64::from(n_keys);
    let after = rss_kib();
    let t0 = Instant::now();
    let mut admitted = 0u64;
    for _ in 0..3 {
        for k in &keys {
            admitted += u64::from(limiter.check(black_box(*k), &none).is_ok());
        }
    }
    let hit = t0.elapsed().as_nanos() as f64 / (3.0 * f64::from(n_keys));
    println!(
        "RouteLimiter (client_ip, {n_keys} keys): first check (inserts) {insert:.1} ns, \
         check on existing key {hit:.1} ns; {} keys, RSS +{} KiB ({:.1} B/key); admitted {admitted}",
        limiter.len(),
        after.saturating_sub(before),
        (after.saturating_sub(before) * 1024) as f64 / f64::from(n_keys)
    );
    let t0 = Instant::now();
    limiter.retain_recent();
    println!(
        "retain_recent on 1M keys: {:?} ({} keys still busy kept)",
        t0.elapsed(),
        limiter.len()
    );
    drop(limiter);
}
