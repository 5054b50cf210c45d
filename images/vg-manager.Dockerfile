# The node agent and the CSI driver, vg-manager. Build from the repository root:
#   podman build -f images/vg-manager.Dockerfile -t vg-manager .
# (`make images` builds both images.)
#
# One image runs two things:
#   - `vg-manager run` in the vg-manager DaemonSet: privileged, as root (it creates volume groups
#     and mounts volumes for pods), running the programs installed below;
#   - `vg-manager csi-controller` in the topolvm-controller Deployment, as UID 65532: it only
#     talks to the API server and needs none of them.

FROM docker.io/library/rust:1-bookworm AS builder
# protoc: the csi crate generates the CSI gRPC code from proto/csi.proto at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, never a fresh resolution.
RUN cargo build --release --locked -p vg-manager \
    && install -D -m 0755 target/release/vg-manager /out/vg-manager

FROM docker.io/library/debian:bookworm-slim
# Every program the agent runs, by the bookworm package that ships it (tests/e2e/tests/images.rs
# checks this list against the programs named in lvm/src and vg-manager/src):
#   lvm2                     lvm (every LVM command goes through `lvm <command>`)
#   dmsetup                  dmsetup (removing device-mapper children before a wipe)
#   thin-provisioning-tools  thin_check, thin_repair (lvm2 runs them when it activates a thin pool)
#   xfsprogs                 mkfs.xfs, xfs_growfs, xfs_info
#   e2fsprogs                mkfs.ext4, resize2fs, dumpe2fs
#   util-linux               lsblk, blkid, wipefs, nsenter
#   mount                    mount, umount, losetup
#   udev                     udevadm (settle after wiping)
#   coreutils                df, stat, realpath, mkdir, touch, rm, rmdir (essential; listed anyway)
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        lvm2 \
        dmsetup \
        thin-provisioning-tools \
        xfsprogs \
        e2fsprogs \
        util-linux \
        mount \
        udev \
        coreutils \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
# LVM inside a container: see the comments in images/lvm.conf. The DaemonSet mounts the host's
# /etc/lvm over this directory (so a host's devices file is honoured); the file then only applies
# when the image runs without that mount (`vg-manager discover`, out-of-cluster runs).
COPY images/lvm.conf /etc/lvm/lvm.conf
# What does survive the host's /etc/lvm: libdevmapper reads DM_DISABLE_UDEV and then neither
# waits for udev (udev_sync=0) nor expects udev rules to create the /dev nodes (udev_rules=0).
# Udev synchronisation uses SysV semaphores, which live in the IPC namespace: the host's udevd
# would complete them in the host's namespace and an LVM command in the pod could wait forever.
ENV DM_DISABLE_UDEV=1
COPY --from=builder /out/vg-manager /usr/bin/vg-manager
# No USER: the agent must run as root (the DaemonSet says runAsUser 0 and privileged); the
# controller Deployment sets runAsUser 65532 and runAsNonRoot itself.
ENTRYPOINT ["/usr/bin/vg-manager"]
