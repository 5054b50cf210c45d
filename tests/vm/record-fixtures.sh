#!/usr/bin/env bash
# Records the real lvm/lsblk outputs that lvm/tests/fixtures/ holds, in the VM (root needed).
# Usage: tests/vm/record-fixtures.sh   (rewrites lvm/tests/fixtures/*.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$PWD/lvm/tests/fixtures
mkdir -p "$out"
vm=tests/vm/run-in-vm.sh
# Under target/ so the files sit with the build, not in the system temp dirs.
mkdir -p target; work=$(mktemp -d "$PWD/target/lvms-fixtures.XXXXXX")
trap 'rm -rf "$work"' EXIT
truncate -s 1G "$work/p1.img" "$work/p2.img"
# The exact report arguments the library uses, from its source.
args=$(sed -n 's/^pub const \([A-Z]*\)_FIELDS: &str = "\(.*\)";/\1=\2/p' lvm/src/report.rs)
eval "$args"
report="lvm fullreport --reportformat json --units b --nosuffix --configreport vg -o $VG --configreport pv -o $PV --configreport lv -o $LV --configreport seg -o $SEG --configreport pvseg -o pv_uuid"
lsblk_cols=$(sed -n 's/^pub const COLUMNS: &str = "\(.*\)";/\1/p' lvm/src/lsblk.rs)

cat > "$work/one.sh" <<EOS
set -euxo pipefail
o=$out
$report > \$o/report-empty.json
pvcreate /dev/vdc
$report > \$o/report-orphan-pv.json
vgcreate --addtag lvms-rs vg1 /dev/vda /dev/vdb
$report > \$o/report-empty-vg.json
lvcreate -y --type thin-pool -l 90%VG -n pool vg1
lvcreate -y --type thin -V 300m --thinpool pool -n thin1 --addtag lvms.topolvm.io/lv=pvc-1 vg1
mkfs.xfs -q /dev/vg1/thin1
lvcreate -y --snapshot --setactivationskip n -n snap1 vg1/thin1
lvcreate -y --type thin -V 2g --thinpool pool -n thin2 vg1
$report > \$o/report-thin.json
vgcreate vg2 /dev/vdc
lvcreate -y -L 64m -n thick1 vg2
$report > \$o/report-thin-and-thick.json
sfdisk -q /dev/vdd <<< 'label: gpt
size=32M, name="BIOS boot"
size=64M, name=data'
mkfs.ext4 -q /dev/vde
udevadm settle
lsblk --json --bytes --paths --output $lsblk_cols > \$o/lsblk.json
EOS
"$vm" -d 1G -d 1G -d 512M -d 256M -d 128M -d 64M:ro -w "$out" -- bash "$work/one.sh"

# Missing PV: a VG over two persistent disks, booted again with one of them gone.
cat > "$work/two.sh" <<EOS
set -eux
vgcreate vgm /dev/vda /dev/vdb
lvcreate -y -L 32m -n lv1 vgm /dev/vda
EOS
"$vm" -D "$work/p1.img" -D "$work/p2.img" -- bash "$work/two.sh"
"$vm" -D "$work/p1.img" -w "$out" -- bash -c "$report > $out/report-missing-pv.json"
ls -l "$out"
