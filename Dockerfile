# keepwell's scratch image: the static binary alone, for `COPY --from=` (README "Install").
#
# The build context holds one architecture's release binary, named `keepwell`.
# `scripts/release.sh image REPOSITORY` builds it for linux/amd64 and linux/arm64 from dist/,
# pushes both and the multi-arch index over them, and prints the index's digest. By hand:
#
#   scripts/release.sh
#   mkdir -p ctx && cp dist/keepwell-0.1.0-aarch64-unknown-linux-musl ctx/keepwell
#   docker build --platform linux/arm64 -f Dockerfile -t keepwell:0.1.0-arm64 ctx
#
# or, from the repository root (.dockerignore sends only ./keepwell):
#
#   cargo build --release --target x86_64-unknown-linux-musl
#   cp target/x86_64-unknown-linux-musl/release/keepwell . && docker build -t keepwell:0.1.0 .
#
# No base image to pin. Only COPY and metadata: the classic builder (no buildx) can build a
# foreign platform's image only when no step runs a container.
FROM scratch
COPY keepwell /keepwell
LABEL org.opencontainers.image.title="keepwell" \
      org.opencontainers.image.description="A small static PID 1 for Python containers" \
      org.opencontainers.image.licenses="MIT"
ENTRYPOINT ["/keepwell"]
