//! A TLS connection on rustls' unbuffered API, either side: the listener's (a client's
//! connection, [`ServerStream`]) and a node connection's ([`ClientStream`]).
//!
//! tokio-rustls drives rustls' buffered connection: each write copies the plaintext into rustls,
//! which encrypts it into a fresh `Vec` per record, queues it and writes it out through a 64-entry
//! `IoSlice` array; each read goes through rustls' own deframing buffer. Here the stream keeps its
//! own two buffers, reused for the connection's life: replies are encrypted straight from the
//! session's write buffer (or a node connection's) into `outgoing` and written from it, and what
//! the socket delivers lands in `incoming`, where rustls deframes and decrypts it. Measured
//! (`TLS=1 bench/callgrind.sh --no-predixy`, bench/RESULTS.md): 10,349 → 10,130 instructions per
//! unpipelined request on the listener's side.
//!
//! Nothing is held back: a write encrypts and sends at once (what the socket does not take is sent
//! before anything written later, and by `poll_flush`); a read goes to the socket only when no
//! decrypted byte is waiting, and takes every record that one socket read brought.

use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedConnectionCommon, UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::socket::Socket;

/// Most plaintext one write encrypts: four full records. A larger write is taken in pieces, so
/// the buffer of encrypted bytes stays this size however large a reply is.
const MAX_WRITE: usize = 4 * 16 * 1024;

/// Room kept for the socket's next read: a request or a reply of a few hundred bytes, or a
/// ClientHello, in one read; an idle connection holds no more (a read that fills it grows the room
/// to a whole record).
const READ_ROOM: usize = 1024;

/// A read that filled this room asks for one largest record's worth next time.
const LARGE_READ: usize = 16 * 1024 + 256;

/// Largest buffer of encrypted bytes kept once sent (replies up to a few KiB need no allocation
/// each); a bigger one, grown for a burst of large replies, is given back.
const KEEP_OUTGOING: usize = 8 * 1024;

/// Upper bound of what rustls adds to each record it encrypts (header, content type, explicit
/// nonce under TLS 1.2, tag).
const RECORD_OVERHEAD: usize = 64;

/// rustls' unbuffered connection of one side: what [`TlsStream`] drives.
pub trait Side: Deref<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;

    /// rustls' `process_tls_records` of this side (an inherent method of each side's connection).
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        UnbufferedConnectionCommon::<ServerConnectionData>::process_tls_records(self, incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        UnbufferedConnectionCommon::<ClientConnectionData>::process_tls_records(self, incoming)
    }
}

/// The listener's side of a client's TLS connection, as [`accept`] returns it.
pub type ServerStream<IO> = TlsStream<UnbufferedServerConnection, IO>;

/// A node connection's TLS, as [`connect`] returns it.
pub type ClientStream<IO> = TlsStream<UnbufferedClientConnection, IO>;

/// A TLS stream over `io`: the handshake is over once [`accept`] or [`connect`] returns it.
pub struct TlsStream<C, IO> {
    io: IO,
    conn: C,
    /// TLS bytes read and not processed yet: after processing, part of a record at most.
    incoming: Incoming,
    /// Decrypted bytes a read had no room for.
    plaintext: BytesMut,
    /// TLS bytes to send, `outgoing[sent..filled]` (handshake messages, alerts, records).
    outgoing: Vec<u8>,
    sent: usize,
    filled: usize,
    /// Bytes came into `incoming` since it last held no complete record.
    fresh: bool,
    /// The peer's close_notify came: reads return the end of the stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls refused what came (its alert is queued): the connection is over, and rustls is not
    /// asked again (it would process the failed record a second time).
    failed: Option<io::ErrorKind>,
}

impl<C, IO: std::fmt::Debug> std::fmt::Debug for TlsStream<C, IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("io", &self.io)
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Where processing the records received so far stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The handshake needs more bytes from the peer.
    NeedsInput,
    /// Records were decrypted (more may be complete in `incoming`).
    Decrypted,
    /// The handshake is over: what was given to write is encrypted, all of it; application data
    /// may come.
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

/// What to encrypt once the handshake is over.
#[derive(Clone, Copy)]
enum ToSend<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// Runs the server side of a handshake on `io` with `config`, and returns the stream ready for
/// application data (some may have come with the handshake's last flight and wait decrypted).
///
/// # Errors
/// The handshake failed (after the alert that says why is sent, best effort), or the peer left.
pub async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<ServerStream<IO>>
where
    IO: Socket,
{
    handshake(io, UnbufferedServerConnection::new(config).map_err(tls_error)?).await
}

