//! Raw arguments in, one validated `Config` out; nothing downstream reads the environment.
//!
//! Every rejection is one line that names the flag or variable the value came from, quotes the
//! value, and says what was expected. `main` prints it and exits 2 before anything starts.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};

use crate::cli::{Check, Parsed, Supervise};
use crate::privileges::{self, Identity};
use crate::probe::{self, CommandLine, Mode, ProbeSpec, StatusRanges, Target};
use crate::sockets;
use crate::state::{HealthTiming, OnUnhealthy, Policy, RestartPolicy};

/// A fatal configuration error: one line, exit 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "keepwell: {}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything supervise mode needs, validated.
#[derive(Debug)]
pub struct Config {
    pub command: Vec<String>,
    pub user: Option<Identity>,
    pub policy: Policy,
    pub probe: Option<ProbeSpec>,
    pub listen: Option<SocketAddr>,
    /// `--socket`: the app's listening sockets that keepwell binds and holds, in order.
    pub sockets: Vec<sockets::Address>,
    pub log_format: LogFormat,
    pub log_level: tracing::level_filters::LevelFilter,
}

/// Everything check mode needs, validated.
#[derive(Debug)]
pub struct CheckConfig {
    /// `None`: ask the supervisor of this container.
    pub probe: Option<ProbeSpec>,
    pub timeout: Duration,
    pub quiet: bool,
}

const DURATION_HINT: &str = "expected a duration such as 500ms, 10s, 2m or 1h";

/// `500ms`, `10s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(number.checked_mul(millis_per_unit)?))
}

/// `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).ok()
}

/// `:9000`, `0.0.0.0:9000`, `127.0.0.1:9000`, `[::]:9000`.
pub fn parse_listen(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().ok()?;
        // `:PORT` means every IPv4 address, as `0.0.0.0:PORT` does for Docker's `-p` users.
        return Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    text.parse().ok()
}

/// Reads and validates one optional value with its origin for error messages.
struct Reader<'a, T> {
    parsed: &'a Parsed<T>,
}

impl<T> Reader<'_, T> {
    fn fail(&self, id: &str, value: &str, expected: &str) -> UsageError {
        UsageError(format!(
            "{} {value:?} is not valid: {expected}",
            self.parsed.origin(id)
        ))
    }

    fn duration(
        &self,
        id: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Result<Duration, UsageError> {
        match value {
            None => Ok(default),
            Some(text) => parse_duration(text).ok_or_else(|| self.fail(id, text, DURATION_HINT)),
        }
    }

    fn positive_duration(
        &self,
        id: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Result<Duration, UsageError> {
        let duration = self.duration(id, value, default)?;
        if duration.is_zero() {
            let text = value.as_deref().unwrap_or_default();
            return Err(self.fail(id, text, "expected a duration above zero, such as 1s"));
        }
        Ok(duration)
    }

    fn count(
        &self,
        id: &str,
        value: &Option<String>,
        default: u32,
        min: u32,
    ) -> Result<u32, UsageError> {
        match value {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(self.fail(
                    id,
                    text,
                    &format!("expected a whole number of at least {min}"),
                )),
            },
        }
    }

    fn signal(&self, id: &str, text: &str) -> Result<Signal, UsageError> {
        parse_signal(text).ok_or_else(|| {
            self.fail(
                id,
                text,
                "expected a signal name such as TERM, SIGQUIT or a number such as 15",
            )
        })
    }

    fn status(&self, id: &str, value: &Option<String>) -> Result<StatusRanges, UsageError> {
        match value {
            None => Ok(StatusRanges::default()),
            Some(text) => StatusRanges::parse(text).ok_or_else(|| {
                self.fail(
                    id,
                    text,
                    "expected status codes or ranges from 100 to 599, such as 200-299,304",
                )
            }),
        }
    }

    /// Headers, one per line or separated by `\n` (which a Dockerfile `ENV` can hold).
    fn headers(&self, id: &str, values: &[String]) -> Result<Vec<(String, String)>, UsageError> {
        values
            .iter()
            .flat_map(|value| probe::http::split_headers(value))
            .map(|line| probe::parse_header(line).map_err(|why| self.fail(id, line, &why)))
            .collect()
    }

    fn url(&self, id: &str, text: &str) -> Result<Target, UsageError> {
        Target::parse(text).map_err(|why| self.fail(id, text, &why))
    }

    /// `--health-max-age` / `--max-age`: only a `file:` target has an age.
    fn max_age(
        &self,
        id: &str,
        value: &Option<String>,
        target: &Target,
    ) -> Result<Option<Duration>, UsageError> {
        let Some(text) = nonempty(value) else {
            return Ok(None);
        };
        let age = self.positive_duration(id, &Some(text.to_string()), Duration::ZERO)?;
        if !matches!(target, Target::File { .. }) {
            return Err(self.fail(
                id,
                text,
                &format!(
                    "a max age applies to file: heartbeats only, not to {}",
                    target.display()
                ),
            ));
        }
        Ok(Some(age))
    }
}

