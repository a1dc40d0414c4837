//! The incremental decoder: a byte scanner that cuts the stream into its
//! header, whole top-level elements and the close tag, and hands each cut
//! to [`super::parse`].

use memchr::{memchr, memchr3};

use super::error::{DecodeError, Restricted};
use super::parse::{self, StreamContext};
use super::{StreamEvent, StreamLimits};

/// Where the scanner is inside the markup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Between tags: character data (or whitespace outside stanzas).
    Content,
    /// Just after `<`.
    TagOpen,
    /// Inside a start tag; `quote` is the open quote of an attribute value.
    StartTag { quote: u8 },
    /// Inside `</...>`.
    EndTag,
    /// Inside `<?...?>` (only the XML declaration gets this far).
    Pi,
    /// After `<!`.
    Bang,
    /// Inside `<![CDATA[...]]>`.
    Cdata,
}

/// Where the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the header; the XML declaration is still allowed.
    Prolog { decl_allowed: bool },
    /// After the header.
    Open,
    /// After the close tag.
    Closed,
    /// After an error.
    Failed,
}

/// Decodes one XML stream, fed in chunks of any size; see the
/// [module documentation](super).
///
/// Memory: the unconsumed bytes (at most the stanza in flight plus the
/// last chunk fed) and, once a stanza is complete, its element tree, which
/// is handed to the caller. The buffer shrinks back to
/// [`StreamLimits::idle_buffer_capacity`] after a large stanza, and is
/// freed whenever everything fed has been consumed: an idle connection
/// holds no input buffer at all.
pub struct StreamDecoder {
    limits: StreamLimits,
    authenticated: bool,
    buf: Vec<u8>,
    /// Bytes before `start` are consumed; dropped on the next compaction.
    start: usize,
    /// The next byte to scan.
    pos: usize,
    lex: Lex,
    phase: Phase,
    /// Open elements: the stream element counts, so 1 is stream level.
    depth: usize,
    /// The `<` of the markup being scanned.
    tag_start: usize,
    /// Where the unit under a size limit began: the stream's first byte in
    /// the prolog, else the top-level element's `<`.
    unit_start: usize,
    /// First byte of CDATA content.
    cdata_start: usize,
    stream: Option<StreamContext>,
    /// Restarted by [`StreamDecoder::reset_keep_input`] and no header yet:
    /// whitespace may come before the XML declaration.
    restarted: bool,
    /// Qualified names of the elements open inside the current stanza,
    /// end to end, and their lengths: an end tag must match the last one
    /// (checked at once, so a mismatch below stanza level is an error now
    /// rather than a stanza that never completes).
    open_names: Vec<u8>,
    open_lens: Vec<usize>,
}

// By hand, so that buffered input (which may hold SASL payloads) never
// reaches a log through `{:?}`.
impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("phase", &self.phase)
            .field("depth", &self.depth)
            .field("authenticated", &self.authenticated)
            .field("buffered_len", &self.buffered_len())
            .field("buffer_capacity", &self.buffer_capacity())
            .finish_non_exhaustive()
    }
}

impl StreamDecoder {
    /// A decoder waiting for a stream header, with unauthenticated limits.
    pub fn new(limits: StreamLimits) -> Self {
        StreamDecoder {
            limits,
            authenticated: false,
            buf: Vec::new(),
            start: 0,
            pos: 0,
            lex: Lex::Content,
            phase: Phase::Prolog { decl_allowed: true },
            depth: 0,
            tag_start: 0,
            unit_start: 0,
            cdata_start: 0,
            stream: None,
            restarted: false,
            open_names: Vec::new(),
            open_lens: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// Switches between the stanza size limits before and after
    /// authentication. Survives [`reset`](Self::reset).
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// Whether the authenticated limit is in force.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Bytes fed and not yet consumed by an event.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The capacity of the input buffer, for memory accounting.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether the peer closed the stream.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Appends bytes read from the peer. Feed what one read returned, then
    /// drain [`next_event`](Self::next_event): input is only checked
    /// against the limits while it is scanned. Ignored once the stream is
    /// closed or failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Closed | Phase::Failed) {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, `Ok(None)` when more input is needed (or
    /// the stream is closed or failed). After an `Err`, send the peer
    /// [`DecodeError::stream_error`] and close; the decoder yields nothing
    /// more until reset.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, DecodeError> {
        if matches!(self.phase, Phase::Closed | Phase::Failed) {
            return Ok(None);
        }
        match self.scan() {
            Ok(Some(ev)) => Ok(Some(ev)),
            Ok(None) => {
                self.compact();
                // Waiting for input with nothing pending: most sessions
                // are idle most of the time, and a million of them should
                // not each keep a buffer for their next stanza.
                if self.buf.is_empty() {
                    self.buf = Vec::new();
                }
                Ok(None)
            }
            Err(e) => {
                self.phase = Phase::Failed;
                self.buf = Vec::new();
                self.start = 0;
                self.pos = 0;
                Err(e)
            }
        }
    }

    /// Starts over for a new stream, discarding every buffered byte: use
    /// after STARTTLS, where plaintext sent after `<starttls/>` must not be
    /// taken as part of the encrypted stream.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.restart_state();
        self.compact();
    }

