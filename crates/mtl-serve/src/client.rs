//! A minimal blocking HTTP/1.1 client over one keep-alive connection, for the tests and the
//! load generator (`cargo xtask loadtest`). It reads answers with a `Content-Length` only,
//! which is what `mtl serve` (and uvicorn) send for JSON.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection to one server.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    /// Extra request headers, as `Name: value` lines.
    headers: String,
}

impl Client {
    /// Connects to `addr` (reads and writes time out after `timeout`).
    ///
    /// # Errors
    /// The connection fails.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            addr,
            reader: BufReader::new(stream),
            headers: String::new(),
        })
    }

    /// Sends `Authorization: Bearer key` with every request.
    pub fn with_bearer(mut self, key: &str) -> Self {
        self.headers
            .push_str(&format!("Authorization: Bearer {key}\r\n"));
        self
    }

    /// `GET path`.
    ///
    /// # Errors
    /// The connection fails or the answer is not HTTP/1.1 with a length.
    pub fn get(&mut self, path: &str) -> io::Result<Reply> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> io::Result<Reply> {
        self.request("POST", path, Some(body))
    }

    /// Any request.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Reply> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}",
            self.addr, self.headers
        );
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        let mut message = head.into_bytes();
        message.extend_from_slice(body.unwrap_or_default());
        stream.write_all(&message)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad(format!("not an HTTP status line: {line:?}")))?;
        let mut headers = Vec::new();
        let mut length = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
                if name == "content-length" {
                    length = value.parse::<usize>().ok();
                }
                headers.push((name, value));
            }
        }
        let length = length.ok_or_else(|| bad("an answer without Content-Length".into()))?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// `{"texts": [...]}` for `texts`, escaped as JSON.
pub fn texts_body(texts: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "texts": texts })).unwrap_or_default()
}
