# Stand-in for prom/prometheus on machines with no image registry: Debian's
# prometheus (2.42) on the local base. Same flags as the official image.
ARG BASE_IMAGE=localhost/libertaria-node-base:20.20.2-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
