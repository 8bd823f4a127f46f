//! HTTP/2 (RFC 9113), the second protocol beside `src/http/`: the `h2` crate (hyperium) does
//! the framing, HPACK, stream states and flow control; stogie drives it from its own threads
//! without an async runtime (docs/http2.md says why).
//!
//! - `io.rs`: the non-blocking socket (plain or TLS) under a connection, as `h2` reads it;
//! - `session.rs`: one connection: handshake, accepting streams, shutting down, its limits;
//! - `collect.rs`: request bodies collected before the application runs, as for HTTP/1.1;
//! - `stream.rs`: one stream as a worker thread uses it: the request body as the
//!   application reads it, the response as the peer's flow-control window allows;
//! - `file_body.rs`: a response body read from a file, sent by the connection's thread;
//! - `static_files.rs`: `--static` files answered on a stream, as for HTTP/1.x;
//! - `head.rs`: a stream's request head laid out as an HTTP/1.1 head, so that it is checked
//!   and turned into an environ by exactly the code that serves HTTP/1.1.
//!
//! The threads: server/http2.rs polls every HTTP/2 connection from one thread; each stream is one
//! application call on the worker threads (wsgi/http2.rs), which wake that thread through the
//! connection's waker when they have sent or consumed something.

pub mod collect;
pub mod file_body;
pub mod head;
pub mod io;
pub mod session;
pub mod static_files;
pub mod stream;
