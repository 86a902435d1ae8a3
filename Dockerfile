FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p contact-sync -p contact-sync-dev

# The simulator standing in for Integration.app (the compose file's
# `simulator` service): `docker build --target simulator`. Not the product.
FROM debian:bookworm-slim AS simulator
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/contact-sync-dev /usr/local/bin/contact-sync-dev
COPY integration-app /app/integration-app
WORKDIR /app
ENV INTEGRATION_APP_CONFIG_DIR=/app/integration-app
ENTRYPOINT ["contact-sync-dev"]

# The product, the default target: one binary.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/contact-sync /usr/local/bin/contact-sync
COPY integration-app /app/integration-app
WORKDIR /app
ENV INTEGRATION_APP_CONFIG_DIR=/app/integration-app
ENTRYPOINT ["contact-sync"]
