//! Socket.IO recovery sessions (see
//! [`Store::sio_session_put`](crate::store::Store::sio_session_put)): `P:sio:<pid>` on the pid's
//! instance, the session's bytes with a `PEXPIREAT` at its expiry, so Redis forgets it by
//! itself. Taking it is one `GETDEL`: of several nodes asking at once, one gets it.

use bytes::Bytes;

use super::{RedisStore, StoreError};

impl RedisStore {
    fn sio_key(&self, pid: &str) -> (usize, String) {
        let k = crate::proto::wire::instance_for(pid, self.inst.len());
        (k, format!("{}:sio:{pid}", self.prefix))
    }

    pub(super) fn sio_put_inner(
        &mut self,
        pid: &str,
        session: &[u8],
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let (k, key) = self.sio_key(pid);
        let _: () = self.inst[k].query(
            ::redis::cmd("SET")
                .arg(key)
                .arg(session)
                .arg("PXAT")
                .arg(expires_ms.max(1)),
        )?;
        Ok(())
    }

    pub(super) fn sio_take_inner(&mut self, pid: &str) -> Result<Option<Bytes>, StoreError> {
        let (k, key) = self.sio_key(pid);
        let v: Option<Vec<u8>> = self.inst[k].query(::redis::cmd("GETDEL").arg(key))?;
        Ok(v.map(Bytes::from))
    }
}
