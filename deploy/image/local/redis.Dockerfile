# Stand-in for redis:7.2-bookworm on machines with no image registry: Debian's
# redis-server on the local base (deploy/image/make-base.sh). Same command
# line as the official image (redis-server …, data in /data).
ARG BASE_IMAGE=localhost/libertaria-node-base:20.20.2-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