/// An empty value is the same as none (`-e KEEPWELL_HEALTH_MAX_AGE=` turns it off).
fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Config {
    pub fn from_args(parsed: &Parsed<Supervise>) -> Result<Config, UsageError> {
        let read = Reader { parsed };
        let args = &parsed.args;
        let process = &args.process;
        let health = &args.health;

        if args.command.is_empty() {
            return Err(UsageError(
                "no COMMAND given: use keepwell [OPTIONS] [--] COMMAND [ARG...], e.g. keepwell -- gunicorn app:app"
                    .into(),
            ));
        }

        let stop_signal = match &process.stop_signal {
            None => Signal::SIGTERM,
            Some(text) => read.signal("stop_signal", text)?,
        };
        let mut rewrites = BTreeMap::new();
        for rule in process.rewrite.iter().filter(|r| !r.trim().is_empty()) {
            let Some((from, to)) = rule.split_once(':') else {
                return Err(read.fail(
                    "rewrite",
                    rule,
                    "expected FROM:TO signal names, such as TERM:QUIT",
                ));
            };
            rewrites.insert(read.signal("rewrite", from)?, read.signal("rewrite", to)?);
        }
        let mut remap_exit = BTreeMap::new();
        for rule in process.remap_exit.iter().filter(|r| !r.trim().is_empty()) {
            let code = |text: &str| text.trim().parse::<u8>().ok().map(i32::from);
            match rule
                .split_once(':')
                .and_then(|(f, t)| Some((code(f)?, code(t)?)))
            {
                Some((from, to)) => remap_exit.insert(from, to),
                None => {
                    return Err(read.fail(
                        "remap_exit",
                        rule,
                        "expected FROM:TO exit codes from 0 to 255, such as 143:0",
                    ))
                }
            };
        }
        let restart = match process.restart.as_deref().map(str::trim) {
            None | Some("no") => RestartPolicy::No,
            Some("on-failure") => RestartPolicy::OnFailure,
            Some("always") => RestartPolicy::Always,
            Some(other) => {
                return Err(read.fail("restart", other, "expected no, on-failure or always"))
            }
        };
        let on_unhealthy = match health.on_unhealthy.as_deref().map(str::trim) {
            None | Some("restart") => OnUnhealthy::Restart,
            Some("exit") => OnUnhealthy::Exit,
            Some("ignore") => OnUnhealthy::Ignore,
            Some(other) => {
                return Err(read.fail("on_unhealthy", other, "expected restart, exit or ignore"))
            }
        };

        let health_timeout = read.positive_duration(
            "health_timeout",
            &health.health_timeout,
            Duration::from_secs(2),
        )?;
        let timing = HealthTiming {
            interval: read.positive_duration(
                "health_interval",
                &health.health_interval,
                Duration::from_secs(10),
            )?,
            start_period: read.duration(
                "health_start_period",
                &health.health_start_period,
                Duration::from_secs(60),
            )?,
            start_interval: read.positive_duration(
                "health_start_interval",
                &health.health_start_interval,
                Duration::from_secs(1),
            )?,
            retries: read.count("health_retries", &health.health_retries, 3, 1)?,
            success_threshold: read.count(
                "health_success_threshold",
                &health.health_success_threshold,
                1,
                1,
            )?,
        };
        let status = read.status("health_status", &health.health_status)?;
        let headers = read.headers("health_header", &health.health_header)?;
        let target = match (nonempty(&health.health_url), nonempty(&health.health_cmd)) {
            (Some(url), Some(_)) => {
                return Err(read.fail(
                    "health_url",
                    url,
                    &format!(
                        "it and {} both say how to probe; give one of them",
                        parsed.origin("health_cmd")
                    ),
                ))
            }
            (Some(url), None) => Some(read.url("health_url", url)?),
            (None, Some(cmd)) => Some(Target::Command(
                CommandLine::shell(cmd).map_err(|why| read.fail("health_cmd", cmd, &why))?,
            )),
            (None, None) => None,
        };
        let probe = match target {
            None => {
                if let Some(text) = nonempty(&health.health_max_age) {
                    return Err(read.fail(
                        "health_max_age",
                        text,
                        "a max age needs a file: heartbeat, such as --health-url file:/tmp/heartbeat",
                    ));
                }
                None
            }
            Some(target) => Some(ProbeSpec {
                max_age: read.max_age("health_max_age", &health.health_max_age, &target)?,
                target,
                timeout: health_timeout,
                status,
                headers,
                body: health.health_body.clone().filter(|b| !b.is_empty()),
                mode: Mode::Supervise,
            }),
        };

        let listen = match args
            .serve
            .listen
            .as_deref()
            .filter(|l| !l.trim().is_empty())
        {
            None => None,
            Some(text) => Some(parse_listen(text).ok_or_else(|| {
                read.fail(
                    "listen",
                    text,
                    "expected an address such as :9000, 0.0.0.0:9000 or 127.0.0.1:9000",
                )
            })?),
        };

        let mut held = Vec::new();
        for text in process.socket.iter().filter(|s| !s.trim().is_empty()) {
            held.push(
                sockets::Address::parse(text).map_err(|why| read.fail("socket", text, &why))?,
            );
        }
        if held.len() > sockets::MAX_SOCKETS {
            return Err(UsageError(format!(
                "{} gives {} sockets: at most {} can be handed to the app",
                parsed.origin("socket"),
                held.len(),
                sockets::MAX_SOCKETS
            )));
        }
        if let Some(spec) = &probe {
            if let Some(address) = probe_proves_nothing(&spec.target, &held) {
                return Err(read.fail(
                    "health_url",
                    health.health_url.as_deref().unwrap_or_default(),
                    &format!(
                        "it points at --socket {address}, which keepwell holds open itself: a \
                         connection there always succeeds, even while the app is down, so a \
                         tcp:// probe proves nothing; probe what the app answers instead, e.g. \
                         http://127.0.0.1:{}/health",
                        match address {
                            sockets::Address::Tcp(addr) => addr.port(),
                            sockets::Address::Unix(_) => 0,
                        }
                    ),
                ));
            }
        }

        if !held.is_empty() && gunicorn_reuse_port(&args.command) {
            return Err(UsageError(format!(
                "{} and gunicorn --reuse-port do not go together: with --reuse-port gunicorn \
                 ignores the socket keepwell hands down and every worker binds the port itself, \
                 which keepwell already holds (Address already in use, and nobody serves the \
                 port); drop --reuse-port",
                parsed.origin("socket")
            )));
        }

        let user = match process.user.as_deref().filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(spec) => {
                let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
                let identity = privileges::resolve(spec, &passwd, &group)
                    .map_err(|why| read.fail("user", spec, &why))?;
                let (euid, egid) = (Uid::effective(), Gid::effective());
                if !euid.is_root() && (identity.uid != euid || identity.gid != egid) {
                    return Err(read.fail(
                        "user",
                        spec,
                        &format!(
                            "keepwell runs as uid {euid} gid {egid} and only root can switch users: \
                             run keepwell as root, or drop --user and rely on the image's USER"
                        ),
                    ));
                }
                Some(identity)
            }
        };

        let log_format = match args.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(read.fail("log_format", other, "expected text or json")),
        };
        let log_level = match args.log_level.as_deref() {
            None => tracing::level_filters::LevelFilter::INFO,
            Some(text) => text.trim().parse().map_err(|_| {
                read.fail(
                    "log_level",
                    text,
                    "expected error, warn, info, debug, trace or off",
                )
            })?,
        };

        let policy = Policy {
            stop_signal,
            grace: read.duration("grace", &process.grace, Duration::from_secs(8))?,
            drain: read.duration("drain", &args.serve.drain, Duration::ZERO)?,
            rewrites,
            signal_group: match process.signal_group.as_deref().map(str::trim) {
                None | Some("false" | "0" | "no" | "off" | "") => false,
                Some("true" | "1" | "yes" | "on") => true,
                Some(other) => {
                    return Err(read.fail("signal_group", other, "expected true or false"))
                }
            },
            restart,
            max_restarts: read.count("max_restarts", &process.max_restarts, 5, 0)?,
            restart_window: read.positive_duration(
                "restart_window",
                &process.restart_window,
                Duration::from_secs(300),
            )?,
            health: probe.as_ref().map(|_| timing),
            on_unhealthy,
            remap_exit,
            pid1: std::process::id() == 1,
        };

        Ok(Config {
            command: args.command.clone(),
            user,
            policy,
            probe,
            listen,
            sockets: held,
            log_format,
            log_level,
        })
    }
}

