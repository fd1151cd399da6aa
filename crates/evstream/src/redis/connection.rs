//! What is done on an open connection: naming it, and calls with a deadline.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Cmd;

use crate::error::OpsError;

/// Names a connection (`CLIENT SETNAME`) so that `CLIENT LIST` tells operators which evstream
/// process and role holds it: `evstream-ship:<producer_id>`,
/// `evstream-consume:<group>:<consumer>`. Characters Redis refuses in a name (spaces,
/// controls, non-ASCII) become `_`. Optional: a user without `client|setname` only loses the
/// names.
pub(crate) async fn name_connection(connection: &mut MultiplexedConnection, name: &str) {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    let named = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&name)
        .query_async::<()>(connection)
        .await;
    if let Err(error) = named {
        tracing::debug!(%error, "CLIENT SETNAME refused; the connection stays unnamed");
    }
}

/// One call with a deadline, its errors naming `what`.
///
/// The errors are [`OpsError`]'s `Redis` and `Timeout`: the ops loop and `status` are its
/// callers (the shipper and the consumer keep their own deadlines, whose errors drive their
/// retries).
pub(crate) async fn call<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    what: &str,
    cmd: &Cmd,
    timeout: Duration,
) -> Result<T, OpsError> {
    match tokio::time::timeout(timeout, cmd.query_async::<T>(connection)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(OpsError::Redis {
            what: what.to_owned(),
            source,
        }),
        Err(_) => Err(OpsError::Timeout {
            what: what.to_owned(),
            timeout,
        }),
    }
}
