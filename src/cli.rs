//! The command line as clap sees it: every flag, its `KEEPWELL_*` variable, raw strings only.
//!
//! Nothing here validates a value: `config` does, so that every error can name the flag or the
//! variable the value came from, quote it, and say what was expected, in one line.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

const SUPERVISE_HELP: &str = "\
Commands:
  keepwell [OPTIONS] [--] COMMAND [ARG...]   supervise COMMAND as PID 1
  keepwell check [OPTIONS] [TARGET]          one health check: exit 0 healthy, 1 not

Every option can also be set by its variable, shown in brackets; a flag wins, and an empty
variable is the same as an unset one (-e KEEPWELL_LISTEN= turns --listen off).
Durations: 500ms, 10s, 2m, 1h; a bare number is seconds.

Exit codes: the child's code; 128+N when it died of signal N; 2 bad usage (nothing started);
126 COMMAND cannot be executed; 127 COMMAND not found; 3 unhealthy with --on-unhealthy exit;
4 more than --max-restarts restarts inside --restart-window; 5 COMMAND could not be started for
lack of resources (a pids, memory or fd limit) and no --restart retries it. --remap-exit
changes any of these on the way out.";

/// `keepwell [OPTIONS] [--] COMMAND [ARG...]`
#[derive(Parser, Debug)]
#[command(
    name = "keepwell",
    version,
    about = "PID 1 for Python containers: reaps, forwards signals, drops root, probes health, restarts.",
    after_help = SUPERVISE_HELP,
    override_usage = "keepwell [OPTIONS] [--] COMMAND [ARG...]\n       keepwell check [OPTIONS] [TARGET]"
)]
pub struct Supervise {
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log format: text or json.
    #[arg(
        long,
        env = "KEEPWELL_LOG_FORMAT",
        value_name = "FORMAT",
        help_heading = "Logs"
    )]
    pub log_format: Option<String>,
    /// Log level: error, warn, info, debug, trace or off.
    #[arg(
        long,
        env = "KEEPWELL_LOG_LEVEL",
        value_name = "LEVEL",
        help_heading = "Logs"
    )]
    pub log_level: Option<String>,
    /// The program to supervise and its arguments.
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Process")]
pub struct ProcessArgs {
    /// Drop to this user (name or uid; group name or gid) before the child starts.
    #[arg(long, env = "KEEPWELL_USER", value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// What the child gets when keepwell decides a stop itself (a restart, --on-unhealthy exit,
    /// leftovers); a stop from outside forwards the signal that came [default: TERM].
    #[arg(long, env = "KEEPWELL_STOP_SIGNAL", value_name = "SIG")]
    pub stop_signal: Option<String>,
    /// How long the child and its leftovers may take to stop before SIGKILL; the whole stop
    /// ends within --drain + --grace + 1s [default: 8s].
    #[arg(long, env = "KEEPWELL_GRACE", value_name = "DUR")]
    pub grace: Option<String>,
    /// Forward signal FROM as TO (repeatable; the variable takes a comma-separated list).
    #[arg(
        long,
        env = "KEEPWELL_REWRITE",
        value_name = "FROM:TO",
        value_delimiter = ','
    )]
    pub rewrite: Vec<String>,
    /// Forward signals to the child's whole process group (the variable takes true or false).
    #[arg(
        long,
        env = "KEEPWELL_SIGNAL_GROUP",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub signal_group: Option<String>,
    /// When the child exits by itself: no, on-failure or always [default: no].
    #[arg(long, env = "KEEPWELL_RESTART", value_name = "POLICY")]
    pub restart: Option<String>,
    /// More restarts than N inside --restart-window: give up [default: 5].
    #[arg(
        long,
        env = "KEEPWELL_MAX_RESTARTS",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub max_restarts: Option<String>,
    /// The window in which restarts are counted [default: 5m].
    #[arg(long, env = "KEEPWELL_RESTART_WINDOW", value_name = "DUR")]
    pub restart_window: Option<String>,
    /// Exit with TO where keepwell would exit with FROM, e.g. 143:0 (repeatable; the variable
    /// takes a comma-separated list).
    #[arg(
        long,
        env = "KEEPWELL_REMAP_EXIT",
        value_name = "FROM:TO",
        value_delimiter = ','
    )]
    pub remap_exit: Vec<String>,
    /// Bind the app's listening socket and pass it as fd 3, 4, … with LISTEN_FDS/LISTEN_PID,
    /// kept open across restarts: :8000, [::]:8000, unix:/path (repeatable; the variable takes
    /// a comma-separated list).
    #[arg(
        long,
        env = "KEEPWELL_SOCKET",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub socket: Vec<String>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Health")]
