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
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvmcluster::{DeviceClass, DeviceSelector, Storage};

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

    #[test]
    fn classes_without_selectors_are_not_compared() {
        let s = spec(vec![DeviceClass {
            name: "a".into(),
            ..Default::default()
        }]);
        assert!(validate_spec(&s).is_empty());
    }
}
