//! TLS (rustls) over either shell: the handshake runs on the connection's own task, then a read
//! half decrypting into tokio's `AsyncRead` and a write half encrypting owned buffers, sharing one
//! `rustls::ServerConnection` (single-threaded, never borrowed across an `.await`).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::Writer;

/// Loads a PEM certificate chain and private key into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

type Shared = Rc<RefCell<ServerConnection>>;

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the server handshake over a split stream.
pub(crate) async fn accept<R, W>(
    cfg: Arc<rustls::ServerConfig>,
    mut r: R,
    mut w: W,
) -> io::Result<(TlsRead<R>, TlsWrite<W>)>
where
    R: AsyncRead + Unpin,
    W: Writer,
{
    let mut conn = ServerConnection::new(cfg).map_err(tls_err)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            let (res, b) = w.write_all(std::mem::take(&mut out)).await;
            out = b;
            res?;
        }
        if !conn.is_handshaking() {
            break;
        }
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            conn.read_tls(&mut input)?;
            if let Err(e) = conn.process_new_packets() {
                // Send the alert that explains the failure before giving up.
                out.clear();
                let _ = conn.write_tls(&mut out);
                let _ = w.write_all(out).await;
                return Err(tls_err(e));
            }
        }
    }
    let shared = Rc::new(RefCell::new(conn));
    Ok((
        TlsRead {
            inner: r,
            tls: shared.clone(),
            pending: Vec::new(),
        },
        TlsWrite {
            inner: w,
            tls: shared,
            scratch: Vec::new(),
        },
    ))
}

/// Decrypting read half.
pub(crate) struct TlsRead<R> {
    inner: R,
    tls: Shared,
    /// Ciphertext read but not yet accepted by rustls.
    pending: Vec<u8>,
}

impl<R: AsyncRead + Unpin> AsyncRead for TlsRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            {
                let mut tls = this.tls.borrow_mut();
                match tls.reader().read(out.initialize_unfilled()) {
                    Ok(n) => {
                        out.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                if !this.pending.is_empty() {
                    let mut input = &this.pending[..];
                    let used = tls.read_tls(&mut input)?;
                    this.pending.drain(..used);
                    tls.process_new_packets().map_err(tls_err)?;
                    continue;
                }
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.pending.extend_from_slice(rb.filled());
        }
    }
}

/// Encrypting write half.
pub(crate) struct TlsWrite<W> {
    inner: W,
    tls: Shared,
    scratch: Vec<u8>,
}

impl<W: Writer> Writer for TlsWrite<W> {
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut cipher = std::mem::take(&mut self.scratch);
        cipher.clear();
        let encrypted = (|| {
            let mut tls = self.tls.borrow_mut();
            tls.writer().write_all(&buf)?;
            while tls.wants_write() {
                tls.write_tls(&mut cipher)?;
            }
            io::Result::Ok(())
        })();
        if let Err(e) = encrypted {
            self.scratch = cipher;
            return (Err(e), buf);
        }
        let (res, c) = self.inner.write_all(cipher).await;
        self.scratch = c;
        (res, buf)
    }
}
