# keepwell: build the static musl binary, ship it alone in a scratch image.
#
#   docker build -t keepwell:0.1.0 .
#
# Use it from an application image:
#
#   FROM keepwell:0.1.0 AS keepwell
#   FROM python:3.12-slim-bookworm@sha256:...
#   COPY --from=keepwell /keepwell /usr/local/bin/keepwell
#
# The builder is the official Rust image pinned by digest (rust:1.95.0-bookworm, linux/amd64
# and arm64 index digest); override it with --build-arg RUST_IMAGE=... to use a mirror.
ARG RUST_IMAGE=rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1

FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TARGET=x86_64-unknown-linux-musl
RUN rustup target add "${TARGET}"
WORKDIR /src

# Dependencies first: this layer is rebuilt only when Cargo.toml, Cargo.lock or the
# target's rustflags change, not on every edit under src/.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked --target "${TARGET}" \
    && rm -rf src "target/${TARGET}/release/keepwell" "target/${TARGET}/release/deps/keepwell-"* \
        "target/${TARGET}/release/.fingerprint/keepwell-"*

# The real source; cargo rebuilds only the crate itself (its fingerprint was removed above).
COPY src src
RUN cargo build --release --locked --target "${TARGET}" \
    && cp "target/${TARGET}/release/keepwell" /keepwell \
    && /keepwell --version | grep -q '^keepwell '
# (--version proves this is keepwell, not the placeholder main of the dependency layer)

FROM scratch
COPY --from=builder /keepwell /keepwell
ENTRYPOINT ["/keepwell"]
