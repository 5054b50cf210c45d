//! Reconcile metrics per controller: count, errors by kind, duration. Served on `/metrics`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub controller: String,
    pub error: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ControllerLabel, Counter>,
    failures: Family<ErrorLabel, Counter>,
    duration: Family<ControllerLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lvms_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile pass",
            duration.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            failures,
            duration,
        }
    }
}

impl Metrics {
    pub fn observe(&self, controller: &str, took: Duration, error: Option<&str>) {
        let label = ControllerLabel {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.failures
                .get_or_create(&ErrorLabel {
                    controller: controller.into(),
                    error: e.into(),
                })
                .inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        http_probe::render_metrics(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_durations_per_controller() {
        let m = Metrics::default();
        m.observe("lvmcluster", Duration::from_millis(3), None);
        m.observe("lvmcluster", Duration::from_millis(30), Some("kube"));
        let text = m.render();
        assert!(
            text.contains(r#"lvms_operator_reconciles_total{controller="lvmcluster"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"lvms_operator_reconcile_errors_total{controller="lvmcluster",error="kube"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"lvms_operator_reconcile_duration_seconds_count{controller="lvmcluster"} 2"#
            ),
            "{text}"
        );
    }
}
