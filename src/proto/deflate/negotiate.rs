//! permessage-deflate negotiation (RFC 7692 §5, §7.1): the first acceptable offer of the
//! client's `Sec-WebSocket-Extensions` headers is answered with the parameters the server uses.
//!
//! The server always answers `server_no_context_takeover` (each outgoing message is compressed
//! on its own, so one compressed publication can be shared by every subscriber) and
//! `client_no_context_takeover` (RFC 7692 §7.1.1.2 lets a server ask it of any client), so a
//! connection never keeps an LZ77 window between messages in either direction: an idle
//! connection holds no compression state at all.
//!
//! Opt-in (`[compression] context_takeover`): a client whose offer leaves out
//! `server_no_context_takeover` is answered without it too, and the server keeps that
//! connection's window (see [`super::takeover`] for what it costs). The client is still asked
//! for `client_no_context_takeover`, so incoming messages keep sharing the shard's inflater.

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The LZ77 window the server compresses with (9..=15): the client's
    /// `server_max_window_bits`, or 15.
    pub window_bits: u8,
    /// Whether the client asked for a smaller window, which the response must repeat.
    window_asked: bool,
    /// The server keeps this connection's LZ77 window between messages.
    pub takeover: bool,
}

impl Agreed {
    /// The response header line, CRLF included.
    pub fn header(&self) -> String {
        let mut h = String::from(if self.takeover {
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover"
        } else {
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        });
        if self.window_asked {
            h.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        h.push_str("\r\n");
        h
    }

    /// Adds the header to a complete `101` response head.
    pub fn add_to(&self, response: &mut Vec<u8>) {
        if response.ends_with(b"\r\n\r\n") {
            response.truncate(response.len() - 2);
            response.extend_from_slice(self.header().as_bytes());
            response.extend_from_slice(b"\r\n");
        }
    }

    /// The window as stored in a connection's flags: bits less 8 (1..=7).
    pub fn code(&self) -> u16 {
        u16::from(self.window_bits - 8)
    }
}

/// Picks the first acceptable `permessage-deflate` offer among the values of every
/// `Sec-WebSocket-Extensions` header, in order. Malformed offers are skipped (RFC 7692 §5: the
/// server declines an offer it does not understand rather than failing the handshake).
/// `takeover`: keep the window of a client that allows it (see the module's doc); `max_window`
/// (9..=15): the largest window the server compresses with, announced as
/// `server_max_window_bits` when the client allowed more (RFC 7692 §7.1.2.1 lets the response
/// carry it even when the offer did not).
pub(crate) fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    takeover: bool,
    max_window: u8,
) -> Option<Agreed> {
    let mut agreed = values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .find_map(offer)?;
    agreed.takeover &= takeover;
    let max_window = max_window.clamp(9, 15);
    if agreed.window_bits > max_window {
        agreed.window_bits = max_window;
        agreed.window_asked = true;
    }
    Some(agreed)
}

/// One extension of the list: `Some` when it is an acceptable permessage-deflate offer
/// (`takeover` then says whether it allows server context takeover).
fn offer(ext: &str) -> Option<Agreed> {
    let mut parts = ext.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        window_bits: 15,
        window_asked: false,
        takeover: true,
    };
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (p, None),
        };
        let i = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ]
        .iter()
        .position(|k| k.eq_ignore_ascii_case(name))?;
        // A parameter given twice makes the offer invalid (§7.1).
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
        match (i, value) {
            (0, None) => agreed.takeover = false,
            (1, None) => {}
            (0 | 1, Some(_)) => return None,
            (2, Some(v)) => {
                // 8 is valid in an offer, but zlib cannot compress with a 256-byte window:
                // decline the offer (the client may have made another).
                let bits = window_bits(v)?;
                if bits < 9 {
                    return None;
                }
                agreed.window_bits = bits;
                agreed.window_asked = true;
            }
            (2, None) => return None,
            // The server always inflates with a 32 KB window, enough for any client window:
            // the hint needs no answer.
            (_, Some(v)) => {
                window_bits(v)?;
            }
            (_, None) => {}
        }
    }
    Some(agreed)
}

