//! Every address keepwell reads: `--health-url` / `keepwell check URL` (http, tcp, unix, file,
//! grpc), `--socket` and `--listen`.
#![no_main]

use keepwell::config::parse_listen;
use keepwell::probe::Target;
use keepwell::sockets::Address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(target) = Target::parse(text) {
        // The URL keepwell's log lines and /status show is the same target.
        let shown = target.display();
        assert_eq!(
            Target::parse(&shown),
            Ok(target),
            "{text:?} is shown as {shown:?}"
        );
    }
    if let Ok(address) = Address::parse(text) {
        let shown = address.to_string();
        assert_eq!(
            Address::parse(&shown),
            Ok(address.clone()),
            "{text:?} is shown as {shown:?}"
        );
        // LISTEN_FDNAMES forbids ':' and a name is at most 255 characters.
        let name = address.fd_name();
        assert!(
            !name.contains(':') && name.len() <= 255 && name.chars().all(|c| c.is_ascii_graphic())
        );
    }
    let _ = parse_listen(text);
});
