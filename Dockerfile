FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin contact-sync --bin contact-sync-dev

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/contact-sync /usr/local/bin/contact-sync
# the simulator, for the compose file's stand-in of Integration.app
COPY --from=build /src/target/release/contact-sync-dev /usr/local/bin/contact-sync-dev
COPY integration-app /app/integration-app
WORKDIR /app
ENV INTEGRATION_APP_CONFIG_DIR=/app/integration-app
ENTRYPOINT ["contact-sync"]