/// Runs the client side of a handshake with the server `name` on `io` with `config`, and returns
/// the stream ready for application data.
///
/// # Errors
/// The handshake failed (the server's certificate was refused, say: after the alert that says
/// why is sent, best effort), or the peer left.
pub async fn connect<IO>(io: IO, config: Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<ClientStream<IO>>
where
    IO: Socket,
{
    handshake(io, UnbufferedClientConnection::new(config, name).map_err(tls_error)?).await
}

/// Exchanges the handshake's flights over `io` until `conn` is done with them: a client's
/// connection starts with its hello, a server's waits for one.
async fn handshake<C: Side, IO>(io: IO, conn: C) -> io::Result<TlsStream<C, IO>>
where
    IO: Socket,
{
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Incoming::default(),
        plaintext: BytesMut::new(),
        outgoing: Vec::new(),
        sent: 0,
        filled: 0,
        fresh: false,
        peer_closed: false,
        close_queued: false,
        failed: None,
    };
    loop {
        let processed = stream.process(None, ToSend::Nothing);
        // Each of the handshake's flights (and the session tickets after it, or the alert that
        // says why it failed) goes out at once.
        let sent = std::future::poll_fn(|cx| stream.poll_send(cx)).await;
        let stop = processed?;
        sent?;
        match stop {
            // rustls may allow data before the peer's Finished (a server's half-RTT data): the
            // handshake is over only once that is in too.
            Stop::Traffic if !stream.conn.is_handshaking() => {
                // The handshake's flights (a certificate chain: a few KiB) are sent: their room
                // is given back, and later records start from a buffer their own size.
                stream.outgoing = Vec::new();
                return Ok(stream);
            }
            Stop::Decrypted => {}
            Stop::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            Stop::Traffic | Stop::NeedsInput => {
                if std::future::poll_fn(|cx| stream.poll_fill(cx)).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

impl<C: Side, IO> TlsStream<C, IO> {
    /// The connection's TLS state: protocol version, the peer's certificates.
    pub fn connection(&self) -> &C {
        &self.conn
    }

    /// Bytes the stream's own buffers hold (what an idle client costs beyond rustls' state).
    #[cfg(test)]
    pub(super) fn buffer_bytes(&self) -> usize {
        self.incoming.buf.capacity() + self.outgoing.capacity() + self.plaintext.capacity()
    }

    /// Processes the records received until rustls has something for the caller: decrypted
    /// records (they go to `read` as far as it has room and nothing waits from before, the rest
    /// to `plaintext`), or, with no complete record left, the end of the handshake (`send` is then
    /// encrypted into `outgoing`). Handshake messages and alerts rustls answers with are encoded
    /// into `outgoing` on the way. Each call of rustls' costs a pass over its state (~200
    /// instructions), so a request's read and its reply's write take one each.
    fn process(&mut self, read: Option<&mut ReadBuf<'_>>, send: ToSend<'_>) -> io::Result<Stop> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        let processed = self.process_records(read, send);
        if let Err(error) = &processed {
            // The alert rustls queued for the failure goes out with the next send.
            self.failed = Some(error.kind());
            self.queue_alerts();
        }
        processed
    }

    /// [`TlsStream::process`] while rustls has not failed.
    fn process_records(&mut self, mut read: Option<&mut ReadBuf<'_>>, send: ToSend<'_>) -> io::Result<Stop> {
        let Self { conn, incoming, plaintext, outgoing, filled, fresh, peer_closed, close_queued, .. } = self;
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process(incoming.unread());
            let stop = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        deliver(record.payload, read.as_deref_mut(), plaintext);
                    }
                    Some(Stop::Decrypted)
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(outgoing, filled, 0, |buf| encode.encode(buf).map_err(encode_room))?;
                    None
                }
                // What is encoded waits in `outgoing`, which goes out before anything later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Stop::NeedsInput),
                ConnectionState::WriteTraffic(mut traffic) => {
                    match send {
                        ToSend::Nothing => {}
                        ToSend::Data(data) => {
                            let records = data.len().div_ceil(16 * 1024);
                            let room = data.len() + records * RECORD_OVERHEAD;
                            encode_into(outgoing, filled, room, |buf| {
                                traffic.encrypt(data, buf).map_err(encrypt_room)
                            })?;
                        }
                        ToSend::CloseNotify if *close_queued => {}
                        ToSend::CloseNotify => {
                            encode_into(outgoing, filled, RECORD_OVERHEAD, |buf| {
                                traffic.queue_close_notify(buf).map_err(encrypt_room)
                            })?;
                            *close_queued = true;
                        }
                    }
                    Some(Stop::Traffic)
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Stop::Closed),
                // Early data is off (the config's `max_early_data_size` is 0); later states are
                // not ours to guess.
                other => return Err(io::Error::other(format!("unexpected TLS state {other:?}"))),
            };
            incoming.discard(discard);
            if let Some(stop) = stop {
                // Another call finds something only if a whole record is left (`Decrypted` stops
                // after one): asking rustls again otherwise would cost a call per read for nothing.
                *fresh = stop == Stop::Decrypted && holds_record(incoming.unread());
                return Ok(stop);
            }
        }
    }

    /// After rustls failed (in the handshake or after it): encodes the alerts it queued for the
    /// failure into `outgoing`. Only while some are queued: rustls hands them out before it looks at the records received,
    /// which failed already and must not be processed again.
    fn queue_alerts(&mut self) {
        let Self { conn, incoming, outgoing, filled, .. } = self;
        while conn.wants_write() {
            let UnbufferedStatus { state, .. } = conn.process(incoming.unread());
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else {
                return;
            };
            if encode_into(outgoing, filled, 0, |buf| encode.encode(buf).map_err(encode_room)).is_err() {
                return;
            }
        }
    }

    /// Moves decrypted bytes that waited into `buf`; false when none waited.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plaintext.is_empty() {
            return false;
        }
        let taken = self.plaintext.len().min(buf.remaining());
        buf.put_slice(&self.plaintext[..taken]);
        self.plaintext.advance(taken);
        true
    }

    fn unsent(&self) -> bool {
        self.sent < self.filled
    }
}

