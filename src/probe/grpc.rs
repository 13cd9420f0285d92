//! `grpc://HOST:PORT[/SERVICE]`: the grpc.health.v1 `Health/Check` RPC, judged as the
//! kubelet's grpc probe judges it.
//!
//! SERVING is healthy; NOT_SERVING, UNKNOWN (and SERVICE_UNKNOWN), a NOT_FOUND status (the
//! server knows no such service) and UNIMPLEMENTED (it has no health service at all) are not,
//! each named in the detail. Plaintext HTTP/2 with prior knowledge (h2c), as the kubelet
//! speaks to pods; connect and RPC share the probe's one deadline, which the server is told in
//! `grpc-timeout`. HTTP/2 is hyper's (the h2 crate); the protobuf messages are one optional
//! string field in and one enum field out, encoded here by hand rather than with a code
//! generator. At most 64 KiB of the answer is read.

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::http::{Dial, Endpoint, Network};
use super::{host_port, Failure, Outcome, ProbeSpec, BODY_LIMIT};

/// `HealthCheckResponse.ServingStatus`.
const SERVING: u64 = 1;

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown serving status",
    }
}

/// The gRPC status codes, by number.
fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .get(code as usize)
        .copied()
        .unwrap_or("an unknown code")
}

/// `HealthCheckRequest { service }` in a gRPC frame: no compression, length, message.
fn request_frame(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited); an empty string is left out, as proto3 does.
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The serving status in the first message of a response body (`HealthCheckResponse`: field
/// 1, an enum); a message without it is UNKNOWN, the proto3 default.
fn serving_status(body: &[u8]) -> Result<u64, String> {
    let (&compressed, rest) = body.split_first().ok_or("an empty response message")?;
    if compressed != 0 {
        return Err("a compressed response, which keepwell did not ask for".into());
    }
    if rest.len() < 4 {
        return Err("a truncated response message".into());
    }
    let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut message = rest
        .get(4..4 + length)
        .ok_or("a truncated response message")?;
    let mut status = 0;
    while !message.is_empty() {
        let key = get_varint(&mut message).ok_or("a garbled response message")?;
        let skip = match (key >> 3, key & 7) {
            (1, 0) => {
                status = get_varint(&mut message).ok_or("a garbled response message")?;
                0
            }
            (_, 0) => {
                get_varint(&mut message).ok_or("a garbled response message")?;
                0
            }
            (_, 1) => 8,
            (_, 5) => 4,
            (_, 2) => get_varint(&mut message).ok_or("a garbled response message")? as usize,
            _ => return Err("a garbled response message".into()),
        };
        message = message.get(skip..).ok_or("a garbled response message")?;
    }
    Ok(status)
}

/// `grpc-timeout`: at most 8 digits and a unit.
fn grpc_timeout(timeout: std::time::Duration) -> String {
    format!("{}m", timeout.as_millis().clamp(1, 99_999_999))
}

/// `grpc-message` is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The probe over the network.
pub(super) async fn probe(host: &str, port: u16, service: &str, spec: &ProbeSpec) -> Outcome {
    probe_via(host, port, service, spec, &mut Network).await
}

/// The probe over a connection from `dial` (see [`Dial`]).
pub async fn probe_via(
    host: &str,
    port: u16,
    service: &str,
    spec: &ProbeSpec,
    dial: &mut impl Dial,
) -> Outcome {
    let shown = spec.target.display();
    let stream = dial
        .dial(&Endpoint::Tcp {
            host: host.to_string(),
            port,
        })
        .await?;
    let bad = |e: hyper::Error| {
        // hyper says "http2 error"; what went wrong is in the h2 error beneath it.
        let cause = std::error::Error::source(&e)
            .map(|cause| format!(": {cause}"))
            .unwrap_or_default();
        Failure::new(
            "bad http2",
            format!(
                "bad HTTP/2 answer from {shown}: {e}{cause} (is it a gRPC server on that port? \
                 keepwell speaks plaintext HTTP/2, not TLS)"
            ),
        )
    };
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(BODY_LIMIT as u32)
        .initial_stream_window_size(BODY_LIMIT as u32)
        .max_send_buf_size(BODY_LIMIT)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(bad)?;
    let uri = format!(
        "http://{}/grpc.health.v1.Health/Check",
        host_port(host, port)
    );
    let request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .header(hyper::header::USER_AGENT, "keepwell")
        .header("grpc-timeout", grpc_timeout(spec.timeout))
        .body(Full::new(Bytes::from(request_frame(service))))
        .map_err(|e| {
            Failure::new(
                "bad request",
                format!("cannot build the request for {shown}: {e}"),
            )
        })?;

    // The connection is driven here, beside the call: dropping this future (the deadline)
    // closes the socket.
    let call = async {
        let response = sender.send_request(request).await.map_err(bad)?;
        let http_status = response.status();
        let (parts, mut body) = response.into_parts();
        if http_status != hyper::StatusCode::OK {
            return Err(Failure::new(
                format!("grpc http {}", http_status.as_u16()),
                format!(
                    "HTTP {} from {shown} instead of a gRPC answer (is it a gRPC server on that \
                     port?)",
                    http_status.as_u16()
                ),
            ));
        }
        // A failed call may come as headers alone ("Trailers-Only").
        let mut grpc_status = parts.headers.get("grpc-status").cloned();
        let mut grpc_message = parts.headers.get("grpc-message").cloned();
        let mut data: Vec<u8> = Vec::new();
        while grpc_status.is_none() {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(bad(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut chunk) => {
                        let room = BODY_LIMIT.saturating_sub(data.len());
                        if room == 0 {
                            return Err(Failure::new(
                                "grpc garbled",
                                format!("{shown} sent more than 64 KiB for a health answer"),
                            ));
                        }
                        let take = chunk.remaining().min(room);
                        data.extend_from_slice(&chunk.copy_to_bytes(take));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            grpc_status = trailers.get("grpc-status").cloned();
                            grpc_message = trailers.get("grpc-message").cloned();
                        }
                    }
                },
            }
        }
        let code: Option<u32> = grpc_status
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let message = grpc_message
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
            .filter(|m| !m.is_empty());
        judge(&shown, service, code, message, &data)
    };
    tokio::pin!(connection);
    tokio::pin!(call);
    tokio::select! {
        result = &mut call => result,
        // The connection ended, often because the server closed it right after its answer
        // (its last frames and its EOF come in one read): the call holds that answer, or the
        // connection's error if there was none. Judged as the kubelet's client judges it.
        _ = &mut connection => call.await,
    }
}