/// COMMAND runs gunicorn with `--reuse-port` (directly or in a `sh -c` line).
fn gunicorn_reuse_port(command: &[String]) -> bool {
    let words = || command.iter().flat_map(|arg| arg.split_whitespace());
    words().any(|w| w.contains("gunicorn")) && words().any(|w| w == "--reuse-port")
}

/// A `tcp://` health URL that reaches a socket keepwell holds: the kernel completes the
/// handshake from the socket's queue whether or not the app runs, so such a probe is always
/// healthy. Hosts are compared as the kernel routes them: an unspecified address (`0.0.0.0`,
/// `[::]`) takes every host, `localhost` is loopback.
fn probe_proves_nothing<'a>(
    target: &probe::Target,
    held: &'a [sockets::Address],
) -> Option<&'a sockets::Address> {
    let probe::Target::Tcp { host, port } = target else {
        return None;
    };
    let host_ip: Option<std::net::IpAddr> = host.trim_matches(['[', ']']).parse().ok();
    held.iter().find(|address| match address {
        sockets::Address::Tcp(addr) if addr.port() == *port => {
            let ip = addr.ip();
            ip.is_unspecified()
                || host_ip == Some(ip)
                || (host.eq_ignore_ascii_case("localhost") && ip.is_loopback())
        }
        _ => false,
    })
}

