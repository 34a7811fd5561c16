//! Minimal blocking FastCGI client used only to exercise the harness and the
//! PHP fixtures (independent of fcgi-core, which is tested against them).

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::time::Duration;

use fpm_harness::{fixtures_dir, FpmAddress, Stream};

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;

/// What PHP-FPM sent back for one request.
#[derive(Debug, Default)]
pub struct FcgiResponse {
    /// Concatenated FCGI_STDOUT content (CGI headers + body).
    pub stdout: Vec<u8>,
    /// Concatenated FCGI_STDERR content.
    pub stderr: Vec<u8>,
    /// appStatus of FCGI_END_REQUEST.
    pub app_status: u32,
    /// Number of FCGI_STDOUT records with content.
    pub stdout_records: usize,
}

impl FcgiResponse {
    /// CGI header lines (without CRLF) and the body.
    pub fn split(&self) -> (Vec<String>, Vec<u8>) {
        let pos = self
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header terminator in {:?}", self.stdout_lossy()));
        let head = String::from_utf8_lossy(&self.stdout[..pos]).into_owned();
        let headers = head.split("\r\n").map(str::to_owned).collect();
        (headers, self.stdout[pos + 4..].to_vec())
    }

    /// Header lines only.
    pub fn headers(&self) -> Vec<String> {
        self.split().0
    }

    /// Body only.
    pub fn body(&self) -> Vec<u8> {
        self.split().1
    }

    /// Body as (lossy) text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body()).into_owned()
    }

    /// All values of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers()
            .iter()
            .filter_map(|line| line.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
            .collect()
    }

    /// Whole stdout as text, for diagnostics.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A request to a fixture script.
pub struct Request<'a> {
    pub script: &'a str,
    pub query: &'a str,
    pub method: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub extra: Vec<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    pub fn get(script: &'a str, query: &'a str) -> Self {
        Request {
            script,
            query,
            method: "GET",
            content_type: None,
            body: b"",
            extra: Vec::new(),
        }
    }

    pub fn post(script: &'a str, content_type: &'a str, body: &'a [u8]) -> Self {
        Request {
            script,
            query: "",
            method: "POST",
            content_type: Some(content_type),
            body,
            extra: Vec::new(),
        }
    }

    pub fn params(&self) -> Vec<(String, String)> {
        let root = fixtures_dir();
        let uri = if self.query.is_empty() {
            format!("/{}", self.script)
        } else {
            format!("/{}?{}", self.script, self.query)
        };
        let mut params = vec![
            ("GATEWAY_INTERFACE", "CGI/1.1".to_owned()),
            ("SERVER_PROTOCOL", "HTTP/1.1".to_owned()),
            ("SERVER_SOFTWARE", "fpm-harness-test".to_owned()),
            ("SERVER_NAME", "localhost".to_owned()),
            ("SERVER_PORT", "80".to_owned()),
            ("REMOTE_ADDR", "127.0.0.1".to_owned()),
            ("REMOTE_PORT", "12345".to_owned()),
            ("REQUEST_METHOD", self.method.to_owned()),
            ("REQUEST_URI", uri),
            ("QUERY_STRING", self.query.to_owned()),
            ("DOCUMENT_ROOT", root.display().to_string()),
            ("SCRIPT_NAME", format!("/{}", self.script)),
            (
                "SCRIPT_FILENAME",
                root.join(self.script).display().to_string(),
            ),
            ("CONTENT_LENGTH", self.body.len().to_string()),
        ];
        if let Some(ct) = self.content_type {
            params.push(("CONTENT_TYPE", ct.to_owned()));
        }
        for (k, v) in &self.extra {
            params.push((k, (*v).to_owned()));
        }
        params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    pub fn send(&self, addr: &FpmAddress) -> io::Result<FcgiResponse> {
        let mut stream = addr.connect(Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write_request(&mut stream, &self.params(), self.body)?;
        read_response(&mut stream)
    }
}

fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    let len = u16::try_from(content.len()).expect("record content fits u16");
    let padding = (8 - content.len() % 8) % 8;
    let mut out = Vec::with_capacity(8 + content.len() + padding);
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(padding as u8);
    out.push(0);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
    out
}

fn encode_len(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    }
}

pub fn write_request(
    stream: &mut Stream,
    params: &[(String, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = Vec::new();
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[0; 6]);
    out.extend(record(BEGIN_REQUEST, &begin));
    let mut encoded = Vec::new();
    for (k, v) in params {
        encode_len(&mut encoded, k.len());
        encode_len(&mut encoded, v.len());
        encoded.extend_from_slice(k.as_bytes());
        encoded.extend_from_slice(v.as_bytes());
    }
    for chunk in encoded.chunks(65535) {
        out.extend(record(PARAMS, chunk));
    }
    out.extend(record(PARAMS, &[]));
    stream.write_all(&out)?;
    for chunk in body.chunks(65535) {
        stream.write_all(&record(STDIN, chunk))?;
    }
    stream.write_all(&record(STDIN, &[]))?;
    stream.flush()
}

pub fn read_response(stream: &mut Stream) -> io::Result<FcgiResponse> {
    let mut response = FcgiResponse::default();
    loop {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header)?;
        let kind = header[1];
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let padding = header[6] as usize;
        let mut content = vec![0u8; len + padding];
        stream.read_exact(&mut content)?;
        content.truncate(len);
        match kind {
            STDOUT => {
                if !content.is_empty() {
                    response.stdout_records += 1;
                }
                response.stdout.extend_from_slice(&content);
            }
            STDERR => response.stderr.extend_from_slice(&content),
            END_REQUEST => {
                response.app_status =
                    u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                return Ok(response);
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected record type {other}"),
                ))
            }
        }
    }
}
