//! The stored form of [`EventMeta`]: a version byte and the fields in a fixed order, integers
//! big-endian, text as `u32 length + UTF-8`: a third of JSON's size, and no serde on the
//! spool's write path (bench/README.md, "Durable delivery").
//!
//! A record ends with its payload's [`Location`]: which segment holds it, where.

use super::spool::{EventMeta, SpoolError, State, Trigger};

const VERSION: u8 = 1;
/// The length that stands for `None` of an optional text.
const ABSENT: u32 = u32::MAX;

/// Where an event's headers and body are: bytes `offset..offset + len` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

const LOCATION_BYTES: usize = 24;

pub fn encode(m: &EventMeta, at: Location) -> Vec<u8> {
    let text_len: usize = [
        &m.id,
        &m.route,
        &m.upstream,
        &m.method,
        &m.uri,
        &m.idempotency_key,
        &m.client_ip,
        &m.request_id,
    ]
    .iter()
    .map(|s| s.len() + 4)
    .sum();
    let mut out = Vec::with_capacity(text_len + 96);
    out.push(VERSION);
    for text in [
        &m.id,
        &m.route,
        &m.upstream,
        &m.method,
        &m.uri,
        &m.idempotency_key,
    ] {
        put_text(&mut out, text);
    }
    put_opt_text(&mut out, m.provider.as_deref());
    put_text(&mut out, &m.client_ip);
    put_text(&mut out, &m.request_id);
    out.push(u8::from(m.tls));
    out.extend_from_slice(&m.received_ms.to_be_bytes());
    out.push(match m.state {
        State::Pending => 0,
        State::Dead => 1,
        State::Delivered => 2,
    });
    out.extend_from_slice(&m.attempts.to_be_bytes());
    out.extend_from_slice(&m.round_attempts.to_be_bytes());
    out.extend_from_slice(&m.round_start_ms.to_be_bytes());
    out.extend_from_slice(&m.next_attempt_ms.to_be_bytes());
    out.push(match m.trigger {
        Trigger::Initial => 0,
        Trigger::Retry => 1,
        Trigger::Replay => 2,
    });
    out.extend_from_slice(&m.updated_ms.to_be_bytes());
    // No HTTP status is 0: it stands for none.
    out.extend_from_slice(&m.last_status.unwrap_or(0).to_be_bytes());
    put_opt_text(&mut out, m.last_reason.as_deref());
    out.extend_from_slice(&m.stored_bytes.to_be_bytes());
    for n in [at.segment, at.offset, at.len] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out
}

/// The payload's location in a record.
#[cfg(test)]
pub fn location(bytes: &[u8]) -> Result<Location, SpoolError> {
    if bytes.first() != Some(&VERSION) {
        return Err(bad());
    }
    let tail = bytes
        .len()
        .checked_sub(LOCATION_BYTES)
        .and_then(|start| bytes.get(start..))
        .ok_or_else(bad)?;
    let n = |i: usize| -> Result<u64, SpoolError> {
        let b: [u8; 8] = tail[i * 8..i * 8 + 8].try_into().map_err(|_| bad())?;
        Ok(u64::from_be_bytes(b))
    };
    Ok(Location {
        segment: n(0)?,
        offset: n(1)?,
        len: n(2)?,
    })
}

pub fn decode(bytes: &[u8]) -> Result<EventMeta, SpoolError> {
    match bytes.first() {
        Some(&VERSION) => Reader { bytes, at: 1 }.meta(),
        _ => Err(bad()),
    }
}

fn bad() -> SpoolError {
    SpoolError::Corrupt("event metadata".into())
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => put_text(out, text),
        None => out.extend_from_slice(&ABSENT.to_be_bytes()),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SpoolError> {
        let slice = self.bytes.get(self.at..self.at + N).ok_or_else(bad)?;
        self.at += N;
        slice.try_into().map_err(|_| bad())
    }

    fn u8(&mut self) -> Result<u8, SpoolError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, SpoolError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, SpoolError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, SpoolError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn opt_text(&mut self) -> Result<Option<String>, SpoolError> {
        let len = self.u32()?;
        if len == ABSENT {
            return Ok(None);
        }
        let end = self.at.checked_add(len as usize).ok_or_else(bad)?;
        let slice = self.bytes.get(self.at..end).ok_or_else(bad)?;
        self.at = end;
        String::from_utf8(slice.to_vec())
            .map(Some)
            .map_err(|_| bad())
    }

    fn text(&mut self) -> Result<String, SpoolError> {
        self.opt_text()?.ok_or_else(bad)
    }

    fn meta(mut self) -> Result<EventMeta, SpoolError> {
        Ok(EventMeta {
            id: self.text()?,
            route: self.text()?,
            upstream: self.text()?,
            method: self.text()?,
            uri: self.text()?,
            idempotency_key: self.text()?,
            provider: self.opt_text()?,
            client_ip: self.text()?,
            request_id: self.text()?,
            tls: self.u8()? != 0,
            received_ms: self.u64()?,
            state: match self.u8()? {
                0 => State::Pending,
                1 => State::Dead,
                2 => State::Delivered,
                _ => return Err(bad()),
            },
            attempts: self.u32()?,
            round_attempts: self.u32()?,
            round_start_ms: self.u64()?,
            next_attempt_ms: self.u64()?,
            trigger: match self.u8()? {
                0 => Trigger::Initial,
                1 => Trigger::Retry,
                2 => Trigger::Replay,
                _ => return Err(bad()),
            },
            updated_ms: self.u64()?,
            last_status: Some(self.u16()?).filter(|s| *s != 0),
            last_reason: self.opt_text()?,
            stored_bytes: {
                let n = self.u64()?;
                // The location follows; a record cut inside it is as broken as one cut earlier.
                if self.bytes.len() != self.at + LOCATION_BYTES {
                    return Err(bad());
                }
                n
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventMeta {
        EventMeta {
            id: "0190aa".into(),
            route: "shop".into(),
            upstream: "orders".into(),
            method: "POST".into(),
            uri: "/hooks/shop?x=1".into(),
            idempotency_key: "key-1".into(),
            provider: Some("github".into()),
            client_ip: "10.0.0.1".into(),
            request_id: "req-1".into(),
            tls: true,
            received_ms: 1_700_000_000_000,
            state: State::Dead,
            attempts: 7,
            round_attempts: 3,
            round_start_ms: 5,
            next_attempt_ms: 6,
            trigger: Trigger::Replay,
            updated_ms: 8,
            last_status: Some(410),
            last_reason: Some("non_retryable 410".into()),
            stored_bytes: 2560,
        }
    }

    #[test]
    fn records_decode_to_the_same_event_and_location() {
        let m = sample();
        let at = Location {
            segment: 7,
            offset: 4096,
            len: 2100,
        };
        let bin = encode(&m, at);
        assert_eq!(decode(&bin).unwrap(), m);
        assert_eq!(location(&bin).unwrap(), at);
        assert!(decode(&serde_json::to_vec(&m).unwrap()).is_err());
        let bare = EventMeta {
            provider: None,
            last_status: None,
            last_reason: None,
            ..sample()
        };
        assert_eq!(decode(&encode(&bare, at)).unwrap(), bare);
        assert!(bin.len() * 2 < serde_json::to_vec(&m).unwrap().len());
    }

    #[test]
    fn a_cut_or_unknown_record_is_an_error_not_a_panic() {
        let at = Location {
            segment: 1,
            offset: 0,
            len: 1,
        };
        let bin = encode(&sample(), at);
        for cut in 0..bin.len() {
            assert!(decode(&bin[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9, 0, 0]).is_err());
    }
}