pub struct HealthArgs {
    /// http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or
    /// grpc://HOST:PORT[/SERVICE] [default: no probing].
    #[arg(long, env = "KEEPWELL_HEALTH_URL", value_name = "URL")]
    pub health_url: Option<String>,
    /// Instead of a URL: run CMD (/bin/sh -c) as the child's user; exit 0 is healthy.
    #[arg(long, env = "KEEPWELL_HEALTH_CMD", value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// For file: URLs: the heartbeat is stale when older than DUR [default: no limit].
    #[arg(long, env = "KEEPWELL_HEALTH_MAX_AGE", value_name = "DUR")]
    pub health_max_age: Option<String>,
    /// Time between probes once the app has been healthy [default: 10s].
    #[arg(long, env = "KEEPWELL_HEALTH_INTERVAL", value_name = "DUR")]
    pub health_interval: Option<String>,
    /// A probe that takes longer has failed [default: 2s].
    #[arg(long, env = "KEEPWELL_HEALTH_TIMEOUT", value_name = "DUR")]
    pub health_timeout: Option<String>,
    /// Consecutive failures that make the app unhealthy [default: 3].
    #[arg(
        long,
        env = "KEEPWELL_HEALTH_RETRIES",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub health_retries: Option<String>,
    /// Boot time in which failures do not count [default: 60s].
    #[arg(long, env = "KEEPWELL_HEALTH_START_PERIOD", value_name = "DUR")]
    pub health_start_period: Option<String>,
    /// Time between probes inside the start period [default: 1s].
    #[arg(long, env = "KEEPWELL_HEALTH_START_INTERVAL", value_name = "DUR")]
    pub health_start_interval: Option<String>,
    /// Consecutive successes to become healthy again after a failure [default: 1].
    #[arg(
        long,
        env = "KEEPWELL_HEALTH_SUCCESS_THRESHOLD",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub health_success_threshold: Option<String>,
    /// Status codes that count as success, e.g. 200-299,304 [default: 200-399].
    #[arg(long, env = "KEEPWELL_HEALTH_STATUS", value_name = "RANGES")]
    pub health_status: Option<String>,
    /// A request header 'Name: value' (repeatable; the variable takes several, one per line or
    /// separated by \n).
    #[arg(long, env = "KEEPWELL_HEALTH_HEADER", value_name = "HEADER")]
    pub health_header: Vec<String>,
    /// The response body (first 64 KiB) must contain TEXT.
    #[arg(long, env = "KEEPWELL_HEALTH_BODY", value_name = "TEXT")]
    pub health_body: Option<String>,
    /// What sustained unhealthiness does: restart, exit or ignore [default: restart].
    #[arg(long, env = "KEEPWELL_ON_UNHEALTHY", value_name = "ACTION")]
    pub on_unhealthy: Option<String>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Serving probes")]
pub struct ServeArgs {
    /// Serve /livez /readyz /startupz /status /metrics on ADDR (:9000, 127.0.0.1:9000).
    #[arg(long, env = "KEEPWELL_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// On TERM/INT: /readyz turns 503 at once, the child is stopped DUR later [default: 0s].
    #[arg(long, env = "KEEPWELL_DRAIN", value_name = "DUR")]
    pub drain: Option<String>,
}

/// `keepwell check [OPTIONS] [TARGET | -- CMD ARG...]`
#[derive(Parser, Debug)]
#[command(
    name = "keepwell check",
    version,
    override_usage = "keepwell check [OPTIONS] [TARGET]\n       keepwell check [OPTIONS] -- CMD [ARG...]",
    about = "One health check. Without TARGET, ask the keepwell supervising this container; \
             with TARGET (a URL as for --health-url), probe it directly; after --, run a \
             command check. Exit 0 healthy, 1 not, 2 bad usage.",
    after_help = "With a TARGET or CMD, the options take their defaults from the variables the \
                  supervisor reads (shown in brackets); a flag wins."
)]
pub struct Check {
    /// http://HOST:PORT/PATH, tcp://HOST:PORT, unix:SOCKET:/PATH, file:PATH or
    /// grpc://HOST:PORT[/SERVICE].
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// A command check: run CMD with its ARGs (no shell); exit 0 is healthy.
    #[arg(value_name = "CMD", last = true)]
    pub command: Vec<String>,
    /// Give up after DUR [default: 2s].
    #[arg(long, env = "KEEPWELL_HEALTH_TIMEOUT", value_name = "DUR")]
    pub timeout: Option<String>,
    /// Status codes that count as healthy [default: 200-399].
    #[arg(long, env = "KEEPWELL_HEALTH_STATUS", value_name = "RANGES")]
    pub status: Option<String>,
    /// A request header 'Name: value' (repeatable; several per value, one per line or
    /// separated by \n).
    #[arg(long, env = "KEEPWELL_HEALTH_HEADER", value_name = "HEADER")]
    pub header: Vec<String>,
    /// The response body (first 64 KiB) must contain TEXT.
    #[arg(long, env = "KEEPWELL_HEALTH_BODY", value_name = "TEXT")]
    pub body: Option<String>,
    /// For file: targets: unhealthy when the file is older than DUR.
    #[arg(long, env = "KEEPWELL_HEALTH_MAX_AGE", value_name = "DUR")]
    pub max_age: Option<String>,
    /// Print nothing; the exit code says it all.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parsed arguments and where each value came from.
pub struct Parsed<T> {
    pub args: T,
    matches: ArgMatches,
    /// Each argument's variable, by argument id (`timeout` → `KEEPWELL_HEALTH_TIMEOUT`).
    variables: Vec<(String, String)>,
}

impl<T> Parsed<T> {
    /// How to name the origin of a value in an error: `--grace` or `KEEPWELL_GRACE`.
    pub fn origin(&self, id: &str) -> String {
        let flag = format!("--{}", id.replace('_', "-"));
        match self.matches.value_source(id) {
            Some(ValueSource::EnvVariable) => self
                .variables
                .iter()
                .find(|(arg, _)| arg == id)
                .map(|(_, variable)| variable.clone())
                .unwrap_or_else(|| format!("KEEPWELL_{}", id.to_uppercase())),
            _ => flag,
        }
    }

