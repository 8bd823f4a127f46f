//! The connection state machine (conn.rs) over a real socket pair, fed arbitrary bytes in
//! arbitrary splits. For each request the "application" either reads the body (in reads of
//! fuzzer-chosen sizes) or leaves it unread (the connection must skip it). The sequence of
//! requests, bodies, errors and closes must be exactly the one seen when all the bytes arrive
//! at once: how the stream is split never changes where a request ends. With body collection
//! on (conn/intake.rs, in memory or spooled to a file), a body that had not fully arrived with
//! its head is read from the collection instead: the same bytes must come out.
#![no_main]

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stogie_fuzz::conn::{Body, BodyError, BodyGauges, Conn, IntakeRules, Next, Rules};
use stogie_fuzz::http::request::Limits;
use stogie_fuzz::net::listener::Peer;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Request {
        method: Vec<u8>,
        target: Vec<u8>,
        framing: String,
        keep_alive: bool,
    },
    Body(Vec<u8>),
    BodyError(String),
    Unread,
    Error(&'static str),
    Close,
    /// The connection opened with the HTTP/2 preface.
    Http2,
    /// The harness gave up (too many requests): not a verdict.
    Limit,
}

struct Plan<'a> {
    /// Sizes of the pieces the client writes (cycled); empty: everything at once.
    splits: &'a [u8],
    /// Per request: bit 0 = the app reads the body; the rest = its read size.
    reads: &'a [u8],
    max_body: u64,
    /// Collect bodies before the "application" runs, keeping this many bytes in memory.
    collect: Option<usize>,
}

fn run(wire: &[u8], plan: &Plan) -> Vec<Event> {
    let (server, mut client) = UnixStream::pair().expect("socketpair");
    server.set_nonblocking(true).expect("nonblocking");
    let mut conn = Conn::plain(server.into(), Peer::default());
    let gauges = Arc::new(BodyGauges::default());
    let intake = plan.collect.map(|memory_limit| {
        let rules = IntakeRules {
            memory_limit,
            spool_limit: 1 << 30,
            min_rate: 0,
            grace: Duration::from_secs(10),
        };
        (rules, &gauges)
    });
    let rules = Rules {
        limits: Limits { max_head: 0 },
        max_body: plan.max_body,
        intake,
        // The HTTP/2 preface ends the HTTP/1 part of a connection (Next::Http2).
        http2: true,
    };
    let timeout = Duration::from_millis(200);
    let mut events = Vec::new();
    let mut fed = 0;
    let mut turn = 0;
    let mut eof = false;

    // Writes the next piece (or everything left); at the end shuts the client's side.
    let mut feed = |conn: &mut Conn, all: bool, fed: &mut usize, eof: &mut bool| {
        if *fed < wire.len() {
            let step = if all || plan.splits.is_empty() {
                wire.len()
            } else {
                usize::from(plan.splits[turn % plan.splits.len()]) + 1
            };
            turn += 1;
            let end = (*fed + step).min(wire.len());
            client.write_all(&wire[*fed..end]).expect("write");
            *fed = end;
        }
        if *fed == wire.len() && !*eof {
            client.shutdown(Shutdown::Write).expect("shutdown");
            conn.note_peer_closed();
            *eof = true;
        }
    };
    if plan.splits.is_empty() {
        feed(&mut conn, true, &mut fed, &mut eof);
    }
    let mut requests = 0;
    loop {
        match conn.next_request(&rules, true) {
            Next::Wait => {
                assert!(
                    !eof,
                    "Wait after the peer closed: the connection would hang"
                );
                feed(&mut conn, false, &mut fed, &mut eof);
            }
            Next::Close | Next::Linger(_) => {
                events.push(Event::Close);
                break;
            }
            Next::Http2 => {
                events.push(Event::Http2);
                break;
            }
            Next::Error(e) => {
                events.push(Event::Error(e.status));
                break;
            }
            Next::Request(head) => {
                let buf = conn.head_bytes();
                events.push(Event::Request {
                    method: head.method.get(buf).to_vec(),
                    target: head.target.get(buf).to_vec(),
                    framing: format!("{:?}", head.body),
                    keep_alive: head.keep_alive,
                });
                let choice = plan.reads.get(requests).copied().unwrap_or(1);
                requests += 1;
                let mut body = Body::for_framing(head.body);
                if let Some(mut collected) = conn.take_collected() {
                    body = Body::Done;
                    if choice & 1 == 1 {
                        let size = usize::from(choice >> 1) * 3 + 1;
                        let mut out = Vec::new();
                        while collected.read(&mut out, size).expect("read collected") > 0 {}
                        events.push(Event::Body(out));
                    } else {
                        events.push(Event::Unread);
                    }
                } else if choice & 1 == 1 {
                    // Blocking body reads: let every byte arrive first (no waiting on timeouts).
                    feed(&mut conn, true, &mut fed, &mut eof);
                    let size = usize::from(choice >> 1) * 3 + 1;
                    let mut out = Vec::new();
                    let verdict = loop {
                        match conn.read_body(&mut body, &mut out, size, plan.max_body, timeout) {
                            Ok(0) => break Event::Body(std::mem::take(&mut out)),
                            Ok(n) => assert!(n <= size),
                            Err(e) => break Event::BodyError(describe(&e)),
                        }
                    };
                    let failed = matches!(verdict, Event::BodyError(_));
                    events.push(verdict);
                    if failed {
                        break; // the server answers and closes
                    }
                } else {
                    events.push(Event::Unread);
                }
                if !head.keep_alive {
                    break;
                }
                conn.finish_request(body);
                if requests >= 64 {
                    events.push(Event::Limit);
                    break;
                }
            }
        }
    }
    events
}

fn describe(e: &BodyError) -> String {
    match e {
        BodyError::Framing(err) => format!("framing {}", err.status),
        BodyError::Io(err) => format!("io {:?}", err.kind()),
        other => format!("{other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // Layout: flags, n_splits, splits..., n_reads, reads..., then the wire bytes.
    let [flags, n, rest @ ..] = data else { return };
    let n = usize::from(*n % 16);
    if rest.len() < n + 1 {
        return;
    }
    let (splits, rest) = rest.split_at(n);
    let m = usize::from(rest[0] % 16);
    let rest = &rest[1..];
    if rest.len() < m {
        return;
    }
    let (reads, wire) = rest.split_at(m);
    let max_body = match flags % 4 {
        0 => 0,
        1 => 16,
        2 => 1000,
        _ => 100_000,
    };
    let collect = match (flags >> 2) % 4 {
        1 => Some(1 << 20),
        2 => Some(16),
        _ => None,
    };
    let whole = run(
        wire,
        &Plan {
            splits: &[],
            reads,
            max_body,
            collect,
        },
    );
    if splits.is_empty() {
        return;
    }
    let split = run(
        wire,
        &Plan {
            splits,
            reads,
            max_body,
            collect,
        },
    );
    assert_eq!(whole, split, "the split stream was read differently");
});
