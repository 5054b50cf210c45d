//! `cargo bench -p lvm --bench parse`: parse a fullreport of 10 000 thin volumes (target < 20 ms).
//! The report is built in the exact shape lvm2 prints (see tests/fixtures/report-thin.json).

use std::time::{Duration, Instant};

fn report(lvs: usize) -> String {
    let mut s = String::from(
        "  {\n      \"report\": [\n          {\n              \"vg\": [\n                  {\"vg_name\":\"vg1\", \"vg_uuid\":\"1mPFUO-8en4-k0kO-ywlx-eABc-ncGP-juS6i1\", \"vg_size\":\"2139095040000\", \"vg_free\":\"205520896\", \"vg_extent_size\":\"4194304\", \"vg_tags\":\"lvms-rs\", \"pv_count\":\"2\", \"lv_count\":\"10001\", \"vg_missing_pv_count\":\"0\"}\n              ]\n              ,\n              \"lv\": [\n",
    );
    s.push_str("                  {\"lv_name\":\"pool\", \"vg_name\":\"vg1\", \"lv_uuid\":\"u2D699-bbPU-TaZK-ivhz-LoM3-rGnm-5EdHv2\", \"lv_size\":\"1925185536000\", \"lv_attr\":\"twi-aotz--\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"origin\":\"\", \"data_percent\":\"3.51\", \"metadata_percent\":\"11.62\", \"lv_metadata_size\":\"4194304\", \"lv_active\":\"active\", \"lv_dm_path\":\"/dev/mapper/vg1-pool\"}");
    for i in 0..lvs {
        s.push_str(&format!(",\n                  {{\"lv_name\":\"pvc-{i:08x}-0000-4000-8000-000000000000\", \"vg_name\":\"vg1\", \"lv_uuid\":\"F8iJ2t-wDsh-1IJM-Cs2s-uvQU-{i:08}\", \"lv_size\":\"{}\", \"lv_attr\":\"Vwi-a-tz--\", \"lv_tags\":\"lvms.topolvm.io/lv=pvc-{i}\", \"pool_lv\":\"pool\", \"origin\":\"\", \"data_percent\":\"21.48\", \"metadata_percent\":\"\", \"lv_metadata_size\":\"\", \"lv_active\":\"active\", \"lv_dm_path\":\"/dev/mapper/vg1-pvc--{i:08x}\"}}", 1073741824u64 + i as u64 * 4096));
    }
    s.push_str("\n              ]\n              ,\n              \"seg\": [\n");
    for i in 0..lvs {
        s.push_str(&format!("                  {{\"lv_uuid\":\"F8iJ2t-wDsh-1IJM-Cs2s-uvQU-{i:08}\", \"segtype\":\"thin\", \"chunk_size\":\"0\"}},\n"));
    }
    s.push_str("                  {\"lv_uuid\":\"u2D699-bbPU-TaZK-ivhz-LoM3-rGnm-5EdHv2\", \"segtype\":\"thin-pool\", \"chunk_size\":\"65536\"}\n              ]\n          }\n      ]\n  }\n");
    s
}

fn main() {
    let text = report(10_000);
    let mut samples: Vec<Duration> = (0..30)
        .map(|_| {
            let t = Instant::now();
            let r = lvm::report::parse(std::hint::black_box(&text)).unwrap();
            assert_eq!(r.lvs.len(), 10_001);
            assert_eq!(r.lv("vg1", "pool").unwrap().chunk_size, Some(65536));
            t.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "parse fullreport, 10 000 thin LVs ({} KiB): median {:?}, p90 {:?}",
        text.len() / 1024,
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10]
    );
}
