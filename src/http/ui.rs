//! The built-in web pages (`[ui] enabled`, on by default): the chat demo at `/`, the admin
//! dashboard at `/admin`, and their assets under `/assets/`. Everything is embedded in the binary
//! (`include_str!` / `include_bytes!`): no files to deploy, no build step. Served by the API
//! thread like the other HTTP paths, with a Content-Security-Policy that allows only this origin.

use super::response::Response;
use crate::proto::handshake::RequestHead;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../../ui/index.html"),
    },
    Asset {
        path: "/admin",
        content_type: HTML,
        body: include_bytes!("../../ui/admin.html"),
    },
    Asset {
        path: "/assets/ringhub-client.js",
        content_type: JS,
        body: include_str!("../../clients/js/src/index.js").as_bytes(),
    },
    // The client's Fossil delta applier: `index.js` imports it as `./fossil.js`.
    Asset {
        path: "/assets/fossil.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/src/fossil.js"),
    },
    Asset {
        path: "/assets/chat.js",
        content_type: JS,
        body: include_bytes!("../../ui/chat.js"),
    },
    Asset {
        path: "/assets/admin.js",
        content_type: JS,
        body: include_bytes!("../../ui/admin.js"),
    },
    Asset {
        path: "/assets/ui.css",
        content_type: CSS,
        body: include_bytes!("../../ui/ui.css"),
    },
    Asset {
        path: "/assets/uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "/assets/uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("../../ui/vendor/uPlot.min.css"),
    },
];

/// A strong validator: FNV-1a of the content, so a new binary invalidates cached copies.
fn etag(body: &[u8]) -> String {
    let h = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{h:016x}\"")
}

/// The policy: scripts, styles, images and connections from this origin only (WebSocket URLs
/// of the same host are named too, for browsers whose `'self'` does not cover `ws:`).
fn csp(host: Option<&str>) -> String {
    let mut connect = String::from("'self'");
    let safe = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    };
    if let Some(h) = host.filter(|h| safe(h)) {
        connect.push_str(&format!(" ws://{h} wss://{h}"));
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Answers a request for one of the pages or assets.
pub(crate) fn serve(head: &RequestHead) -> Response {
    let text = |status: u16, msg: &str| Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: msg.as_bytes().to_vec(),
        headers: String::new(),
    };
    if head.method != "GET" {
        let mut r = text(405, "use GET");
        r.headers.push_str("Allow: GET\r\n");
        return r;
    }
    let Some(asset) = ASSETS.iter().find(|a| a.path == head.path) else {
        return text(404, "not found");
    };
    let tag = etag(asset.body);
    let mut headers = format!(
        "Cache-Control: no-cache\r\nETag: {tag}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n"
    );
    if asset.content_type == HTML {
        headers.push_str(&format!(
            "Content-Security-Policy: {}\r\n",
            csp(head.header("Host"))
        ));
    }
    let fresh = head
        .header("If-None-Match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let (status, body) = if fresh {
        (304, Vec::new())
    } else {
        (200, asset.body.to_vec())
    };
    Response {
        status,
        content_type: asset.content_type,
        body,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_policy() {
        use crate::config::is_ui_path;
        assert!(is_ui_path("/") && is_ui_path("/admin") && is_ui_path("/assets/x.js"));
        assert!(!is_ui_path("/ws") && !is_ui_path("/admin/") && !is_ui_path("/api/v1/stats"));
        let mut c = crate::config::Config::default();
        assert!(c.serves_ui("/"));
        c.ws_path = "/".into();
        assert!(!c.serves_ui("/") && c.serves_ui("/admin"));
        c.ui = false;
        assert!(!c.serves_ui("/admin"));
        let p = csp(Some("127.0.0.1:8080"));
        assert!(p.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(!csp(Some("evil\r\nX: y")).contains("evil"));
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.path);
        }
    }
}