    /// Starts over for a new stream, keeping the bytes not yet consumed:
    /// use after SASL success, where a pipelining client may already have
    /// sent the new header.
    pub fn reset_keep_input(&mut self) {
        self.compact();
        self.restart_state();
        self.restarted = true;
    }

    fn restart_state(&mut self) {
        self.pos = self.start;
        self.lex = Lex::Content;
        self.phase = Phase::Prolog { decl_allowed: true };
        self.depth = 0;
        self.tag_start = self.start;
        self.unit_start = self.start;
        self.cdata_start = self.start;
        self.stream = None;
        self.restarted = false;
        self.clear_open_names();
    }

    fn clear_open_names(&mut self) {
        self.open_names.clear();
        self.open_lens.clear();
        // A deep stanza may have grown them: an idle decoder keeps little.
        if self.open_names.capacity() > 256 {
            self.open_names = Vec::new();
            self.open_lens = Vec::new();
        }
    }

    /// Drops consumed bytes and shrinks an oversized buffer.
    fn compact(&mut self) {
        let n = self.start;
        if n > 0 {
            if n >= self.buf.len() {
                self.buf.clear();
            } else {
                self.buf.drain(..n);
            }
            self.start = 0;
            self.pos -= n;
            // Stale offsets (from a finished unit) may lie before `start`.
            self.tag_start = self.tag_start.saturating_sub(n);
            self.unit_start = self.unit_start.saturating_sub(n);
            self.cdata_start = self.cdata_start.saturating_sub(n);
        }
        // Twice the idle size as hysteresis: reads a little over it should
        // not cost a reallocation each.
        let idle = self.limits.idle_buffer_capacity;
        if self.buf.capacity() > 2 * idle && self.buf.len() <= idle {
            self.buf.shrink_to(idle);
        }
    }

    fn stanza_limit(&self) -> usize {
        if self.authenticated {
            self.limits.max_stanza_size
        } else {
            self.limits.max_stanza_size_unauthenticated
        }
    }

    /// Checks the unit in progress against its size limit.
    fn check_size(&self) -> Result<(), DecodeError> {
        let used = self.pos - self.unit_start;
        match self.phase {
            Phase::Prolog { .. } if used > self.limits.max_header_size => {
                Err(DecodeError::HeaderTooLarge {
                    limit: self.limits.max_header_size,
                })
            }
            Phase::Open if used > self.stanza_limit() => Err(DecodeError::StanzaTooLarge {
                limit: self.stanza_limit(),
            }),
            _ => Ok(()),
        }
    }

