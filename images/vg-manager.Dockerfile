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
#   dmsetup                  dmsetup (removing device-mapper children before a wipe; is dm-raid
#                            loaded, for RAID classes)
#   thin-provisioning-tools  thin_check, thin_repair (lvm2 runs them when it activates a thin pool)
#   xfsprogs                 mkfs.xfs, xfs_growfs, xfs_info
#   e2fsprogs                mkfs.ext4, resize2fs, dumpe2fs
#   util-linux               lsblk, blkid, wipefs, nsenter, blkdiscard (cleaning released raw disks)
#   mount                    mount, umount, losetup
#   udev                     udevadm (settle after wiping)
#   coreutils                df, stat, realpath, mkdir, touch, rm, rmdir (essential; listed anyway)
#   kmod                     modprobe (lvm2 loads dm-thin-pool, dm-snapshot, dm-raid1 on first
#                            use, vg-manager dm-raid for RAID classes; the DaemonSet mounts the
#                            host's /lib/modules read-only)
#   cryptsetup-bin           cryptsetup (LUKS2 volumes: format, open, close, resize; dm-crypt
#                            itself is the host kernel's, loaded with modprobe when missing)
#   ca-certificates          the API client (rustls) loads the system's roots before adding the
#                            cluster's CA, and refuses to start with none
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
        kmod \
        cryptsetup-bin \
        ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
# LVM inside a container. In the DaemonSet the host's /etc/lvm is mounted over this directory (a
# host's devices file is honoured), with the host's /run/lvm, /run/lock/lvm, /run/udev and IPC
# namespace, and vg-manager adds `--config` to every lvm command for what cannot be shared
# (lvm/src/container.rs: no dmeventd; no udev when the host has no lvm2). This file applies when
# the image runs without that mount (`vg-manager discover`, out-of-cluster runs).
# No DM_DISABLE_UDEV: where the host's udevd has the device-mapper rules, lvm waits for it rather
# than creating /dev nodes itself, which races the host's udevd (symlinks can vanish).
COPY images/lvm.conf /etc/lvm/lvm.conf
COPY --from=builder /out/vg-manager /usr/bin/vg-manager
# No USER: the agent must run as root (the DaemonSet says runAsUser 0 and privileged); the
# controller Deployment sets runAsUser 65532 and runAsNonRoot itself.
ENTRYPOINT ["/usr/bin/vg-manager"]