impl<C: Side, IO: Socket> TlsStream<C, IO> {
    /// Reads the socket once into `incoming`; how many bytes (0 at its end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut room = self.incoming.room(READ_ROOM);
        let size = room.len();
        let read = ready!(self.io.poll_read_into(cx, &mut room))?;
        let full = read == size;
        self.incoming.end += read;
        if full {
            // The peer sends more than a few KiB at a time: take a whole record per read.
            self.incoming.room(LARGE_READ);
        }
        self.fresh = true;
        Poll::Ready(Ok(read))
    }

    /// Writes `outgoing` to the socket until all of it is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unsent() {
            let written = ready!(self.io.poll_write_from(cx, &self.outgoing[self.sent..self.filled]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.sent = 0;
        self.filled = 0;
        if self.outgoing.len() > KEEP_OUTGOING {
            self.outgoing = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<C: Side + Unpin, IO: Socket> Socket for TlsStream<C, IO> {
    /// Ready while the stream holds what a read returns without the socket (decrypted bytes, a
    /// whole record, the peer's end, a failure); otherwise as its socket says.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.plaintext.is_empty() || self.fresh || self.peer_closed || self.failed.is_some() {
            return Poll::Ready(());
        }
        self.io.poll_read_ready(cx)
    }
}

impl<C: Side + Unpin, IO: Socket> AsyncRead for TlsStream<C, IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let room = buf.remaining();
        loop {
            if this.take_plaintext(buf) || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.fresh {
                let stop = this.process(Some(buf), ToSend::Nothing);
                // What rustls answered with (a key update, an alert) goes out now if the socket
                // takes it; otherwise before the next write.
                if this.unsent() {
                    let _ = this.poll_send(cx);
                }
                let stop = stop?;
                // Every record the socket brought, while the caller has room.
                if stop == Stop::Decrypted && this.fresh && buf.remaining() > 0 {
                    continue;
                }
                if stop == Stop::Closed || this.peer_closed {
                    return Poll::Ready(Ok(()));
                }
            }
            // Records decrypted on an earlier pass are returned before the socket is tried (a
            // Pending read would drop them): a record with nothing for the reader (a key update,
            // an empty record) may follow one with data.
            if buf.remaining() < room {
                return Poll::Ready(Ok(()));
            }
            // Nothing decrypted yet: read the socket (Pending registers the caller's waker). Its
            // end without a close_notify ends the stream too, as a plain connection's would.
            if ready!(this.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<C: Side + Unpin, IO: Socket> AsyncWrite for TlsStream<C, IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Bytes an earlier write encrypted go first; until they are sent, nothing new is taken.
        if this.unsent() {
            ready!(this.poll_send(cx))?;
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        loop {
            // Records complete in `incoming` come first (decrypted into `plaintext`).
            match this.process(None, ToSend::Data(data)) {
                Ok(Stop::Traffic) => break,
                Ok(Stop::Decrypted) => {}
                Ok(Stop::NeedsInput | Stop::Closed) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Err(error) => {
                    // The alert first, best effort.
                    let _ = this.poll_send(cx);
                    return Poll::Ready(Err(error));
                }
            }
        }
        // Encrypted: the bytes are taken, whatever the socket does with them now. Sent at once;
        // what the socket does not take goes before the next write, or at the flush, and a
        // failure shows there. Reported here, it would count as unwritten bytes of which some
        // records may have reached the peer (a node connection puts requests of which nothing
        // was written back in its queue for the next connection).
        let _ = this.poll_send(cx);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if !this.close_queued {
            // After a failure there is nothing to close cleanly: the socket is shut down as it is.
            while let Ok(Stop::Decrypted) = this.process(None, ToSend::CloseNotify) {}
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// TLS bytes read from the socket: `buf[start..end]` wait to be processed. The buffer is
/// initialized once (reads fill it through a plain slice) and reused: taking records moves
/// `start`, and an empty buffer starts over at 0.
#[derive(Default)]
struct Incoming {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Incoming {
    fn unread(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    fn discard(&mut self, taken: usize) {
        self.start += taken;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Room for a read of at least `at_least` bytes after what waits, moved to the front first
    /// when that makes the room.
    fn room(&mut self, at_least: usize) -> &mut [u8] {
        if self.buf.len() - self.end < at_least {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.buf.len() - self.end < at_least {
                self.buf.resize(self.end + at_least, 0);
            }
        }
        &mut self.buf[self.end..]
    }
}

/// Whether `incoming` starts with a whole TLS record (a 5-byte header whose last two bytes give
/// the length of what follows).
fn holds_record(incoming: &[u8]) -> bool {
    match incoming {
        [_, _, _, high, low, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*high, *low])),
        _ => false,
    }
}

/// Puts `payload` into the reader's buffer as far as it has room, unless decrypted bytes wait
/// already (which come first); the rest waits in `plaintext`.
fn deliver(payload: &[u8], read: Option<&mut ReadBuf<'_>>, plaintext: &mut BytesMut) {
    let direct = match read {
        Some(buf) if plaintext.is_empty() => {
            let taken = payload.len().min(buf.remaining());
            buf.put_slice(&payload[..taken]);
            taken
        }
        _ => 0,
    };
    plaintext.extend_from_slice(&payload[direct..]);
}

/// Runs `encode` on the free part of `outgoing` (after `filled`), first making `room` bytes free
/// and, when rustls says it needs more, that much; advances `filled` by what it wrote.
fn encode_into(
    outgoing: &mut Vec<u8>,
    filled: &mut usize,
    room: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, io::Result<InsufficientSizeError>>,
) -> io::Result<()> {
    if outgoing.len() < *filled + room {
        outgoing.resize(*filled + room, 0);
    }
    let written = match encode(&mut outgoing[*filled..]) {
        Ok(written) => written,
        Err(short) => {
            let InsufficientSizeError { required_size } = short?;
            outgoing.resize(*filled + required_size, 0);
            encode(&mut outgoing[*filled..]).map_err(|e| e.map_or_else(|e| e, |_| io::Error::other("TLS buffer")))?
        }
    };
    *filled += written;
    Ok(())
}

fn encode_room(error: EncodeError) -> io::Result<InsufficientSizeError> {
    match error {
        EncodeError::InsufficientSize(short) => Ok(short),
        other => Err(io::Error::other(other.to_string())),
    }
}

fn encrypt_room(error: EncryptError) -> io::Result<InsufficientSizeError> {
    match error {
        EncryptError::InsufficientSize(short) => Ok(short),
        other => Err(io::Error::other(other.to_string())),
    }
}

/// A rustls error as the I/O error the session reports (`InvalidData`, as tokio-rustls gives).
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
