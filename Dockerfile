# syntax=docker/dockerfile:1
#
# keywarden key service image.
#
#   docker build -t keywarden .
#   docker run -d --name keywarden --read-only -v keywarden:/var/lib/keywarden keywarden
#   docker exec keywarden keywarden key list
#
# The build stage compiles with the script CI uses (scripts/setup installs the Debian packages,
# then the release build with the TPM 2.0 backend). The runtime stage is Debian slim with only
# the shared libraries the binary links, runs as an unprivileged user, and writes nothing
# outside the volume, so it runs with a read-only root file system. No PIN, key or other
# secret is in the image: on first start the service creates its embedded hsm-sim token and
# PIN in the volume; other backends get their PIN at run time (a mounted file or an
# environment variable named in the config, `--config` pointing into a mounted directory).
#
# `keywarden serve` refuses to run as root and turns core dumps off itself. `--mlock` (lock
# all memory) needs `docker run --ulimit memlock=-1`. `tests/packaging.rs` lints this file
# with hadolint and checks these properties, since no container engine runs in CI.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target directory between builds; the binary is copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/setup \
    && cargo build --release --locked --features tpm2 \
    && install -m 0755 target/release/keywarden /usr/local/bin/keywarden

FROM debian:bookworm-slim AS runtime
# Only the runtime libraries of the TPM 2.0 stack (the binary links libtss2-esys, -tctildr and
# -mu; tctildr loads the device TCTI for /dev/tpmrm0). Versions follow the Debian release, which
# is what brings security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libtss2-esys-3.0.2-0 \
        libtss2-mu0 \
        libtss2-tctildr0 \
        libtss2-tcti-device0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 keywarden \
    && useradd --system --uid 10001 --gid keywarden --no-create-home \
        --home-dir /var/lib/keywarden --shell /usr/sbin/nologin keywarden \
    && install -d -m 0700 -o keywarden -g keywarden /var/lib/keywarden
COPY --from=build /usr/local/bin/keywarden /usr/local/bin/keywarden

# All state (registry, audit log, policies, the embedded token, the socket) in the volume.
ENV KEYWARDEN_HOME=/var/lib/keywarden \
    KEYWARDEN_SOCKET=/var/lib/keywarden/keywarden.sock \
    TSS2_LOG=all+NONE
VOLUME ["/var/lib/keywarden"]
WORKDIR /var/lib/keywarden
USER 10001:10001

# Asks the service itself over its socket (the unaudited Health call): fails unless it answers
# and every backend is healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/keywarden", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keywarden"]
CMD ["serve"]