impl CheckConfig {
    pub fn from_args(parsed: &Parsed<Check>) -> Result<CheckConfig, UsageError> {
        let read = Reader { parsed };
        let args = &parsed.args;
        let quiet = args.quiet;
        let target = match (nonempty(&args.target), args.command.is_empty()) {
            (Some(url), false) => {
                return Err(UsageError(format!(
                    "TARGET {url:?} and a command after -- both say what to check; give one of them"
                )))
            }
            (Some(url), true) => Some(
                Target::parse(url)
                    .map_err(|why| UsageError(format!("TARGET {url:?} is not valid: {why}")))?,
            ),
            (None, false) => Some(Target::Command(CommandLine::Argv(args.command.clone()))),
            (None, true) => None,
        };
        let Some(target) = target else {
            // Asking the supervisor: it probes with its own settings, so the options for a
            // probe make no sense here, unless they only came from the image's variables.
            let given: Vec<&str> = ["status", "header", "body", "max_age"]
                .into_iter()
                .filter(|id| parsed.on_command_line(id))
                .collect();
            if !given.is_empty() {
                return Err(UsageError(
                    "--status, --header, --body and --max-age need a TARGET URL: without one, \
                     keepwell check asks the supervisor, which probes with its own --health-* \
                     settings"
                        .into(),
                ));
            }
            let timeout = match parsed.on_command_line("timeout") {
                true => read.positive_duration("timeout", &args.timeout, Duration::from_secs(2))?,
                false => Duration::from_secs(2),
            };
            return Ok(CheckConfig {
                probe: None,
                timeout,
                quiet,
            });
        };
        let timeout = match nonempty(&args.timeout) {
            None => Duration::from_secs(2),
            Some(text) => {
                read.positive_duration("timeout", &Some(text.to_string()), Duration::ZERO)?
            }
        };
        let status = match nonempty(&args.status) {
            None => StatusRanges::default(),
            Some(text) => read.status("status", &Some(text.to_string()))?,
        };
        let spec = ProbeSpec {
            max_age: read.max_age("max_age", &args.max_age, &target)?,
            target,
            timeout,
            status,
            headers: read.headers("header", &args.header)?,
            body: args.body.clone().filter(|b| !b.is_empty()),
            mode: Mode::Check,
        };
        Ok(CheckConfig {
            probe: Some(spec),
            timeout,
            quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1.5s", "ten", "10 s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn signals_by_name_with_or_without_sig_and_by_number() {
        assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("ttin"), Some(Signal::SIGTTIN));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":9000"), Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(
            parse_listen("127.0.0.1:9000"),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            parse_listen("[::1]:9000"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(parse_listen("9000"), None);
        assert_eq!(parse_listen(":x"), None);
    }
}
