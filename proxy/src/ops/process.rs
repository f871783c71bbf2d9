//! Process integration: systemd readiness (sd_notify) and dropping
//! privileges after the ports are bound.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::{info, warn};

/// Sends `state` (e.g. `READY=1`) to systemd when it started us with
/// `Type=notify`; does nothing otherwise.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr
        .and_then(|a| UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), &a)));
    if let Err(e) = sent {
        warn!(event = "sd_notify_failed", state, error = %e, "cannot notify systemd ({state})");
    }
}

/// Looks up the account to switch to; called while validating the config.
pub fn lookup_user(name: &str) -> Result<nix::unistd::User, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!("user = {name:?}: no such user")),
        Err(e) => Err(format!("user = {name:?}: cannot look it up: {e}")),
    }
}

/// Switches to `user` (its primary group only) for good.
pub fn drop_privileges(user: &nix::unistd::User) -> Result<(), String> {
    use nix::unistd::{Uid, setgid, setgroups, setuid};
    let fail = |what: &str, e: nix::Error| {
        format!("cannot drop privileges to {} ({what}): {e}", user.name)
    };
    setgroups(&[user.gid]).map_err(|e| fail("setgroups", e))?;
    setgid(user.gid).map_err(|e| fail("setgid", e))?;
    setuid(user.uid).map_err(|e| fail("setuid", e))?;
    if setuid(Uid::from_raw(0)).is_ok() && !user.uid.is_root() {
        return Err(format!(
            "privileges could be regained after switching to {}; refusing to run",
            user.name
        ));
    }
    info!(event = "privileges_dropped", user = %user.name, uid = user.uid.as_raw(), "running as {}", user.name);
    Ok(())
}