    /// Scans until an event is complete or the input runs out.
    fn scan(&mut self) -> Result<Option<StreamEvent>, DecodeError> {
        loop {
            let len = self.buf.len();
            match self.lex {
                Lex::Content => {
                    let found = memchr(b'<', &self.buf[self.pos..]);
                    let text_end = found.map_or(len, |i| self.pos + i);
                    if self.depth <= 1 {
                        let text = &self.buf[self.pos..text_end];
                        if !text
                            .iter()
                            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                        {
                            return Err(if self.depth == 0 {
                                DecodeError::Malformed("character data before the stream header")
                            } else {
                                DecodeError::BadFormat("character data at stream level")
                            });
                        }
                        // Whitespace between stanzas (keepalives) is dropped
                        // at once; in the prolog it counts towards the header.
                        if self.depth == 1 {
                            self.start = text_end;
                        }
                    }
                    self.pos = text_end;
                    if found.is_none() {
                        // Stream-level whitespace was dropped; anything else
                        // counts against the header or the stanza.
                        if self.depth != 1 {
                            self.check_size()?;
                        }
                        return Ok(None);
                    }
                    self.tag_start = self.pos;
                    if self.depth == 1 {
                        self.unit_start = self.pos;
                    }
                    self.pos += 1;
                    self.lex = Lex::TagOpen;
                }
                Lex::TagOpen => {
                    let Some(&b) = self.buf.get(self.pos) else {
                        return Ok(None);
                    };
                    match b {
                        b'/' => {
                            self.pos += 1;
                            self.lex = Lex::EndTag;
                        }
                        b'?' => {
                            // Only the XML declaration, and only as the very
                            // first bytes of the stream; after a restart that
                            // kept the input, whitespace before it is the old
                            // stream's (a client's `</auth>\n`).
                            let first = self.tag_start == self.unit_start
                                || (self.restarted
                                    && self.buf[self.unit_start..self.tag_start]
                                        .iter()
                                        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')));
                            if !(self.phase == (Phase::Prolog { decl_allowed: true }) && first) {
                                return Err(DecodeError::Restricted(
                                    Restricted::ProcessingInstruction,
                                ));
                            }
                            self.pos += 1;
                            self.lex = Lex::Pi;
                        }
                        b'!' => {
                            self.pos += 1;
                            self.lex = Lex::Bang;
                        }
                        _ => self.lex = Lex::StartTag { quote: 0 },
                    }
                }
                Lex::StartTag { quote } => {
                    let rest = &self.buf[self.pos..];
                    if quote != 0 {
                        match memchr(quote, rest) {
                            Some(i) => {
                                self.pos += i + 1;
                                self.lex = Lex::StartTag { quote: 0 };
                            }
                            None => {
                                self.pos = len;
                                self.check_size()?;
                                return Ok(None);
                            }
                        }
                        continue;
                    }
                    match memchr3(b'>', b'"', b'\'', rest) {
                        Some(i) => {
                            let b = rest[i];
                            self.pos += i + 1;
                            if b == b'>' {
                                self.check_size()?;
                                self.lex = Lex::Content;
                                if let Some(ev) = self.start_tag_done()? {
                                    return Ok(Some(ev));
                                }
                            } else {
                                self.lex = Lex::StartTag { quote: b };
                            }
                        }
                        None => {
                            self.pos = len;
                            self.check_size()?;
                            return Ok(None);
                        }
                    }
                }
                Lex::EndTag => match memchr(b'>', &self.buf[self.pos..]) {
                    Some(i) => {
                        self.pos += i + 1;
                        self.check_size()?;
                        self.lex = Lex::Content;
                        if let Some(ev) = self.end_tag_done()? {
                            return Ok(Some(ev));
                        }
                    }
                    None => {
                        self.pos = len;
                        self.check_size()?;
                        return Ok(None);
                    }
                },
                Lex::Pi => match memchr(b'>', &self.buf[self.pos..]) {
                    Some(i) => {
                        let gt = self.pos + i;
                        self.pos = gt + 1;
                        self.check_size()?;
                        if gt >= self.tag_start + 3 && self.buf[gt - 1] == b'?' {
                            parse::xml_declaration(&self.buf[self.tag_start..self.pos])?;
                            self.phase = Phase::Prolog {
                                decl_allowed: false,
                            };
                            self.lex = Lex::Content;
                        }
                    }
                    None => {
                        self.pos = len;
                        self.check_size()?;
                        return Ok(None);
                    }
                },
                Lex::Bang => {
                    let Some(&b) = self.buf.get(self.pos) else {
                        return Ok(None);
                    };
                    match b {
                        b'-' => return Err(DecodeError::Restricted(Restricted::Comment)),
                        b'D' => return Err(DecodeError::Restricted(Restricted::Doctype)),
                        b'[' => {
                            const OPEN: &[u8] = b"<![CDATA[";
                            let have = &self.buf[self.tag_start..];
                            let n = have.len().min(OPEN.len());
                            if have[..n] != OPEN[..n] {
                                return Err(DecodeError::Malformed("invalid markup after <!["));
                            }
                            if n < OPEN.len() {
                                // Look again from `[` once more bytes come.
                                return Ok(None);
                            }
                            if self.depth < 2 {
                                return Err(if self.depth == 0 {
                                    DecodeError::Malformed("CDATA before the stream header")
                                } else {
                                    DecodeError::BadFormat("character data at stream level")
                                });
                            }
                            self.pos = self.tag_start + OPEN.len();
                            self.cdata_start = self.pos;
                            self.lex = Lex::Cdata;
                        }
                        _ => return Err(DecodeError::Malformed("invalid markup after <!")),
                    }
                }
                Lex::Cdata => match memchr(b'>', &self.buf[self.pos..]) {
                    Some(i) => {
                        let gt = self.pos + i;
                        self.pos = gt + 1;
                        if gt >= self.cdata_start + 2 && &self.buf[gt - 2..gt] == b"]]" {
                            self.lex = Lex::Content;
                        }
                        self.check_size()?;
                    }
                    None => {
                        self.pos = len;
                        self.check_size()?;
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// A start tag ended at `self.pos`.
    fn start_tag_done(&mut self) -> Result<Option<StreamEvent>, DecodeError> {
        let end = self.pos;
        let empty = end - self.tag_start >= 3 && self.buf[end - 2] == b'/';
        if self.depth == 0 {
            if empty {
                return Err(DecodeError::BadFormat("empty stream element"));
            }
            let (header, ctx) = parse::stream_header(&self.buf[self.tag_start..end], &self.limits)?;
            self.stream = Some(ctx);
            self.depth = 1;
            self.phase = Phase::Open;
            self.start = end;
            return Ok(Some(StreamEvent::StreamOpen(header)));
        }
        // `depth` counts the stream element, so it is the stanza level of
        // the element that just started.
        if self.depth > self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        if !empty {
            let name_end = self.buf[self.tag_start + 1..end]
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
                .map_or(end, |i| self.tag_start + 1 + i);
            self.open_names
                .extend_from_slice(&self.buf[self.tag_start + 1..name_end]);
            self.open_lens.push(name_end - self.tag_start - 1);
            self.depth += 1;
            return Ok(None);
        }
        if self.depth == 1 {
            return self.stanza_done().map(Some);
        }
        Ok(None)
    }

    /// An end tag ended at `self.pos`.
    fn end_tag_done(&mut self) -> Result<Option<StreamEvent>, DecodeError> {
        match self.depth {
            0 => Err(DecodeError::Malformed("end tag before the stream header")),
            1 => {
                let name = self.buf[self.tag_start + 2..self.pos - 1].trim_ascii_end();
                let expected = self.stream.as_ref().map(StreamContext::qname);
                if expected.map(str::as_bytes) != Some(name) {
                    return Err(DecodeError::Malformed(
                        "end tag does not match the stream header",
                    ));
                }
                self.phase = Phase::Closed;
                self.buf = Vec::new();
                self.start = 0;
                self.pos = 0;
                Ok(Some(StreamEvent::StreamClose))
            }
            _ => {
                let name = self.buf[self.tag_start + 2..self.pos - 1].trim_ascii_end();
                let open_len = self.open_lens.pop().unwrap_or(0);
                let open_start = self.open_names.len().saturating_sub(open_len);
                if self.open_names[open_start..] != *name {
                    return Err(DecodeError::Malformed(
                        "end tag does not match its start tag",
                    ));
                }
                self.open_names.truncate(open_start);
                self.depth -= 1;
                if self.depth == 1 {
                    self.clear_open_names();
                    self.stanza_done().map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The top-level element spans `unit_start..pos`: parse it.
    fn stanza_done(&mut self) -> Result<StreamEvent, DecodeError> {
        let end = self.pos;
        let ctx = self
            .stream
            .as_ref()
            .ok_or(DecodeError::Malformed("element before the stream header"))?;
        let el = parse::element(&self.buf[self.unit_start..end], ctx, &self.limits)?;
        self.start = end;
        Ok(StreamEvent::Stanza(el))
    }
}
