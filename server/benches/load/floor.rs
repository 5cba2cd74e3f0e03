//! The physical floor: CPU time of one small `write` to a loopback TCP
//! socket on this machine, against which CPU per delivery is compared.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// CPU time of the calling thread (µs).
fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

/// What one small write costs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Floor {
    /// Writer's CPU per `write` of `bytes` bytes (µs).
    pub write_us: f64,
    /// Reader's CPU per write, reading into a 64 KiB buffer as fast as it
    /// can (several writes per read when it falls behind) (µs).
    pub read_us: f64,
    pub bytes: usize,
}

/// Writes `count` messages of `bytes` bytes (about one SSE event in its
/// HTTP chunk) on a loopback TCP connection with `TCP_NODELAY`, one
/// `write` each, while another thread reads; best of 3 rounds.
pub fn measure(bytes: usize, count: usize) -> std::io::Result<Floor> {
    let mut best = Floor {
        write_us: f64::INFINITY,
        read_us: f64::INFINITY,
        bytes,
    };
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut writer = TcpStream::connect(listener.local_addr()?)?;
        writer.set_nodelay(true)?;
        let (mut reader, _) = listener.accept()?;
        reader.set_read_timeout(Some(Duration::from_secs(10)))?;
        let total = bytes * count;
        let reading = std::thread::spawn(move || {
            let start = thread_cpu_us();
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            while got < total {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            thread_cpu_us() - start
        });
        let message = vec![b'x'; bytes];
        let start = thread_cpu_us();
        for _ in 0..count {
            writer.write_all(&message)?;
        }
        let write_us = (thread_cpu_us() - start) / count as f64;
        let read_us = reading.join().unwrap_or(f64::NAN) / count as f64;
        if write_us < best.write_us {
            best = Floor {
                write_us,
                read_us,
                bytes,
            };
        }
    }
    Ok(best)
}
