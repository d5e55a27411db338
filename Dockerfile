# wasaga: the host binary and the three step components, on a slim runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo xtask build-plugins --out /out/plugins \
    && cargo build --release -p wasaga-host --bin wasaga \
    && cp target/release/wasaga /out/wasaga

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/wasaga /usr/local/bin/wasaga
COPY --from=build /out/plugins /opt/wasaga/plugins
COPY examples /opt/wasaga/examples
WORKDIR /var/lib/wasaga
ENV WASAGA_HTTP_ADDR=0.0.0.0:8080 \
    WASAGA_DATA_DIR=/var/lib/wasaga \
    WASAGA_PLUGINS_DIR=/opt/wasaga/plugins
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=30 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["wasaga"]
CMD ["serve"]
