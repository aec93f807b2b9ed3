# syntax=docker/dockerfile:1
#
# tollgate container image.
#
#   docker build --build-arg VERSION=$(git describe --always --dirty) -t tollgate .
#   docker run --rm -p 8080:8080 -p 9901:9901 \
#       -v "$PWD/tollgate.yaml:/etc/tollgate/tollgate.yaml:ro" tollgate
#
# The image holds only the static binary; the config is mounted at
# /etc/tollgate/tollgate.yaml (the default command runs it). Inside a
# container, listen on 0.0.0.0:8080 (listen[].addr) and, if the metrics are
# scraped from outside the pod, admin.addr 0.0.0.0:9901: the 127.0.0.1
# defaults are right for a sidecar reached over the pod's loopback only.
# Check a config without starting: docker run --rm -v ... tollgate check -c /etc/tollgate/tollgate.yaml
#
# Automatic HTTPS (listen[].tls.domains): set tls.storage to a mounted volume,
# e.g. storage: /var/lib/tollgate with -v tollgate-certs:/var/lib/tollgate,
# so certificates and the ACME account survive the container (the default,
# under the user's home, does not, and every start would order anew); and
# publish the ports the CA connects to: -p 80:8080 -p 443:8443 for listeners
# on 0.0.0.0:8080 (plain, HTTP-01) and 0.0.0.0:8443 (tls, TLS-ALPN-01).

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
        -o /out/tollgate ./cmd/tollgate
RUN mkdir -p /out/state

# distroless static: no shell, no package manager, CA certificates and tzdata
# included (certmagic needs the CAs), runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tollgate /tollgate
# The ACME storage directory, owned by nonroot: a named volume mounted here
# starts with this owner, so tollgate can write its certificates into it.
COPY --from=build --chown=65532:65532 /out/state /var/lib/tollgate
USER nonroot:nonroot
# 8080: proxied traffic. 9901: admin API (/healthz /readyz /metrics /debug/...).
EXPOSE 8080 9901
ENTRYPOINT ["/tollgate"]
CMD ["run", "-c", "/etc/tollgate/tollgate.yaml"]
