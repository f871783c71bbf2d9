//! The handshake of one connection: three messages, each read whole and
//! handed to the core, which alone decides.

use getrandom::SysRng;
use rand_core::UnwrapErr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ztssh_proto::ProtoError;
use ztssh_proto::handshake::{self, ClientAuth, HELLO_LEN};

use crate::config::Config;

/// Why a handshake did not finish.
pub(super) enum HandshakeFail {
    /// The client closed the connection (or a write to it failed).
    Closed,
    /// The core refused a message.
    Proto(ProtoError),
}

impl From<ProtoError> for HandshakeFail {
    fn from(e: ProtoError) -> Self {
        Self::Proto(e)
    }
}

async fn read_msg(sock: &mut TcpStream, len: usize) -> Result<Vec<u8>, HandshakeFail> {
    let mut buf = vec![0u8; len];
    sock.read_exact(&mut buf)
        .await
        .map_err(|_| HandshakeFail::Closed)?;
    Ok(buf)
}

/// The server side of the three-message handshake over `sock` (the
/// caller bounds it in time).
pub(super) async fn run_handshake(
    cfg: &Config,
    licence: &ztssh_proto::cert::LicenceVerified,
    sock: &mut TcpStream,
) -> Result<ClientAuth, HandshakeFail> {
    let state =
        handshake::server_start(&cfg.noise, licence, cfg.frame_size, &mut UnwrapErr(SysRng))?;
    let msg1 = read_msg(sock, HELLO_LEN).await?;
    let (state, msg2) = state.handle_client_hello(&msg1, &mut UnwrapErr(SysRng))?;
    sock.write_all(&msg2)
        .await
        .map_err(|_| HandshakeFail::Closed)?;
    let msg3 = read_msg(sock, state.message3_len()).await?;
    Ok(state.handle_client_auth(&msg3)?)
}
