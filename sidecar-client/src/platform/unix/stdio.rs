//! ssh's side of the tunnel: our stdin and stdout as non-blocking pipes.
//! ssh gives a ProxyCommand pipes, used directly. Anything else (a
//! terminal, a file, a socket) is bridged through a pipe by a thread doing
//! plain blocking copies, so the pump only ever sees pipes and never blocks.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::unix::pipe;

use super::{SshInput, SshOutput};

/// Our stdin and stdout, ready for readiness-based IO.
pub struct Stdio {
    /// What ssh sends.
    pub input: SshInput,
    /// What goes to ssh.
    pub output: SshOutput,
}

/// Opens stdin and stdout.
pub fn open() -> std::io::Result<Stdio> {
    let input = match dup(std::io::stdin().as_fd()).and_then(receiver) {
        Ok(r) => r,
        Err(_) => bridged_input()?,
    };
    let output = match dup(std::io::stdout().as_fd()).and_then(sender) {
        Ok(w) => w,
        Err(_) => bridged_output()?,
    };
    Ok(Stdio { input, output })
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

fn receiver(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_file(std::fs::File::from(fd))
}

fn sender(fd: OwnedFd) -> std::io::Result<pipe::Sender> {
    pipe::Sender::from_file(std::fs::File::from(fd))
}

/// stdin is not a pipe: a thread copies it into one.
fn bridged_input() -> std::io::Result<pipe::Receiver> {
    let (reader, mut writer) = std::io::pipe()?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        // Ends at end of input, or when the pump is gone.
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if writer.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    receiver(OwnedFd::from(reader))
}

/// stdout is not a pipe: a thread copies from one into it.
fn bridged_output() -> std::io::Result<pipe::Sender> {
    let (mut reader, writer) = std::io::pipe()?;
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if stdout
                .write_all(&buf[..n])
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return;
            }
        }
    });
    sender(OwnedFd::from(writer))
}
