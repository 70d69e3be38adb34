//! An HTTP CONNECT proxy that enforces the same allow-lists, for app code that brings its own
//! HTTP client: `https_proxy=http://<tenant>:<app proxy token>@<proxy>`. The token names the
//! app (each app has its own); the user name claims a tenant of that app, so a client reaches at
//! most what that tenant's or the app's list allows. Each target is checked and resolved exactly
//! as [`crate::Egress::check`] does, and the tunnel goes to the checked address. `CONNECT`
//! (HTTPS, or any TCP protocol on an allowed port) and `http://` URLs in absolute form (sent on
//! in origin form, one request per connection) are served; anything else gets 405.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bulkhead_model::TenantId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{AllowList, Egress, Error};

/// What the proxy needs to know: which app a token belongs to, and a tenant's list.
pub trait ProxyPolicy: Send + Sync {
    /// The egress of the app whose proxy token this is, when the token may speak for
    /// `tenant` (an app worker's token for the tenants it serves, a tenant worker's for its
    /// own tenant only).
    fn egress_for_token(&self, token: &str, tenant: &TenantId) -> Option<Arc<Egress>>;
    /// The allow-list of `tenant` of that app, `None` if the app has no such tenant.
    fn tenant_list(&self, egress: &Egress, tenant: &TenantId) -> Option<AllowList>;
}

const MAX_HEAD: usize = 8 * 1024;

/// On every answer the proxy makes itself (refusals), so a client can tell them from the
/// upstream's own.
pub const DENIAL_HEADER: &str = "x-bulkhead-egress-refused";

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, policy: Arc<dyn ProxyPolicy>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let policy = policy.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, policy.as_ref()).await {
                tracing::debug!(error = %e, "egress proxy connection");
            }
        });
    }
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\n{extra}{DENIAL_HEADER}: true\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await
}

/// `(tenant, token)` from `Proxy-Authorization: Basic …`.
fn credentials(head: &str) -> Option<(String, String)> {
    let value = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_owned())
    })?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

async fn handle(mut stream: TcpStream, policy: &dyn ProxyPolicy) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            return reply(&mut stream, "431 Request Header Fields Too Large", "", "").await;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "head"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    let connect = method == "CONNECT";
    if !connect && !target.starts_with("http://") {
        return reply(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: CONNECT\r\n",
            "this proxy serves CONNECT, and http:// URLs in absolute form\n",
        )
        .await;
    }
    let auth = credentials(&head).map(|(user, token)| {
        let tenant = TenantId::parse(&user).ok();
        let egress = match &tenant {
            Some(t) => policy.egress_for_token(&token, t),
            None => None,
        };
        (tenant, egress)
    });
    let (tenant, egress) = match auth {
        Some((Some(tenant), Some(egress))) => (tenant, egress),
        Some((None, _)) => {
            return reply(&mut stream, "403 Forbidden", "", "unknown tenant\n").await;
        }
        _ => {
            return reply(
                &mut stream,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Basic realm=\"bulkhead egress\"\r\n",
                "",
            )
            .await;
        }
    };
    let Some(list) = policy.tenant_list(&egress, &tenant) else {
        return reply(&mut stream, "403 Forbidden", "", "unknown tenant\n").await;
    };
    let parsed = if connect {
        reqwest::Url::parse(&format!("https://{target}/"))
            .ok()
            .filter(|u| u.port().is_some())
    } else {
        reqwest::Url::parse(target).ok()
    };
    let Some(url) = parsed else {
        return reply(
            &mut stream,
            "400 Bad Request",
            "",
            "CONNECT host:port, or an http:// URL\n",
        )
        .await;
    };
    let addrs = match egress.check(&tenant, &list, &url).await {
        Ok(a) => a,
        Err(Error::Denied { reason, .. }) => {
            return reply(&mut stream, "403 Forbidden", "", &format!("{reason}\n")).await;
        }
        Err(e) => {
            return reply(&mut stream, "400 Bad Request", "", &format!("{e}\n")).await;
        }
    };
    let mut upstream = None;
    for addr in &addrs {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
        {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        return reply(&mut stream, "502 Bad Gateway", "", "cannot connect\n").await;
    };
    if connect {
        stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
    } else {
        // Forwarded in origin form, one request per connection, without the proxy's headers.
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path = format!("{path}?{q}");
        }
        let mut out = format!("{method} {path} HTTP/1.1\r\n");
        for line in head.lines().skip(1).take_while(|l| !l.is_empty()) {
            let name = line.split(':').next().unwrap_or_default().trim();
            if ![
                "proxy-authorization",
                "proxy-connection",
                "connection",
                "keep-alive",
            ]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        upstream.write_all(out.as_bytes()).await?;
    }
    // Bytes the client sent after the head (a body, or the tunnel's first bytes) go on.
    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        && let Some(rest) = buf.get(end + 4..)
        && !rest.is_empty()
    {
        upstream.write_all(rest).await?;
    }
    tokio::io::copy_bidirectional(&mut stream, &mut upstream).await?;
    Ok(())
}
