//! Property tests: the report, lsblk and df parsers return errors, never panic, on any input;
//! and a report survives being re-serialized with arbitrary sizes and names.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn report_parser_total(s in ".{0,400}") {
        let _ = lvm::report::parse(&s);
    }

    #[test]
    fn lsblk_parser_total(s in ".{0,400}") {
        let _ = lvm::lsblk::parse(&s);
    }

    #[test]
    fn df_parser_total(s in ".{0,200}") {
        let _ = lvm::fs::parse_df(&s);
    }

    #[test]
    fn report_fields_of_any_value(size in any::<u64>(), name in "[a-zA-Z0-9+_.-]{1,64}", pct in 0.0f64..100.0, junk in "[ !#-\\[\\]-~]{0,12}") {
        let json = format!(r#"{{"report":[{{"vg":[{{"vg_name":"{name}","vg_size":"{size}","vg_free":"{junk}"}}],"lv":[{{"lv_name":"{name}","vg_name":"{name}","lv_size":"{size}","data_percent":"{pct:.2}","lv_attr":"{junk}"}}]}}]}}"#);
        match lvm::report::parse(&json) {
            Ok(r) => {
                prop_assert_eq!(r.vgs[0].size, size);
                prop_assert_eq!(r.lvs[0].size, size);
                prop_assert!((r.lvs[0].data_percent.unwrap() - pct).abs() < 0.01);
            }
            // Only the free-text field may make it fail, never a panic.
            Err(e) => prop_assert!(e.to_string().contains("byte count"), "{}", e),
        }
    }

    #[test]
    fn lsblk_any_nesting(depth in 0usize..40, size in any::<u64>()) {
        let mut dev = format!(r#"{{"name":"/dev/x{depth}","type":"lvm","size":{size}}}"#);
        for i in 0..depth {
            dev = format!(r#"{{"name":"/dev/x{i}","type":"disk","size":"{size}","ro":"0","children":[{dev}]}}"#);
        }
        let devs = lvm::lsblk::parse(&format!(r#"{{"blockdevices":[{dev}]}}"#)).unwrap();
        prop_assert_eq!(devs[0].walk().len(), depth + 1);
        prop_assert_eq!(devs[0].size, size);
    }
}