/// The verdict on a finished call, as the kubelet gives it.
fn judge(
    shown: &str,
    service: &str,
    code: Option<u32>,
    message: Option<String>,
    data: &[u8],
) -> Outcome {
    let said = message.map(|m| format!(": {m}")).unwrap_or_default();
    let named = if service.is_empty() {
        "the server as a whole (no SERVICE in the URL)".to_string()
    } else {
        format!("service {service:?}")
    };
    match code {
        Some(0) => {}
        Some(5) => {
            return Err(Failure::new(
                "grpc NOT_FOUND",
                format!(
                    "NOT_FOUND from {shown}: its health service knows no {named}{said} (check \
                     the name after the port; it must be one the server registered with \
                     set())"
                ),
            ))
        }
        Some(12) => {
            return Err(Failure::new(
                "grpc UNIMPLEMENTED",
                format!(
                    "UNIMPLEMENTED from {shown}: the server has no grpc.health.v1.Health \
                     service{said} (register one, e.g. grpcio-health-checking's HealthServicer)"
                ),
            ))
        }
        Some(other) => {
            return Err(Failure::new(
                format!("grpc {}", code_name(other)),
                format!("{} ({other}) from {shown}{said}", code_name(other)),
            ))
        }
        None => {
            return Err(Failure::new(
                "grpc garbled",
                format!("{shown} ended the call without a grpc-status (is it a gRPC server?)"),
            ))
        }
    }
    let status = serving_status(data).map_err(|why| {
        Failure::new(
            "grpc garbled",
            format!("{why} from {shown} (is it a gRPC health service?)"),
        )
    })?;
    let name = status_name(status);
    if status == SERVING {
        return Ok(format!("SERVING from {shown}"));
    }
    let why = match status {
        0 => " (the server has not set a status for it yet)",
        2 => " (the app says it cannot serve)",
        _ => "",
    };
    Err(Failure::new(
        format!("grpc {name}"),
        format!("{name} from {shown} for {named}{why}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a grpc.health.v1 server sends for a NOT_SERVING answer on stream 1 (its SETTINGS,
    /// the response headers, the message, `grpc-status: 0`), made with the Python h2 package.
    const NOT_SERVING_ANSWER: &str = "00002a04000000000000010000100000020000000000040000ffff0005\
        0000400000080000000000030000006400060001000000000004010000000000000e010400000001885f8b\
        1d75d0620d263d4c4d65640000070000000000010000000002080200000c01050000000140889acac8b212\
        34da8f8107";

    /// A server that reads the whole request (the client's frames up to its DATA with
    /// END_STREAM), sends `answer` and closes the connection at once.
    struct AnswerThenClose(Vec<u8>);

    impl Dial for AnswerThenClose {
        async fn dial(
            &mut self,
            _to: &Endpoint,
        ) -> Result<Box<dyn crate::probe::http::Socket>, Failure> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (probe_side, mut server) = tokio::io::duplex(64 * 1024);
            let answer = self.0.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let request_done = |seen: &[u8]| {
                    let mut frames = seen.get(24..).unwrap_or_default();
                    while frames.len() >= 9 {
                        let length = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]);
                        let (kind, flags) = (frames[3], frames[4]);
                        if kind == 0 && flags & 1 == 1 {
                            return true;
                        }
                        frames = frames.get(9 + length as usize..).unwrap_or_default();
                    }
                    false
                };
                let mut buf = [0u8; 4096];
                while !request_done(&seen) {
                    match server.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = server.write_all(&answer).await;
                // Closing right after the answer: its last frames and the EOF come together.
                drop(server);
            });
            Ok(Box::new(probe_side))
        }
    }

    #[tokio::test]
    async fn an_answer_followed_by_the_servers_close_is_judged_by_its_status() {
        let hex = NOT_SERVING_ANSWER.replace(char::is_whitespace, "");
        let answer: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let target = crate::probe::Target::Grpc {
            host: "127.0.0.1".into(),
            port: 50051,
            service: String::new(),
        };
        let spec = ProbeSpec::new(target, crate::probe::Mode::Supervise);
        // The close used to win the race against the answer about half the time.
        for _ in 0..20 {
            let mut server = AnswerThenClose(answer.clone());
            let outcome = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                probe_via("127.0.0.1", 50051, "", &spec, &mut server),
            )
            .await
            .expect("the probe ends once the server has closed");
            let failure = outcome.expect_err("NOT_SERVING is unhealthy");
            assert_eq!(failure.reason, "grpc NOT_SERVING", "{}", failure.detail);
        }
    }

    #[test]
    fn the_request_is_one_optional_string() {
        assert_eq!(request_frame(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            request_frame("app"),
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'p']
        );
        let long = "s".repeat(200);
        let frame = request_frame(&long);
        assert_eq!(&frame[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 5 + 3 + 200);
    }

    #[test]
    fn the_response_is_one_enum_with_unknown_fields_skipped() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Ok(0));
        // An unknown string field 2 before the status.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 2]),
            Ok(2)
        );
        assert!(serving_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(serving_status(&[1, 0, 0, 0, 0]).is_err());
        assert!(serving_status(&[]).is_err());
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("unknown%20service"), "unknown service");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn deadlines_fit_grpc_timeout() {
        assert_eq!(grpc_timeout(std::time::Duration::from_secs(2)), "2000m");
        assert_eq!(grpc_timeout(std::time::Duration::ZERO), "1m");
    }
}
