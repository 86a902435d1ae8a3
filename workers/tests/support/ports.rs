//! Ports for the processes a test starts (shared by this crate's tests and
//! the app's `tests/common`, which includes this file by path).

/// A port for a process of a test to listen on. Not one from `bind(0)`:
/// that comes from the range the OS also gives outgoing connections
/// (32768–60999 on Linux), and before the process binds it a client socket
/// of a test running alongside may take it. These come from below that
/// range, each handed out once per test process, from a place of its own
/// per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 15_000;
    const SPAN: u32 = 7_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + n) % SPAN).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}
