//! The access log: one line per response, formatted by the worker without the GIL into a
//! shared buffer that the monitor thread writes out (no system call per request). Apache's
//! combined format by default, or a format string with Apache's common directives.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub const COMBINED: &str = r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#;
/// The buffer is written out when it grows past this, even between monitor ticks.
const FLUSH_AT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `%h`, `%a`: the client, after trusted proxy headers.
    RemoteHost,
    /// `%{peer}h`: the connection's peer (a proxy, when there is one).
    Peer,
    Time,
    RequestLine,
    Status,
    BodyBytes {
        dash_for_zero: bool,
    },
    Micros,
    Seconds,
    Method,
    Path,
    Query,
    Protocol,
    Header(String),
    Dash,
}

/// What one response contributes to its log line.
pub struct Entry<'a> {
    /// The client: REMOTE_ADDR after trusted `Forwarded`/`X-Forwarded-For` headers.
    pub remote: &'a str,
    /// The connection's peer (after a PROXY protocol header, the client it announces).
    pub peer: &'a str,
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub protocol: &'a [u8],
    pub status: u16,
    pub body_bytes: u64,
    pub micros: u64,
    pub header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

pub struct AccessLog {
    pieces: Vec<Piece>,
    path: Option<String>,
    file: Mutex<Option<File>>,
    buffer: Mutex<Vec<u8>>,
}

impl AccessLog {
    /// `path` of None or "-" logs to standard output.
    pub fn open(path: Option<&str>, format: Option<&str>) -> Result<AccessLog, String> {
        let pieces = parse_format(format.unwrap_or(COMBINED))?;
        let path = path.filter(|p| *p != "-").map(str::to_string);
        let file = match &path {
            Some(p) => {
                Some(open_append(p).map_err(|e| format!("cannot open access log {p:?}: {e}"))?)
            }
            None => None,
        };
        Ok(AccessLog {
            pieces,
            path,
            file: Mutex::new(file),
            buffer: Mutex::new(Vec::new()),
        })
    }

    /// Formats one line into the shared buffer.
    pub fn record(&self, entry: &Entry<'_>) {
        let mut line = Vec::with_capacity(256);
        self.format(entry, &mut line);
        line.push(b'\n');
        let full = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
            buffer.extend_from_slice(&line);
            buffer.len() >= FLUSH_AT
        };
        if full {
            self.flush();
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let data = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if data.is_empty() {
            return;
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match file.as_mut() {
            Some(f) => f.write_all(&data),
            None => write_lines_atomically(&data),
        };
    }

    /// Reopens the file (after log rotation moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        self.flush();
        if let Some(path) = &self.path {
            let fresh = open_append(path)?;
            *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        }
        Ok(())
    }

    fn format(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::RemoteHost => out.extend_from_slice(if e.remote.is_empty() {
                    b"-"
                } else {
                    e.remote.as_bytes()
                }),
                Piece::Peer => out.extend_from_slice(if e.peer.is_empty() {
                    b"-"
                } else {
                    e.peer.as_bytes()
                }),
                Piece::Time => append_clf_time(out),
                Piece::RequestLine => {
                    if e.method.is_empty() {
                        out.push(b'-');
                    } else {
                        escaped(out, e.method);
                        out.push(b' ');
                        escaped(out, e.target);
                        out.push(b' ');
                        escaped(out, e.protocol);
                    }
                }
                Piece::Status => {
                    out.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes())
                }
                Piece::BodyBytes { dash_for_zero } => {
                    if *dash_for_zero && e.body_bytes == 0 {
                        out.push(b'-');
                    } else {
                        out.extend_from_slice(itoa::Buffer::new().format(e.body_bytes).as_bytes());
                    }
                }
                Piece::Micros => {
                    out.extend_from_slice(itoa::Buffer::new().format(e.micros).as_bytes())
                }
                Piece::Seconds => out
                    .extend_from_slice(itoa::Buffer::new().format(e.micros / 1_000_000).as_bytes()),
                Piece::Method => escaped(out, e.method),
                Piece::Path => escaped(
                    out,
                    e.target.split(|&b| b == b'?').next().unwrap_or_default(),
                ),
                Piece::Query => {
                    if let Some(q) = memchr::memchr(b'?', e.target) {
                        escaped(out, &e.target[q..]);
                    }
                }
                Piece::Protocol => escaped(out, e.protocol),
                Piece::Header(name) => match (e.header)(name) {
                    Some(v) => escaped(out, v),
                    None => out.push(b'-'),
                },
                Piece::Dash => out.push(b'-'),
            }
        }
    }
}

