# The cluster-wide controller, lvms-operator. Build from the repository root:
#   podman build -f images/lvms-operator.Dockerfile -t lvms-operator .
# (`make images` builds both images.)

FROM docker.io/library/rust:1-bookworm AS builder
# protoc: the workspace's csi crate generates its gRPC code at build time. The operator does not
# depend on it, but the image builds with the same toolchain as vg-manager's, so both stay alike.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, never a fresh resolution.
RUN cargo build --release --locked -p lvms-operator \
    && install -D -m 0755 target/release/lvms-operator /out/lvms-operator

# glibc and libgcc only, no shell, no package manager; runs as the distroless nonroot user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/lvms-operator /usr/bin/lvms-operator
USER 65532:65532
ENTRYPOINT ["/usr/bin/lvms-operator"]
