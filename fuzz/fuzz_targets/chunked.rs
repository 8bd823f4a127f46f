//! The chunked decoder on arbitrary bytes in arbitrary splits and with arbitrary read sizes:
//! never panics, reports only in-bounds data, and the decoded body, the end and the error
//! verdict are the same as for the whole input decoded at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stogie_fuzz::http::chunked::{ChunkedDecoder, Decoded, MAX_CHUNK_SIZE};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Body bytes, and whether the last chunk and trailers were complete.
    Body(Vec<u8>, bool),
    /// Body bytes produced before the framing error.
    Error(Vec<u8>),
}

/// Feeds `input` in pieces of the given sizes (cycled), asking for at most `max_data` body
/// bytes per call, as a connection buffer would: unconsumed bytes stay pending.
fn decode(input: &[u8], splits: &[usize], max_data: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut turn = 0;
    loop {
        let step = splits[turn % splits.len()].max(1);
        let want = max_data[turn % max_data.len()].max(1);
        turn += 1;
        if fed < input.len() {
            let end = (fed + step).min(input.len());
            pending.extend_from_slice(&input[fed..end]);
            fed = end;
        }
        // Decode what is pending until the decoder needs more.
        loop {
            match decoder.decode(&pending, want) {
                Err(_) => return Outcome::Error(body),
                Ok((used, found)) => {
                    assert!(used <= pending.len());
                    // No chunk above the bound is ever accepted: a size is reported above it
                    // only with `Oversized`, which leaves the refused digit pending.
                    if found == Decoded::Oversized {
                        assert!(used < pending.len(), "Oversized without bytes left");
                        assert!(decoder.pending_data() > MAX_CHUNK_SIZE);
                    } else {
                        assert!(decoder.pending_data() <= MAX_CHUNK_SIZE);
                    }
                    if let Decoded::Data { start, len } = found {
                        assert!(len > 0 && len <= want && start + len <= used);
                        body.extend_from_slice(&pending[start..start + len]);
                    }
                    pending.drain(..used);
                    match found {
                        Decoded::End => {
                            assert!(decoder.is_done());
                            return Outcome::Body(body, true);
                        }
                        Decoded::NeedMore => {
                            assert!(pending.is_empty(), "NeedMore with bytes left");
                            break;
                        }
                        Decoded::Data { .. } if pending.is_empty() => break,
                        // The next call fails on the byte left pending.
                        Decoded::Data { .. } | Decoded::Oversized => {}
                    }
                }
            }
        }
        if fed == input.len() && pending.is_empty() {
            return Outcome::Body(body, false);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Layout: n_splits, splits..., n_max, max..., then the wire bytes.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8) + 1;
    if rest.len() < n + 1 {
        return;
    }
    let splits: Vec<usize> = rest[..n].iter().map(|&b| usize::from(b) + 1).collect();
    let m = usize::from(rest[n] % 4) + 1;
    let rest = &rest[n + 1..];
    if rest.len() < m {
        return;
    }
    let max_data: Vec<usize> = rest[..m].iter().map(|&b| usize::from(b) * 7 + 1).collect();
    let wire = &rest[m..];

    let whole = decode(wire, &[wire.len().max(1)], &[usize::MAX]);
    let split = decode(wire, &splits, &max_data);
    // Errors are found at the same byte, so even the body produced before them is the same.
    assert_eq!(whole, split, "split decoding differs");
});
