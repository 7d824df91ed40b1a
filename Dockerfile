# The lookout image: the host binary (with the dashboard, the embedded plugins and the demo
# app inside it) on Debian slim with python3 for the pools' workers, running as a non-root
# user. Not built in CI (no container engine there); see docs/kubernetes.md.
#
#   docker build -t lookout:0.1.0 .
#   docker run --rm -p 8787:8787 lookout:0.1.0

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# rust-toolchain.toml pins the toolchain and its wasm targets (plugins and the dashboard are
# built to WASM by host/artifacts' build script); `rustup toolchain install` adds them.
RUN rustup toolchain install \
 && cargo build --release --locked -p lookout \
 && cp target/release/lookout /usr/local/bin/lookout

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin lookout \
 && install -d -o 10001 -g 10001 /var/cache/lookout
COPY --from=build /usr/local/bin/lookout /usr/local/bin/lookout
COPY examples/lookout.toml /etc/lookout/lookout.toml
USER 10001:10001
# Listen on every interface inside the container; compiled plugins are cached under /var/cache
# (mount a writable volume there when the root filesystem is read-only).
ENV LOOKOUT_LISTEN=0.0.0.0:8787 \
    XDG_CACHE_HOME=/var/cache
EXPOSE 8787
ENTRYPOINT ["/usr/local/bin/lookout"]
CMD ["serve", "--config", "/etc/lookout/lookout.toml"]