    /// Whether the value of `id` was given on the command line (not by its variable).
    pub fn on_command_line(&self, id: &str) -> bool {
        self.matches.value_source(id) == Some(ValueSource::CommandLine)
    }
}

/// The two ways keepwell is called.
pub enum Invocation {
    Supervise(Box<Parsed<Supervise>>),
    Check(Box<Parsed<Check>>),
}

/// A clap outcome that is not a parse: `--help`, `--version`, or a usage error.
pub struct Exit {
    pub code: i32,
    pub message: String,
}

/// Parse the process arguments; `check` as the first argument selects check mode (use
/// `keepwell -- check` to supervise a program named check).
pub fn parse(args: Vec<String>) -> Result<Invocation, Exit> {
    forget_empty_variables();
    if args.get(1).map(String::as_str) == Some("check") {
        let rest = std::iter::once("keepwell check".to_string()).chain(args.into_iter().skip(2));
        parse_with::<Check>(rest.collect()).map(|p| Invocation::Check(Box::new(p)))
    } else {
        parse_with::<Supervise>(args).map(|p| Invocation::Supervise(Box::new(p)))
    }
}

/// An empty `KEEPWELL_*` variable is the same as an unset one (SPEC.md), so that
/// `docker run -e KEEPWELL_LISTEN= IMAGE python manage.py migrate` turns `--listen` off for a
/// one-off command. clap would hand the empty string on as a value; removing such variables
/// before it reads the environment covers every option, present and future, at once.
fn forget_empty_variables() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(name, value)| {
            name.to_str().is_some_and(|n| n.starts_with("KEEPWELL_"))
                && value.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(name, _)| name)
        .collect();
    for name in empty {
        // Sound: this runs first thing in main, before keepwell starts any thread, so nothing
        // can read the environment while it changes. The child never needed an empty variable.
        std::env::remove_var(name);
    }
}

fn parse_with<T: CommandFactory + FromArgMatches>(args: Vec<String>) -> Result<Parsed<T>, Exit> {
    let command = T::command();
    let variables = command
        .get_arguments()
        .filter_map(|arg| {
            let variable = arg.get_env()?.to_string_lossy().into_owned();
            Some((arg.get_id().to_string(), variable))
        })
        .collect();
    let matches = command.try_get_matches_from(args).map_err(clap_exit)?;
    let args = T::from_arg_matches(&matches).map_err(clap_exit)?;
    Ok(Parsed {
        args,
        matches,
        variables,
    })
}

/// Help and version go to stdout with exit 0; a usage error becomes one line and exit 2.
fn clap_exit(err: clap::Error) -> Exit {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit {
            code: 0,
            message: err.render().to_string(),
        },
        _ => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad usage");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            Exit {
                code: 2,
                message: format!("keepwell: {first} (see keepwell --help)"),
            }
        }
    }
}
