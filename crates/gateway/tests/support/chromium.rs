//! Headless Chromium driven over the DevTools protocol (CDP), for the dashboard tests:
//! the browser started on a free port, one page, and CDP's JSON messages over a
//! WebSocket written here (the few frame types CDP uses, RFC 6455), so the test needs no
//! browser-automation crate.
//!
//! Every event the page sends (`Network.requestWillBeSent`, …) is kept, for the tests
//! to look at the requests the page made.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long Chromium may take to start and a CDP command to answer on a busy machine.
const BROWSER_LIMIT: Duration = Duration::from_secs(30);

/// The Chromium binary: `$CHROMIUM`, else `chromium` (Debian's package), `chromium-browser`
/// or `google-chrome` on `PATH`; `None` when there is none.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(|name| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A headless Chromium, killed on drop.
pub struct Chromium {
    child: Child,
    /// `127.0.0.1:PORT` of its DevTools endpoint.
    devtools: String,
    /// The browser target's WebSocket path (`/devtools/browser/ID`).
    browser_path: String,
    // Its profile, removed after it exits.
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts `binary` headless with DevTools on a free port, and waits for it to say
    /// where ("DevTools listening on ws://…" on stderr).
    pub fn launch(binary: &Path) -> Chromium {
        let profile = tempfile::tempdir().expect("chromium profile dir");
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, url) = std::sync::mpsc::channel();
        // Reads stderr to the end, so Chromium never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                } else if std::env::var_os("CHROMIUM_LOG").is_some() {
                    eprintln!("chromium: {line}");
                }
            }
        });
        let url = match url.recv_timeout(BROWSER_LIMIT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("chromium did not print its DevTools address within {BROWSER_LIMIT:?}");
            }
        };
        let rest = url.strip_prefix("ws://").expect("a ws:// DevTools URL");
        let (devtools, path) = rest.split_at(rest.find('/').expect("a path in the URL"));
        Chromium {
            child,
            devtools: devtools.to_owned(),
            browser_path: path.to_owned(),
            _profile: profile,
        }
    }

    /// A new blank page (a tab), with its network and page events on.
    pub async fn new_page(&self) -> Page {
        let mut browser = Cdp::connect(&self.devtools, &self.browser_path).await;
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let id = target["targetId"].as_str().expect("a target id").to_owned();
        let cdp = Cdp::connect(&self.devtools, &format!("/devtools/page/{id}")).await;
        let mut page = Page { cdp };
        page.call("Page.enable", json!({})).await;
        page.call("Network.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page, driven by CDP commands.
pub struct Page {
    cdp: Cdp,
}

impl Page {
    /// Sends a CDP command and returns its result, failing the test on an error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.cdp.call(method, params).await
    }

    /// Opens `url` and waits until the document and its scripts are loaded.
    pub async fn goto(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            answer.get("errorText").is_none(),
            "navigate {url}: {answer}"
        );
        self.wait_for(
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                Value::from(url)
            ),
            "the page to load",
        )
        .await;
    }

    /// The value of JavaScript `expression` (awaited when it is a promise), failing the
    /// test when it throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Evaluates `expression` every 100 ms until it is truthy, and returns its value;
    /// fails the test after [`BROWSER_LIMIT`], naming `what`.
    pub async fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let deadline = Instant::now() + BROWSER_LIMIT;
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("waited {BROWSER_LIMIT:?} for {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page as shown now, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the artifact directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Every request the page has sent so far (`Network.requestWillBeSent`): URL and
    /// headers.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.cdp
            .events
            .iter()
            .filter(|event| event["method"] == "Network.requestWillBeSent")
            .map(|event| {
                let request = &event["params"]["request"];
                let url = request["url"].as_str().unwrap_or_default().to_owned();
                (url, request["headers"].clone())
            })
            .collect()
    }
}

/// A CDP connection: JSON commands and answers over a WebSocket, events kept.
struct Cdp {
    socket: WebSocket,
    next_id: u64,
    /// Every event received so far, in order.
    events: Vec<Value>,
}

impl Cdp {
    async fn connect(devtools: &str, path: &str) -> Cdp {
        Cdp {
            socket: WebSocket::connect(devtools, path).await,
            next_id: 1,
            events: Vec::new(),
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "id": id, "method": method, "params": params });
        self.socket.send_text(&message.to_string()).await;
        let deadline = Instant::now() + BROWSER_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let text = tokio::time::timeout(left, self.socket.receive_text())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {BROWSER_LIMIT:?}"));
            let message: Value = serde_json::from_str(&text).expect("CDP sends JSON");
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }
}

/// The client side of a WebSocket: text messages out (masked, as clients must), text
/// messages in (reassembled from fragments).
struct WebSocket {
    stream: TcpStream,
    /// Bytes read past the last frame.
    buffer: Vec<u8>,
    /// Varies each frame's mask.
    mask_seed: u32,
}

impl WebSocket {
    async fn connect(authority: &str, path: &str) -> WebSocket {
        let mut stream = TcpStream::connect(authority)
            .await
            .unwrap_or_else(|err| panic!("connect to DevTools at {authority}: {err}"));
        // The key only proves the server speaks WebSocket; a fixed one serves a test.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the handshake");
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.expect("read the handshake");
            assert!(n > 0, "DevTools closed the connection during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "WebSocket refused: {head}"
        );
        buffer.drain(..end);
        WebSocket {
            stream,
            buffer,
            mask_seed: 0x9e37_79b9,
        }
    }

    async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            len if len < 126 => frame.push(0x80 | len as u8),
            len if len <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mask = self.mask_seed.to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream
            .write_all(&frame)
            .await
            .expect("send to DevTools");
    }

    /// The next text message (pings and pongs skipped; Chromium sends none unasked).
    async fn receive_text(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let head = self.take(2).await;
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => u16::from_be_bytes(self.take(2).await.try_into().expect("2 bytes")) as usize,
                127 => u64::from_be_bytes(self.take(8).await.try_into().expect("8 bytes")) as usize,
                len => len as usize,
            };
            let mask = if masked {
                Some(self.take(4).await)
            } else {
                None
            };
            let mut payload = self.take(len).await;
            if let Some(mask) = mask {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[i % 4];
                }
            }
            match opcode {
                0x0 | 0x1 => message.extend_from_slice(&payload),
                0x8 => panic!("DevTools closed the WebSocket"),
                _ => continue,
            }
            if fin {
                return String::from_utf8(message).expect("CDP sends UTF-8");
            }
        }
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            let mut chunk = vec![0; 64 * 1024];
            let read = self
                .stream
                .read(&mut chunk)
                .await
                .expect("read from DevTools");
            assert!(read > 0, "DevTools closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        self.buffer.drain(..n).collect()
    }
}

/// Standard base64 (with padding) to bytes, for the screenshot CDP hands over.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:#x}"),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
