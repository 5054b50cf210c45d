//! Checks of an LVMCluster spec that the CRD schema cannot afford: the API server's CEL cost
//! budget rules out comparing every path of every class with every other. The operator runs this
//! before acting and reports failures in a condition, naming the field.

use std::collections::BTreeMap;
use std::fmt;

use crate::lvmcluster::LVMClusterSpec;

/// A refused field: the path as the API server would print it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every rule the schema leaves to the operator. Empty when the spec is acceptable.
pub fn validate_spec(spec: &LVMClusterSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    // A disk can belong to one volume group only: the first class that names it owns it.
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, class) in spec.storage.device_classes.iter().enumerate() {
        let Some(sel) = &class.device_selector else {
            continue;
        };
        let lists = [
            ("paths", &sel.paths),
            ("optionalPaths", &sel.optional_paths),
        ];
        for (list, paths) in lists {
            for (j, path) in paths.iter().flatten().enumerate() {
                match owner.get(path.as_str()) {
                    Some(other) if *other != class.name => errors.push(SpecError {
                        field: format!("spec.storage.deviceClasses[{i}].deviceSelector.{list}[{j}]"),
                        message: format!(
                            "{path} is already selected by device class {other}: a device can belong to one device class only"
                        ),
                    }),
                    _ => {
                        owner.insert(path, &class.name);
                    }
                }
            }
        }
    }
    errors.extend(auto_extend_errors(spec));
    errors
}

/// The CRD refuses these too; checked again because an LVMCluster stored under an older CRD
/// (before `autoExtend` had its rules) reaches the operator unchecked, and the node must never
/// act on a policy whose ceiling is below where the pool starts.
fn auto_extend_errors(spec: &LVMClusterSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    for (i, class) in spec.storage.device_classes.iter().enumerate() {
        let Some(tp) = &class.thin_pool_config else {
            continue;
        };
        let Some(ae) = &tp.auto_extend else {
            continue;
        };
        let field =
            |f: &str| format!("spec.storage.deviceClasses[{i}].thinPoolConfig.autoExtend.{f}");
        let mut range = |f: &str, v: i32, min: i32, max: i32| {
            if !(min..=max).contains(&v) {
                errors.push(SpecError {
                    field: field(f),
                    message: format!("{v} is not between {min} and {max}"),
                });
            }
        };
        range("thresholdPercent", ae.threshold_percent, 50, 95);
        range("stepPercent", ae.step_percent, 1, 50);
        range("maxSizePercent", ae.max_size_percent, 11, 100);
        if ae.max_size_percent <= tp.size_percent {
            errors.push(SpecError {
                field: field("maxSizePercent"),
                message: format!(
                    "maxSizePercent ({}) must be greater than sizePercent ({}): the pool starts at sizePercent of the volume group and grows up to maxSizePercent",
                    ae.max_size_percent, tp.size_percent
                ),
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvmcluster::{
        DeviceClass, DeviceSelector, Storage, ThinPoolAutoExtend, ThinPoolConfig,
    };

    fn class(name: &str, paths: &[&str], optional: &[&str]) -> DeviceClass {
        let list = |p: &[&str]| (!p.is_empty()).then(|| p.iter().map(|s| s.to_string()).collect());
        DeviceClass {
            name: name.into(),
            device_selector: Some(DeviceSelector {
                paths: list(paths),
                optional_paths: list(optional),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(classes: Vec<DeviceClass>) -> LVMClusterSpec {
        LVMClusterSpec {
            storage: Storage {
                device_classes: classes,
            },
            ..Default::default()
        }
    }

    #[test]
    fn distinct_paths_are_fine() {
        let s = spec(vec![
            class("a", &["/dev/sdb"], &["/dev/sdc"]),
            class("b", &["/dev/sdd"], &[]),
        ]);
        assert_eq!(validate_spec(&s), vec![]);
    }

    #[test]
    fn a_path_in_two_classes_names_the_second_occurrence() {
        let s = spec(vec![
            class("a", &["/dev/sdb"], &[]),
            class("b", &["/dev/sdc"], &["/dev/sdb"]),
        ]);
        let errs = validate_spec(&s);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].field,
            "spec.storage.deviceClasses[1].deviceSelector.optionalPaths[0]"
        );
        assert!(
            errs[0]
                .message
                .contains("/dev/sdb is already selected by device class a"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn required_paths_of_two_classes_overlap() {
        let s = spec(vec![
            class("a", &["/dev/sdb", "/dev/sdc"], &[]),
            class("b", &["/dev/sdc"], &[]),
        ]);
        assert_eq!(
            validate_spec(&s)[0].field,
            "spec.storage.deviceClasses[1].deviceSelector.paths[0]"
        );
    }

    fn auto_extend(size_percent: i32, ae: ThinPoolAutoExtend) -> LVMClusterSpec {
        spec(vec![DeviceClass {
            name: "a".into(),
            thin_pool_config: Some(ThinPoolConfig {
                name: "pool".into(),
                size_percent,
                overprovision_ratio: 1,
                auto_extend: Some(ae),
                ..Default::default()
            }),
            ..Default::default()
        }])
    }

    #[test]
    fn auto_extend_defaults_are_valid_and_a_low_ceiling_is_named() {
        assert_eq!(
            validate_spec(&auto_extend(90, ThinPoolAutoExtend::default())),
            vec![]
        );
        let low = ThinPoolAutoExtend {
            max_size_percent: 90,
            ..Default::default()
        };
        let errs = validate_spec(&auto_extend(90, low));
        assert_eq!(
            errs[0].field,
            "spec.storage.deviceClasses[0].thinPoolConfig.autoExtend.maxSizePercent"
        );
        assert!(errs[0].message.contains("greater than sizePercent (90)"));
        let bad = ThinPoolAutoExtend {
            threshold_percent: 99,
            step_percent: 0,
            max_size_percent: 100,
        };
        let fields: Vec<String> = validate_spec(&auto_extend(50, bad))
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.storage.deviceClasses[0].thinPoolConfig.autoExtend.thresholdPercent",
                "spec.storage.deviceClasses[0].thinPoolConfig.autoExtend.stepPercent"
            ]
        );
    }

    #[test]
    fn auto_extend_fields_default_one_by_one() {
        let ae: ThinPoolAutoExtend = serde_json::from_str(r#"{"stepPercent": 5}"#).unwrap();
        assert_eq!(
            (ae.threshold_percent, ae.step_percent, ae.max_size_percent),
            (70, 5, 100)
        );
        let tp: ThinPoolConfig =
            serde_json::from_str(r#"{"name": "p", "overprovisionRatio": 1}"#).unwrap();
        assert_eq!(tp.auto_extend, None, "unset is off, as in LVMS");
    }

    #[test]
    fn classes_without_selectors_are_not_compared() {
        let s = spec(vec![DeviceClass {
            name: "a".into(),
            ..Default::default()
        }]);
        assert!(validate_spec(&s).is_empty());
    }
}
