//! Zero-copy forwarding: `splice(2)` moves the bytes from the source socket into a pipe and from
//! the pipe into the destination socket, so they never cross into user space.
//!
//! A pipe costs two file descriptors, so like the copy buffers it is held only while bytes flow:
//! taken from a small per-thread pool when the source turns readable and given back, empty, when
//! the source has nothing more for now. An idle connection holds no pipe.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use prometheus_client::metrics::counter::Counter;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// No pipe could be created (for instance the descriptor limit is reached); nothing was moved,
/// so the caller may copy through a buffer instead.
#[derive(Debug)]
pub struct NoPipe(pub io::Error);

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// Pipes kept per thread, at most.
const POOLED: usize = 64;

fn take_pipe(size: usize) -> io::Result<Pipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // The default is 64 KiB; a larger pipe moves more per call. Unprivileged processes are capped
    // by /proc/sys/fs/pipe-max-size, so a refusal keeps the default.
    let _ = rustix::pipe::fcntl_setpipe_size(&write, size);
    Ok(Pipe { read, write })
}

/// Returns an empty pipe to the pool (a pipe with bytes left in it is closed instead).
fn give_back(pipe: Pipe) {
    PIPES.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(pipe);
        }
    });
}

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Moves `src` to `dst` until end of stream. `Err(NoPipe)` only before the first byte.
pub async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    size: usize,
    bytes: &Counter,
) -> Result<io::Result<()>, NoPipe> {
    let mut pipe = Some(take_pipe(size).map_err(NoPipe)?);
    let result = async {
        loop {
            let p = match pipe.as_ref() {
                Some(p) => p,
                None => pipe.insert(take_pipe(size)?),
            };
            let n = match src.try_io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    src, None, &p.write, None, size, FLAGS,
                )?)
            }) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle: the pipe is empty here; hold none while waiting.
                    if let Some(p) = pipe.take() {
                        give_back(p);
                    }
                    src.readable().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut left = n;
            while left > 0 {
                match dst.try_io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(&p.read, None, dst, None, left, FLAGS)?)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                    Err(e) => return Err(e),
                }
            }
            bytes.inc_by(n as u64);
        }
    }
    .await;
    // After a clean end the pipe is empty and can serve another connection; after an error it
    // may still hold bytes, so it is closed.
    if let (Some(p), Ok(())) = (pipe.take(), &result) {
        give_back(p);
    }
    Ok(result)
}