/// A quoted-string value loses its quotes (§7.1: a value may be a token or a quoted-string).
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// A window size: 1*DIGIT without leading zero, 8..=15.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(headers: &[&str]) -> Option<Agreed> {
        negotiate(headers.iter().map(|h| h.as_bytes()), false, 15)
    }

    fn bits(a: Option<Agreed>) -> Option<(u8, bool)> {
        a.map(|a| (a.window_bits, a.window_asked))
    }

    #[test]
    fn plain_and_browser_offers_are_accepted() {
        assert_eq!(bits(neg(&["permessage-deflate"])), Some((15, false)));
        // Chromium's offer.
        let chrome = neg(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(
            chrome.header(),
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        );
        assert!(neg(&["PerMessage-Deflate; Client_No_Context_Takeover"]).is_some());
        assert!(neg(&[
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
        ])
        .is_some());
    }

    #[test]
    fn no_offer_or_other_extensions_negotiate_nothing() {
        assert_eq!(neg(&[]), None);
        assert_eq!(neg(&["x-webkit-deflate-frame"]), None);
        assert_eq!(neg(&["permessage-deflatex"]), None);
        assert_eq!(neg(&[""]), None);
    }

    #[test]
    fn server_window_is_answered_and_used() {
        let a = neg(&["permessage-deflate; server_max_window_bits=10"]).unwrap();
        assert_eq!(a.window_bits, 10);
        assert!(a.header().ends_with("; server_max_window_bits=10\r\n"));
        let q = neg(&["permessage-deflate; server_max_window_bits=\"12\""]).unwrap();
        assert_eq!(q.window_bits, 12);
    }

    #[test]
    fn malformed_offers_are_skipped_for_the_next_acceptable_one() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1x",
            "permessage-deflate; server_max_window_bits=\"9",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=yes",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; unknown_param",
            // Valid but unusable: zlib has no 256-byte window.
            "permessage-deflate; server_max_window_bits=8",
        ] {
            assert_eq!(neg(&[bad]), None, "{bad}");
            let then = neg(&[&format!(
                "{bad}, permessage-deflate; server_max_window_bits=11"
            )]);
            assert_eq!(bits(then), Some((11, true)), "{bad}");
        }
        // Offers spread over several headers are taken in order.
        let two = neg(&[
            "permessage-deflate; foo",
            "x-other, permessage-deflate; server_max_window_bits=9, permessage-deflate",
        ]);
        assert_eq!(bits(two), Some((9, true)));
        assert_eq!(
            bits(neg(&[
                "permessage-deflate, permessage-deflate; server_max_window_bits=9"
            ])),
            Some((15, false)),
            "the first acceptable offer wins"
        );
    }

    /// `[compression] window`: the server's window is capped and the cap announced, whatever
    /// the offer; a client asking for less than the cap keeps its own.
    #[test]
    fn the_configured_window_caps_the_servers() {
        let at = |h: &str, max| negotiate([h.as_bytes()], true, max).unwrap();
        let capped = at("permessage-deflate", 10);
        assert_eq!((capped.window_bits, capped.code()), (10, 2));
        assert!(capped.header().ends_with("; server_max_window_bits=10\r\n"));
        assert_eq!(
            at("permessage-deflate; server_max_window_bits=12", 10).window_bits,
            10
        );
        let own = at("permessage-deflate; server_max_window_bits=9", 10);
        assert_eq!(own.window_bits, 9);
        assert!(own.header().ends_with("; server_max_window_bits=9\r\n"));
        let default = at("permessage-deflate", 15);
        assert!(!default.header().contains("server_max_window_bits"));
    }

    #[test]
    fn context_takeover_only_when_allowed_by_both() {
        let offer = |h: &str, allow| negotiate([h.as_bytes()], allow, 15).unwrap();
        let kept = offer("permessage-deflate; client_max_window_bits", true);
        assert!(kept.takeover);
        assert_eq!(
            kept.header(),
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
        );
        assert!(!offer("permessage-deflate", false).takeover, "config off");
        let refused = offer("permessage-deflate; server_no_context_takeover", true);
        assert!(!refused.takeover, "the client asked for none");
        assert!(refused.header().contains("server_no_context_takeover"));
        let small = offer("permessage-deflate; server_max_window_bits=10", true);
        assert!(small.takeover);
        assert_eq!(
            small.header(),
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_max_window_bits=10\r\n"
        );
    }
}