/// Standard output may be a pipe shared by several worker processes: writes of at most
/// PIPE_BUF bytes, cut at line ends, are never interleaved with theirs.
fn write_lines_atomically(data: &[u8]) -> io::Result<()> {
    const PIPE_BUF: usize = 4096;
    let mut out = io::stdout().lock();
    let mut rest = data;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(PIPE_BUF)];
        let cut = if window.len() < PIPE_BUF {
            window.len()
        } else {
            memchr::memrchr(b'\n', window).map_or(window.len(), |i| i + 1)
        };
        out.write_all(&rest[..cut])?;
        out.flush()?;
        rest = &rest[cut..];
    }
    Ok(())
}

fn open_append(path: &str) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Copies a client-controlled value, escaping quotes, backslashes and non-printable bytes, so
/// a request cannot forge log lines.
fn escaped(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
}

fn parse_format(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        let piece = match chars.next() {
            Some('%') => Piece::Text("%".into()),
            Some('h') | Some('a') => Piece::RemoteHost,
            Some('l') | Some('u') => Piece::Dash,
            Some('t') => Piece::Time,
            Some('r') => Piece::RequestLine,
            Some('s') => Piece::Status,
            Some('>') if chars.next() == Some('s') => Piece::Status,
            Some('b') => Piece::BodyBytes {
                dash_for_zero: true,
            },
            Some('B') => Piece::BodyBytes {
                dash_for_zero: false,
            },
            Some('D') => Piece::Micros,
            Some('T') => Piece::Seconds,
            Some('m') => Piece::Method,
            Some('U') => Piece::Path,
            Some('q') => Piece::Query,
            Some('H') => Piece::Protocol,
            Some('{') => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                match chars.next() {
                    Some('i') if !name.is_empty() => Piece::Header(name),
                    Some('h') if name == "peer" => Piece::Peer,
                    _ => return Err(format!("unsupported access log directive %{{{name}}}")),
                }
            }
            other => {
                return Err(format!(
                    "unsupported access log directive %{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        };
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// `[10/Oct/2000:13:55:36 +0000]` for now (UTC).
fn append_clf_time(out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    out.extend_from_slice(
        format!(
            "[{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000]",
            d,
            MONTHS[(m - 1) as usize],
            y,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
        .as_bytes(),
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }

    #[test]
    fn combined_line() {
        let log = AccessLog::open(Some("/dev/null"), None).unwrap();
        let headers = |name: &str| -> Option<&[u8]> {
            (name == "User-Agent").then_some(&b"curl/8 \"x\""[..])
        };
        let entry = Entry {
            remote: "10.0.0.1",
            peer: "10.9.9.9",
            method: b"GET",
            target: b"/a?b",
            protocol: b"HTTP/1.1",
            status: 200,
            body_bytes: 0,
            micros: 1500,
            header: &headers,
        };
        let mut out = Vec::new();
        log.format(&entry, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
        assert!(
            line.ends_with(r#"] "GET /a?b HTTP/1.1" 200 - "-" "curl/8 \"x\"""#),
            "{line}"
        );
    }

    #[test]
    fn custom_format_and_errors() {
        assert!(parse_format("%h %D %{X-Id}i %q %{peer}h").is_ok());
        assert!(parse_format("%{other}h").is_err());
        assert!(parse_format("%Z").is_err());
        assert!(parse_format("%{X}o").is_err());
    }
}
